/**
 * The pure parts of freezing a running VM: the receiving launch names its RAM backend with
 * the machine's default id (what the source's RAM blocks are called in the stream), the id
 * carries into clones and the layout signature, and which VM records can be frozen.
 */
import { describe, expect, it } from 'vitest';
import { buildQemuCommand, defaultRamId, type QemuLaunch } from '../../src/backends/qemu/cmdline.js';
import { launchFor } from '../../src/backends/qemu/layout.js';
import type { VmRecord } from '../../src/backends/qemu/state.js';
import { layoutSignature } from '../../src/backends/qemu/template/compat.js';
import { fromVmProblem } from '../../src/backends/qemu/template/fromVm.js';
import { parseVmSpec } from '../../src/schema.js';
import { rejection } from '../fixtures/rejection.js';

const GUID = '6f0c8a58-3c39-4b0e-9a8a-0d1f2c3b4a5e';

function launch(o: Partial<QemuLaunch> = {}): QemuLaunch {
  return {
    name: 'vm1',
    arch: 'x86_64',
    accel: 'tcg',
    cpus: 1,
    memory: 128,
    boot: { kind: 'kernel', kernel: '/c/vmlinux' },
    ports: [],
    isolated: false,
    disks: [],
    paths: { dir: '/s', qmpSocket: '/s/q', qgaSocket: '/s/g', consoleLog: '/s/c', pidFile: '/s/p' },
    memoryFile: { path: '/t/ram', share: true },
    vmgenid: GUID,
    ...o,
  };
}

const valueOf = (args: string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);

function record(o: Partial<VmRecord> = {}): VmRecord {
  const paths = {
    dir: '/s/vms/a',
    record: '/s/vms/a/vm.json',
    pidFile: '/s/vms/a/qemu.pid',
    consoleLog: '/s/vms/a/console.log',
    overlay: '/s/vms/a/root.qcow2',
    qmpSocket: '/s/vms/a/qmp.sock',
    qgaSocket: '/s/vms/a/qga.sock',
  };
  return {
    version: 1,
    name: 'a',
    spec: parseVmSpec({ name: 'a', memory: 128 }),
    fingerprint: 'f',
    createdAt: '2026-01-01T00:00:00Z',
    phase: 'ready',
    desiredState: 'running',
    boot: { kind: 'kernel', kernel: '/c/vmlinux' },
    arch: 'x86_64',
    disks: [],
    paths,
    accel: 'tcg',
    ...o,
  };
}

describe('RAM backend id of a template frozen from a running VM', () => {
  it.each([
    ['x86_64', 'pc', 'pc.ram'],
    ['aarch64', 'virt', 'mach-virt.ram'],
  ] as const)('%s: -machine %s,memory-backend=%s and the backend of that id', (arch, machine, id) => {
    expect(defaultRamId(arch)).toBe(id);
    const { args } = buildQemuCommand(launch({ arch, memoryFile: { path: '/t/ram', share: false, id } }));
    expect(valueOf(args, '-machine')).toEqual([`${machine},memory-backend=${id}`]);
    expect(valueOf(args, '-object')).toEqual([`memory-backend-file,id=${id},size=128M,mem-path=/t/ram,share=off`]);
  });

  it('refuses any other id (it would not match a stream and could clash with a device id)', async () => {
    const e = await rejection(
      (async () => buildQemuCommand(launch({ memoryFile: { path: '/t/ram', share: true, id: 'qga0' } })))(),
    );
    expect(e.code).toBe('VALIDATION');
    expect(e.issues?.[0]?.property).toBe('memoryFile.id');
  });

  it('is part of the device layout, and the default id keeps earlier signatures', () => {
    const plain = layoutSignature(launch());
    expect(layoutSignature(launch({ memoryFile: { path: '/other', share: false } }))).toBe(plain);
    expect(layoutSignature(launch({ memoryFile: { path: '/t/ram', share: true, id: 'pc.ram' } }))).not.toBe(plain);
  });

  it('a clone record with ramId launches with it', () => {
    const r = record({
      template: { name: 't', role: 'clone', ramFile: '/t/ram', memory: 128, vmgenid: GUID, ramId: 'pc.ram' },
    });
    expect(launchFor(r, 'tcg', undefined).memoryFile).toEqual({ path: '/t/ram', share: false, id: 'pc.ram' });
    const { template: _t, ...rest } = r;
    expect(launchFor({ ...rest, template: { ..._t!, ramId: undefined } }, 'tcg', undefined).memoryFile).toEqual({
      path: '/t/ram',
      share: false,
    });
  });
});

describe('fromVmProblem', () => {
  it('accepts a ready VM with a recorded accelerator, with or without a cloud-init seed', () => {
    expect(fromVmProblem(record())).toBeUndefined();
    expect(fromVmProblem(record({ seedImage: '/s/vms/a/seed.iso', seedDir: '/s/vms/a/seed' }))).toBeUndefined();
  });
  it.each([
    [
      'a clone',
      { template: { name: 'b', role: 'clone', ramFile: '/r', memory: 128, vmgenid: GUID } },
      'clone of template b',
    ],
    ['a VM still being created', { phase: 'creating' }, 'being created'],
    ['a record without an accelerator', { accel: undefined }, 'accelerator'],
  ] as [string, Partial<VmRecord>, string][])('refuses %s', (_what, o, says) => {
    expect(fromVmProblem(record(o))).toContain(says);
  });
});
