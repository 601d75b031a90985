import { describe, expect, it } from 'vitest';
import { isLocalVmError } from '../../src/errors.js';
import { INIT_TEMPLATES, renderInitFiles } from '../../src/backends/qemu/image-init.js';
import {
  EARLY_MODULES,
  LATE_MODULES,
  elfInterpreter,
  elfSection,
  findXzStreamOffset,
  hasPvhNote,
  isElf,
  normalizeModuleName,
  orderModules,
  parseBusyboxApplets,
  parseKernelPackage,
  parseLddOutput,
  parseModinfoDepends,
  tinyImageHash,
} from '../../src/backends/qemu/image.js';

// Captured on Debian bookworm: `apt-cache show --no-all-versions linux-image-amd64`.
const APT_CACHE_SHOW = `Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Installed-Size: 13
Maintainer: Debian Kernel Team <debian-kernel@lists.debian.org>
Architecture: amd64
Provides: linux-image-generic, linux-latest-modules-6.1.0-56-amd64, virtualbox-guest-modules, wireguard-modules (= 1.0.0)
Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
Description: Linux for 64-bit PCs (meta-package)
Description-md5: 6a25122b463a5515998ee600e16b3daf
Homepage: https://www.kernel.org/
Built-Using: linux (= 6.1.192-2)
Section: kernel
Priority: optional
Filename: pool/updates/main/l/linux-signed-amd64/linux-image-amd64_6.1.192-2_amd64.deb
Size: 1480
SHA256: 45457bcfc86c87585800b5656bdf2773b063a3bb95486b0e820d51e870491f8d

`;

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

// `depends=` of the modules the image loads, as read from linux-image-6.1.0-56-amd64.
const REAL_DEPENDS = new Map<string, string[]>([
  ['virtio_ring', []],
  ['virtio_pci_modern_dev', []],
  ['virtio_pci_legacy_dev', []],
  ['virtio', ['virtio_ring']],
  ['virtio_pci', ['virtio_ring', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio']],
  ['virtio_console', ['virtio', 'virtio_ring']],
  ['virtio_blk', ['virtio', 'virtio_ring']],
  ['failover', []],
  ['net_failover', ['failover']],
  ['virtio_net', ['virtio_ring', 'virtio', 'net_failover']],
  ['virtio_rng', ['virtio', 'virtio_ring']],
  ['button', []],
  ['evdev', []],
  ['jbd2', []],
  ['mbcache', []],
  ['crc16', []],
  ['crc32c_generic', []],
  ['ext4', ['jbd2', 'mbcache', 'crc16']],
]);

interface FakeSection {
  name: string;
  data: Buffer;
}
interface FakeSegment {
  type: number;
  data: Buffer;
}

/** A minimal 64-bit little-endian ELF with the given sections and program headers. */
function makeElf(sections: FakeSection[], segments: FakeSegment[] = []): Buffer {
  const header = Buffer.alloc(64);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(header);
  const phoff = 64;
  let cursor = phoff + segments.length * 56;
  const blobs: Buffer[] = [];
  const place = (data: Buffer) => {
    const offset = cursor;
    blobs.push(data);
    cursor += data.length;
    return offset;
  };
  const phdrs = Buffer.alloc(segments.length * 56);
  segments.forEach((s, i) => {
    const offset = place(s.data);
    phdrs.writeUInt32LE(s.type, i * 56);
    phdrs.writeBigUInt64LE(BigInt(offset), i * 56 + 8);
    phdrs.writeBigUInt64LE(BigInt(s.data.length), i * 56 + 32);
  });
  const names = ['', ...sections.map((s) => s.name), '.shstrtab'];
  const nameOffsets: number[] = [];
  let strtab = '';
  for (const n of names) {
    nameOffsets.push(strtab.length);
    strtab += n + '\0';
  }
  const sectionOffsets = sections.map((s) => place(s.data));
  const strtabOffset = place(Buffer.from(strtab, 'latin1'));
  const shoff = cursor;
  const shnum = sections.length + 2;
  const shdrs = Buffer.alloc(shnum * 64);
  const writeShdr = (i: number, name: number, offset: number, size: number) => {
    shdrs.writeUInt32LE(name, i * 64);
    shdrs.writeBigUInt64LE(BigInt(offset), i * 64 + 24);
    shdrs.writeBigUInt64LE(BigInt(size), i * 64 + 32);
  };
  sections.forEach((s, i) => writeShdr(i + 1, nameOffsets[i + 1] ?? 0, sectionOffsets[i] ?? 0, s.data.length));
  writeShdr(shnum - 1, nameOffsets[shnum - 1] ?? 0, strtabOffset, strtab.length);
  header.writeBigUInt64LE(BigInt(segments.length ? phoff : 0), 0x20);
  header.writeBigUInt64LE(BigInt(shoff), 0x28);
  header.writeUInt16LE(56, 0x36);
  header.writeUInt16LE(segments.length, 0x38);
  header.writeUInt16LE(64, 0x3a);
  header.writeUInt16LE(shnum, 0x3c);
  header.writeUInt16LE(shnum - 1, 0x3e);
  return Buffer.concat([header, phdrs, ...blobs, shdrs]);
}

function note(name: string, type: number, desc: Buffer): Buffer {
  const pad = (b: Buffer) => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
  const head = Buffer.alloc(12);
  head.writeUInt32LE(name.length + 1, 0);
  head.writeUInt32LE(desc.length, 4);
  head.writeUInt32LE(type, 8);
  return Buffer.concat([head, pad(Buffer.from(name + '\0', 'latin1')), pad(desc)]);
}

describe('parseKernelPackage', () => {
  it('reads the versioned kernel package from the metapackage stanza', () => {
    expect(parseKernelPackage(APT_CACHE_SHOW)).toEqual({ name: 'linux-image-6.1.0-56-amd64', version: '6.1.192-2' });
  });

  it('uses only the first stanza when apt-cache lists several versions', () => {
    const older = APT_CACHE_SHOW.replaceAll('6.1.0-56', '6.1.0-50').replaceAll('6.1.192-2', '6.1.176-1');
    expect(parseKernelPackage(APT_CACHE_SHOW + older)?.version).toBe('6.1.192-2');
    expect(parseKernelPackage(older + APT_CACHE_SHOW)?.name).toBe('linux-image-6.1.0-50-amd64');
  });

  it('skips non-kernel dependencies and alternatives without a pinned version', () => {
    const text =
      'Package: linux-image-amd64\nDepends: initramfs-tools | linux-initramfs-tool, linux-image-6.1.0-9-amd64 (= 6.1.27-1)\n';
    expect(parseKernelPackage(text)).toEqual({ name: 'linux-image-6.1.0-9-amd64', version: '6.1.27-1' });
  });

  it('returns undefined when apt knows no candidate', () => {
    expect(parseKernelPackage('')).toBeUndefined();
    expect(parseKernelPackage('N: Can not select candidate version\n')).toBeUndefined();
    expect(parseKernelPackage('Package: linux-image-amd64\nDepends: linux-image-6.1.0-56-amd64\n')).toBeUndefined();
  });
});

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

describe('findXzStreamOffset', () => {
  const magic = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];

  it('finds the XZ header inside a bzImage-like blob', () => {
    const blob = Buffer.concat([Buffer.alloc(21196, 0x90), Buffer.from(magic), Buffer.alloc(100, 1)]);
    expect(findXzStreamOffset(blob)).toBe(21196);
  });

  it('continues after a given offset and reports -1 when absent', () => {
    const blob = Buffer.concat([Buffer.from(magic), Buffer.alloc(7), Buffer.from(magic)]);
    expect(findXzStreamOffset(blob, 1)).toBe(13);
    expect(findXzStreamOffset(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x01]))).toBe(-1);
  });

  it('respects the view of a Uint8Array into a larger buffer', () => {
    const big = Buffer.concat([Buffer.from(magic), Buffer.alloc(10), Buffer.from(magic)]);
    expect(findXzStreamOffset(big.subarray(3))).toBe(13);
  });
});

describe('ELF helpers', () => {
  it('recognises the ELF magic', () => {
    expect(isElf(Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2]))).toBe(true);
    expect(isElf(Buffer.from('MZ\x90\x00'))).toBe(false);
    expect(isElf(Buffer.alloc(2))).toBe(false);
  });

  it('reads a named section and the modinfo depends field', () => {
    const modinfo = Buffer.from(
      'license=GPL\0depends=virtio_ring,virtio,net-failover\0intree=Y\0name=virtio_net\0',
      'latin1',
    );
    const elf = makeElf([
      { name: '.text', data: Buffer.alloc(32, 0xcc) },
      { name: '.modinfo', data: modinfo },
    ]);
    const section = elfSection(elf, '.modinfo');
    expect(section?.equals(modinfo)).toBe(true);
    expect(parseModinfoDepends(section ?? Buffer.alloc(0))).toEqual(['virtio_ring', 'virtio', 'net_failover']);
    expect(elfSection(elf, '.missing')).toBeUndefined();
    expect(
      elfSection(Buffer.from('not an elf at all, not at all.................................'), '.modinfo'),
    ).toBeUndefined();
  });

  it('treats an empty depends= as no dependencies', () => {
    expect(parseModinfoDepends(Buffer.from('depends=\0name=crc16\0'))).toEqual([]);
    expect(parseModinfoDepends(Buffer.from('name=crc16\0'))).toEqual([]);
  });

  it('finds the program interpreter of a dynamic executable only', () => {
    const dynamic = makeElf([], [{ type: 3, data: Buffer.from('/lib64/ld-linux-x86-64.so.2\0') }]);
    const stat = makeElf([], [{ type: 1, data: Buffer.alloc(16) }]);
    expect(elfInterpreter(dynamic)).toBe('/lib64/ld-linux-x86-64.so.2');
    expect(elfInterpreter(stat)).toBeUndefined();
  });

  it('detects the Xen PVH entry note', () => {
    const entry = Buffer.alloc(4);
    const pvh = makeElf(
      [],
      [{ type: 4, data: Buffer.concat([note('GNU', 3, Buffer.alloc(20)), note('Xen', 18, entry)]) }],
    );
    const other = makeElf(
      [],
      [{ type: 4, data: Buffer.concat([note('GNU', 3, Buffer.alloc(20)), note('Xen', 17, entry)]) }],
    );
    expect(hasPvhNote(pvh)).toBe(true);
    expect(hasPvhNote(other)).toBe(false);
  });
});

describe('normalizeModuleName', () => {
  it('maps file names to module names', () => {
    expect(normalizeModuleName('virtio-rng.ko')).toBe('virtio_rng');
    expect(normalizeModuleName('ext4.ko.xz')).toBe('ext4');
    expect(normalizeModuleName('crc32c_generic')).toBe('crc32c_generic');
  });
});

describe('orderModules', () => {
  const assertDepsFirst = (order: string[], depends: ReadonlyMap<string, readonly string[]>) => {
    for (const [i, m] of order.entries()) {
      for (const d of depends.get(m) ?? []) expect(order.indexOf(d), `${d} before ${m}`).toBeLessThan(i);
    }
  };

  it('puts every module after its dependencies, for the real module set', () => {
    const wanted = [...EARLY_MODULES, ...LATE_MODULES];
    const order = orderModules(wanted, REAL_DEPENDS);
    expect(new Set(order)).toEqual(new Set(wanted));
    expect(order).toHaveLength(wanted.length);
    assertDepsFirst(order, REAL_DEPENDS);
  });

  it('reorders a list given in the wrong order and keeps input order otherwise', () => {
    expect(orderModules(['ext4', 'crc16', 'virtio_console'], REAL_DEPENDS)).toEqual([
      'jbd2',
      'mbcache',
      'crc16',
      'ext4',
      'virtio_ring',
      'virtio',
      'virtio_console',
    ]);
  });

  it('rejects cycles and unknown modules', () => {
    const cyclic = new Map([
      ['a', ['b']],
      ['b', ['a']],
    ]);
    expect(() => orderModules(['a'], cyclic)).toThrow(/cycle/);
    try {
      orderModules(['ext4'], new Map([['ext4', ['jbd2']]]));
      expect.unreachable();
    } catch (error) {
      expect(isLocalVmError(error, 'INTERNAL')).toBe(true);
    }
  });
});

describe('tinyImageHash', () => {
  const base = {
    builderVersion: 1,
    kernelPackage: { name: 'linux-image-6.1.0-56-amd64', version: '6.1.192-2' },
    files: [{ path: '/bin/busybox', sha256: 'a'.repeat(64) }],
    templates: INIT_TEMPLATES,
    append: 'console=ttyS0',
    modules: ['virtio'],
  };

  it('is stable and changes with every input', () => {
    const h = tinyImageHash(base);
    expect(h).toMatch(/^[0-9a-f]{16}$/);
    expect(tinyImageHash({ ...base })).toBe(h);
    const variants = [
      { ...base, builderVersion: 2 },
      { ...base, kernelPackage: { ...base.kernelPackage, version: '6.1.192-3' } },
      { ...base, files: [{ path: '/bin/busybox', sha256: 'b'.repeat(64) }] },
      { ...base, templates: [{ path: 'init', content: '#!/bin/sh\n' }] },
      { ...base, append: 'console=ttyS0 quiet' },
      { ...base, modules: ['virtio', 'ext4'] },
    ];
    const hashes = new Set(variants.map((v) => tinyImageHash(v)));
    expect(hashes.size).toBe(variants.length);
    expect(hashes.has(h)).toBe(false);
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
});
