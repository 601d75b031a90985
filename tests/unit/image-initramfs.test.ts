import { describe, expect, it } from 'vitest';
import { renderInitFiles } from '../../src/backends/qemu/image/init.js';
import { EARLY_MODULES } from '../../src/backends/qemu/image/modules.js';
import { parseBusyboxApplets, parseLddOutput } from '../../src/backends/qemu/image/initramfs.js';

// Captured: `ldd /usr/sbin/qemu-ga` (qemu-guest-agent 7.2, bookworm).
const LDD_QEMU_GA = `\tlinux-vdso.so.1 (0x00007fa6a66f9000)
\tlibudev.so.1 => /lib/x86_64-linux-gnu/libudev.so.1 (0x00007fa6a65c2000)
\tlibnuma.so.1 => /lib/x86_64-linux-gnu/libnuma.so.1 (0x00007fa6a65b5000)
\tliburing.so.2 => /lib/x86_64-linux-gnu/liburing.so.2 (0x00007fa6a65ae000)
\tlibglib-2.0.so.0 => /lib/x86_64-linux-gnu/libglib-2.0.so.0 (0x00007fa6a6476000)
\tlibgmodule-2.0.so.0 => /lib/x86_64-linux-gnu/libgmodule-2.0.so.0 (0x00007fa6a6470000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007fa6a638e000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fa6a61ac000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007fa6a66fb000)
\tlibpcre2-8.so.0 => /lib/x86_64-linux-gnu/libpcre2-8.so.0 (0x00007fa6a6112000)
`;

describe('parseLddOutput', () => {
  it('lists resolved libraries and the loader, skipping vdso', () => {
    const libs = parseLddOutput(LDD_QEMU_GA);
    expect(libs).toHaveLength(9);
    expect(libs).toContain('/lib64/ld-linux-x86-64.so.2');
    expect(libs).toContain('/lib/x86_64-linux-gnu/libglib-2.0.so.0');
    expect(libs.some((l) => l.includes('vdso'))).toBe(false);
  });

  it('returns nothing for a static binary', () => {
    expect(parseLddOutput('\tnot a dynamic executable\n')).toEqual([]);
  });
});

describe('parseBusyboxApplets', () => {
  it('keeps relative applet paths and drops junk', () => {
    expect(parseBusyboxApplets('usr/bin/[\nsbin/acpid\nbin/sh\n\n../etc/passwd\n/sbin/init\n')).toEqual([
      'usr/bin/[',
      'sbin/acpid',
      'bin/sh',
      'sbin/init',
    ]);
  });
});

describe('renderInitFiles', () => {
  it('fills in the module lists and leaves no placeholder', () => {
    const files = renderInitFiles(['virtio_ring', 'virtio'], ['ext4']);
    const init = files.find((f) => f.path === 'init');
    expect(init?.content).toContain('for m in virtio_ring virtio; do');
    expect(init?.content).toContain('for m in ext4; do');
    for (const f of files) expect(f.content).not.toMatch(/@[A-Z_]+@/);
  });

  it('ships a shutdown wrapper for qemu-ga and a power-button handler', () => {
    const paths = renderInitFiles([], []).map((f) => f.path);
    expect(paths).toEqual(
      expect.arrayContaining(['sbin/shutdown', 'etc/acpi/PWRF/00000080', 'etc/inittab', 'etc/passwd']),
    );
  });

  // A stop right after readiness presses the power button once; it must not be lost.
  it('has the power button handled before the agent starts', () => {
    expect(EARLY_MODULES).toEqual(expect.arrayContaining(['button', 'evdev']));
    const init = renderInitFiles(['virtio', 'button', 'evdev'], ['ext4']).find((f) => f.path === 'init')?.content ?? '';
    const lines = init.split('\n');
    const acpid = lines.findIndex((l) => /^acpid\b/.test(l));
    const background = lines.indexOf('(');
    const agent = lines.indexOf('exec /sbin/init');
    expect(acpid, 'acpid started in the foreground part of /init').toBeGreaterThan(-1);
    expect(acpid).toBeGreaterThan(lines.findIndex((l) => l.includes('for m in virtio button evdev;')));
    expect(acpid).toBeLessThan(background);
    expect(acpid).toBeLessThan(agent);
  });
});
