/**
 * Standalone disks without binaries: the attach rule, claim checks, the QMP plug commands,
 * the launch argv of an attached disk, and bad input refused before anything is written.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildQemuCommand } from '../../src/backends/qemu/cmdline.js';
import { launchFor, type LaunchInputs } from '../../src/backends/qemu/layout.js';
import { qemuImg } from '../../src/backends/qemu/qemuImg.js';
import { vmPaths, type VmRecord } from '../../src/backends/qemu/state.js';
import {
  attachRefusal,
  claimHolds,
  volumePlugCommands,
  withVolume,
  type DiskAttachment,
} from '../../src/backends/qemu/volumeStore.js';
import { classifyDisks } from '../../src/operations/doctor/disks.js';
import { loadConfig } from '../../src/config.js';
import { defaultContext } from '../../src/context.js';
import {
  attachDisk,
  createDisk,
  deleteDisk,
  detachDisk,
  diskInfo,
  listStandaloneDisks,
  resizeDisk,
} from '../../src/operations/standaloneDisk.js';
import { createRecordingRunner } from '../../src/runner.js';
import { parseVmSpec } from '../../src/schema.js';
import { rejection } from '../fixtures/rejection.js';
import { testTempDir } from '../fixtures/tempDir.js';

const claim = (vm: string, readonly: boolean): DiskAttachment => ({
  vm,
  readonly,
  instance: 't0',
  attachedAt: 't0',
});

describe('the attach rule', () => {
  it('a read-write disk has one VM; read-only attachments share with each other only', () => {
    expect(attachRefusal([], 'a', false)).toBeUndefined();
    expect(attachRefusal([claim('a', false)], 'b', false)).toMatch(/read-write to VM a/);
    expect(attachRefusal([claim('a', false)], 'b', true)).toMatch(/read-write to VM a/);
    expect(attachRefusal([claim('a', true)], 'b', true)).toBeUndefined();
    expect(attachRefusal([claim('a', true), claim('c', true)], 'b', false)).toMatch(/read-only to a, c/);
    // The VM's own claim is not another VM's.
    expect(attachRefusal([claim('a', false)], 'a', false)).toBeUndefined();
  });

  it('a claim holds only for the same VM instance listing the disk', () => {
    const record = { createdAt: 't0', attachedDisks: [{ disk: 'd', path: '/x', readonly: false }] } as VmRecord;
    expect(claimHolds(claim('a', false), record, 'd')).toBe(true);
    expect(claimHolds(claim('a', false), record, 'other')).toBe(false);
    expect(claimHolds(claim('a', false), { ...record, createdAt: 't1' }, 'd')).toBe(false);
    expect(claimHolds(claim('a', false), { ...record, attachedDisks: undefined }, 'd')).toBe(false);
    expect(claimHolds(claim('a', false), undefined, 'd')).toBe(false);
  });
});

describe('plugging and launching', () => {
  it('hot-plugs through blockdev-add (read-only when asked) and a virtio-blk device with an id', () => {
    expect(volumePlugCommands('data', '/h/disks/data/disk.qcow2', true)).toEqual([
      {
        command: 'blockdev-add',
        args: {
          driver: 'qcow2',
          'node-name': 'vol-data',
          'read-only': true,
          file: { driver: 'file', filename: '/h/disks/data/disk.qcow2', 'read-only': true },
        },
      },
      { command: 'device_add', args: { driver: 'virtio-blk-pci', drive: 'vol-data', id: 'dev-vol-data' } },
    ]);
  });

  it('a VM record lists its attached disks and every launch adds them after its own', () => {
    const paths = vmPaths('/s', '/run', 'vol-a');
    const base = { attachedDisks: [] } as unknown as VmRecord;
    const rw = withVolume(base, 'data', '/s/disks/data/disk.qcow2', false);
    const both = withVolume(rw, 'ro', '/s/disks/ro/disk.qcow2', true);
    expect(withVolume(both, 'data', '', undefined).attachedDisks).toEqual([
      { disk: 'ro', path: '/s/disks/ro/disk.qcow2', readonly: true },
    ]);
    const inputs: LaunchInputs = {
      name: 'vol-a',
      spec: parseVmSpec({ name: 'vol-a', image: 'tiny' }),
      arch: 'x86_64',
      boot: { kind: 'kernel', kernel: '/img/vmlinux' },
      disks: [{ id: 'disk-own', path: '/s/vms/vol-a/disk-own.qcow2', format: 'qcow2' }],
      attachedDisks: both.attachedDisks,
      paths,
    };
    const args = buildQemuCommand(launchFor(inputs, 'tcg', undefined)).args;
    const drives = args.filter((_, i) => args[i - 1] === '-drive');
    expect(drives).toEqual([
      'file=/s/vms/vol-a/disk-own.qcow2,format=qcow2,if=none,id=disk-own',
      'file=/s/disks/data/disk.qcow2,format=qcow2,if=none,id=vol-data',
      'file=/s/disks/ro/disk.qcow2,format=qcow2,if=none,id=vol-ro,readonly=on',
    ]);
    expect(args).toContain('virtio-blk-pci,drive=vol-ro');
  });

  it('resize is a grow through qemu-img resize with an explicit format', () => {
    expect(qemuImg.resize({ path: '/d/disk.qcow2', size: 1048576, format: 'qcow2' }).args).toEqual([
      'resize',
      '-f',
      'qcow2',
      '/d/disk.qcow2',
      '1048576',
    ]);
  });
});

describe('bad input writes nothing', () => {
  function home() {
    const dir = testTempDir('localvm-vol-');
    const runner = createRecordingRunner();
    const config = loadConfig(
      { HOME: dir },
      { stateDir: join(dir, 'state'), cacheDir: join(dir, 'cache'), runDir: join(dir, 'run') },
    );
    return { dir, runner, ctx: defaultContext({ config, runner }) };
  }

  it('names with path characters, bad sizes and unknown disks or VMs', async () => {
    const { dir, runner, ctx } = home();
    for (const name of ['../x', 'a/b', '.', '', 'A', 'x'.repeat(40)]) {
      expect((await rejection(createDisk(name, '1M', {}, ctx))).code).toBe('VALIDATION');
      expect((await rejection(deleteDisk(name, ctx))).code).toBe('VALIDATION');
      expect((await rejection(attachDisk('vm-a', name, {}, ctx))).code).toBe('VALIDATION');
    }
    expect((await rejection(createDisk('ok', '-1', {}, ctx))).code).toBe('VALIDATION');
    expect((await rejection(createDisk('ok', '1M', { from: '' }, ctx))).code).toBe('VALIDATION');
    expect((await rejection(attachDisk('../vm', 'ok', {}, ctx))).code).toBe('VALIDATION');
    expect((await rejection(resizeDisk('nope', '1G', ctx))).code).toBe('NOT_FOUND');
    expect((await rejection(diskInfo('nope', ctx))).code).toBe('NOT_FOUND');
    expect((await rejection(attachDisk('vm-a', 'nope', {}, ctx))).code).toBe('NOT_FOUND');
    expect((await rejection(detachDisk('vm-a', 'nope', {}, ctx))).code).toBe('NOT_FOUND');
    expect(await deleteDisk('nope', ctx)).toEqual({ deleted: false });
    expect(await listStandaloneDisks(ctx)).toEqual([]);
    expect(runner.commands).toEqual([]);
    expect(existsSync(join(dir, 'state', 'disks'))).toBe(false);
    // Only the lock directory may have been made (locks are removed on release).
    expect(readdirSync(join(dir, 'state')).filter((e) => e !== 'locks')).toEqual([]);
  });
});

describe('doctor on standalone disks', () => {
  const disk = (attachments: DiskAttachment[]) => ({
    name: 'd',
    dir: '/h/disks/d',
    record: {
      version: 1,
      name: 'd',
      sizeBytes: 1,
      format: 'qcow2' as const,
      createdAt: 't',
      path: '/h/disks/d/disk.qcow2',
      attachments,
    },
  });
  const vm = (name: string, listed: boolean, createdAt = 't0') => ({
    name,
    record: {
      createdAt,
      attachedDisks: listed ? [{ disk: 'd', path: '/h/disks/d/disk.qcow2', readonly: false }] : [],
    } as unknown as VmRecord,
  });
  const codes = (facts: Parameters<typeof classifyDisks>[0]) =>
    classifyDisks(facts).map((f) => [f.code, f.vm ?? f.path, f.fixable]);

  it('agreeing records are coherent; each mismatch is its own finding', () => {
    expect(codes({ disks: [disk([claim('a', false)])], vms: [vm('a', true)] })).toEqual([]);
    // A crash between the two writes: the claim stays, the VM does not list the disk (or is another instance).
    expect(codes({ disks: [disk([claim('a', false)])], vms: [vm('a', false)] })).toEqual([
      ['DISK_CLAIM_STALE', 'a', true],
    ]);
    expect(codes({ disks: [disk([claim('a', false)])], vms: [] })).toEqual([['DISK_CLAIM_STALE', 'a', true]]);
    expect(codes({ disks: [disk([])], vms: [vm('a', true)] })).toEqual([['DISK_ATTACHMENT_UNRECORDED', 'a', true]]);
    // Recording it would make a second writer: left to the user.
    expect(codes({ disks: [disk([claim('b', false)])], vms: [vm('a', true), vm('b', true)] })).toEqual([
      ['DISK_ATTACHMENT_UNRECORDED', 'a', false],
    ]);
    expect(codes({ disks: [], vms: [vm('a', true)] })).toEqual([['DISK_MISSING', 'a', true]]);
    expect(codes({ disks: [{ name: 'h', dir: '/h/disks/h' }], vms: [] })).toEqual([
      ['DISK_HALF_CREATED', '/h/disks/h', true],
    ]);
  });
});
