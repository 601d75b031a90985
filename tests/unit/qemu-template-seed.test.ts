/**
 * Templates of VMs with user-data: what the cloud-init wait reports, and that the seed is
 * part of the device layout by what QEMU shows the guest (not by where the file lives), so a
 * clone attaching the template's seed matches the machine that was frozen.
 */
import { describe, expect, it } from 'vitest';
import type { QemuLaunch } from '../../src/backends/qemu/cmdline.js';
import { layoutSignature } from '../../src/backends/qemu/template/compat.js';
import { cloudInitOutcome } from '../../src/backends/qemu/template/seed.js';

function launch(o: Partial<QemuLaunch> = {}): QemuLaunch {
  return {
    name: 'vm1',
    arch: 'x86_64',
    accel: 'tcg',
    cpus: 1,
    memory: 128,
    boot: { kind: 'disk', image: '/s/root.qcow2', format: 'qcow2' },
    ports: [],
    isolated: false,
    disks: [],
    paths: { dir: '/s', qmpSocket: '/s/q', qgaSocket: '/s/g', consoleLog: '/s/c', pidFile: '/s/p' },
    memoryFile: { path: '/t/ram', share: true },
    vmgenid: '6f0c8a58-3c39-4b0e-9a8a-0d1f2c3b4a5e',
    ...o,
  };
}

describe('cloudInitOutcome', () => {
  it.each([
    ['a guest without cloud-init (tiny)', 0, 'absent\n', { ok: true, ran: false }],
    ['cloud-init done', 0, 'status: done\nboot_status_code: enabled-by-generator\n', { ok: true, ran: true }],
    [
      'done with recoverable errors (exit 2, cloud-init >= 23.4)',
      2,
      'status: done\nrecoverable_errors: ...\n',
      { ok: true, ran: true },
    ],
    ['failed', 1, 'status: error\nerrors:\n  - runcmd failed\n', { ok: false, ran: true }],
    ['the wait itself could not run', 127, '', { ok: false, ran: true }],
  ])('%s', (_what, code, stdout, want) => {
    expect(cloudInitOutcome(code, stdout)).toMatchObject(want);
  });

  it('keeps the last lines of the status for the error', () => {
    expect(cloudInitOutcome(1, 'status: error\nerrors:\n  - runcmd failed\n').detail).toBe(
      'status: error; errors:;   - runcmd failed',
    );
  });
});

describe('layoutSignature: the seed', () => {
  const build = launch({ seedImage: '/t/build/vms/t/seed.iso', seedDir: '/t/build/vms/t/seed' });
  it('an ISO seed at another path, without the directory beside it, is the same layout', () => {
    expect(layoutSignature(launch({ seedImage: '/t/seed.iso' }))).toBe(layoutSignature(build));
  });
  it('a vvfat seed directory anywhere is one layout, different from an ISO and from no seed', () => {
    const dir = layoutSignature(launch({ seedDir: '/a/seed' }));
    expect(layoutSignature(launch({ seedDir: '/b/seed' }))).toBe(dir);
    expect(dir).not.toBe(layoutSignature(build));
    expect(layoutSignature(launch())).not.toBe(dir);
    expect(layoutSignature(launch())).not.toBe(layoutSignature(build));
  });
});
