/**
 * Extra disks without QEMU: the hot-plug command shapes, query-block parsing on replies
 * captured from QEMU 7.2, the disk methods against a scripted QMP connection and runner
 * (including the rollback of a failed hot-plug), and validation at the operations boundary.
 */
import { describe, expect, it } from 'vitest';
import type { DiskInfo } from '../../src/backend.js';
import {
  attachedDisk,
  createDiskOps,
  hotplugCommands,
  isDeviceDeleted,
  recordedDisks,
  withDisks,
  type DiskDeps,
} from '../../src/backends/qemu/disks.js';
import type { QmpClient, QmpEvent } from '../../src/backends/qemu/qmp.js';
import { vmPaths, type VmRecord } from '../../src/backends/qemu/state.js';
import { LocalVmError } from '../../src/errors.js';
import { addDisk, listDisks, parseDisk, parseDiskName, removeDisk } from '../../src/operations/disk.js';
import type { Command, CommandRunner, RunResult } from '../../src/runner.js';
import { parseVmSpec, specFingerprint } from '../../src/schema.js';
import { FakeBackend, fakeContext } from '../fixtures/fakeBackend.js';
import { codeOf } from '../fixtures/rejection.js';

const DIR = '/s/vms/disk-a';

// `query-block` captured from QEMU 7.2: `data` attached at launch (-drive ... id=disk-data
// + an anonymous virtio-blk-pci), the vmstate drive (no device), `hp` hot-plugged.
const QUERY_BLOCK = [
  {
    device: 'disk-data',
    qdev: '/machine/peripheral-anon/device[4]/virtio-backend',
    inserted: { 'node-name': '#block177', file: `${DIR}/disk-data.qcow2`, drv: 'qcow2' },
    locked: false,
    removable: false,
    type: 'unknown',
  },
  {
    device: 'vmstate',
    inserted: { 'node-name': '#block386', file: `${DIR}/state.qcow2`, drv: 'qcow2' },
    type: 'unknown',
  },
  {
    device: '',
    qdev: '/machine/peripheral/dev-disk-hp/virtio-backend',
    inserted: { 'node-name': 'disk-hp', file: `${DIR}/disk-hp.qcow2`, drv: 'qcow2' },
    type: 'unknown',
  },
];

describe('pure parts', () => {
  it('builds blockdev-add + device_add with the ids diskLayout uses', () => {
    expect(hotplugCommands('data', `${DIR}/disk-data.qcow2`)).toEqual([
      {
        command: 'blockdev-add',
        args: {
          driver: 'qcow2',
          'node-name': 'disk-data',
          file: { driver: 'file', filename: `${DIR}/disk-data.qcow2` },
        },
      },
      { command: 'device_add', args: { driver: 'virtio-blk-pci', drive: 'disk-data', id: 'dev-disk-data' } },
    ]);
  });

  it('finds the PCI device of a disk whether attached at launch or hot-plugged', () => {
    expect(attachedDisk(QUERY_BLOCK, `${DIR}/disk-data.qcow2`)).toEqual({
      qomPath: '/machine/peripheral-anon/device[4]',
      backend: 'disk-data',
      nodeName: '#block177',
    });
    expect(attachedDisk(QUERY_BLOCK, `${DIR}/disk-hp.qcow2`)).toEqual({
      qomPath: '/machine/peripheral/dev-disk-hp',
      backend: '',
      nodeName: 'disk-hp',
    });
    // A drive without a guest device is not "attached".
    expect(attachedDisk(QUERY_BLOCK, `${DIR}/state.qcow2`)).toBeUndefined();
    expect(attachedDisk(QUERY_BLOCK, `${DIR}/disk-none.qcow2`)).toBeUndefined();
    expect(() => attachedDisk({ not: 'a list' }, 'x')).toThrow(LocalVmError);
  });

  it('matches DEVICE_DELETED of the PCI device, not of its inner virtio-backend', () => {
    const ev = (data: unknown): QmpEvent => ({ event: 'DEVICE_DELETED', data });
    expect(
      isDeviceDeleted(
        ev({ path: '/machine/peripheral-anon/device[4]/virtio-backend' }),
        '/machine/peripheral-anon/device[4]',
      ),
    ).toBe(false);
    expect(
      isDeviceDeleted(ev({ path: '/machine/peripheral-anon/device[4]' }), '/machine/peripheral-anon/device[4]'),
    ).toBe(true);
    expect(
      isDeviceDeleted(
        ev({ device: 'dev-disk-hp', path: '/machine/peripheral/dev-disk-hp' }),
        '/machine/peripheral/dev-disk-hp',
      ),
    ).toBe(true);
    expect(isDeviceDeleted({ event: 'RESET', data: { path: '/x' } }, '/x')).toBe(false);
  });

  it('rewrites record.disks, spec.disks and the fingerprint together', () => {
    const base = record();
    const next = withDisks(base, [...base.spec.disks, { name: 'extra', size: 1024 }], DIR);
    expect(next.spec.disks.map((d) => d.name)).toEqual(['data', 'extra']);
    expect(next.disks).toEqual([
      { id: 'disk-data', path: `${DIR}/disk-data.qcow2`, format: 'qcow2' },
      { id: 'disk-extra', path: `${DIR}/disk-extra.qcow2`, format: 'qcow2' },
    ]);
    expect(next.fingerprint).toBe(specFingerprint(next.spec));
    expect(next.fingerprint).not.toBe(base.fingerprint);
    // Re-declaring the VM with the new disk list gives the same fingerprint: adoption works.
    const redeclared = parseVmSpec({
      name: 'disk-a',
      image: 'tiny',
      disks: [
        { name: 'data', size: '1G' },
        { name: 'extra', size: 1024 },
      ],
    });
    expect(specFingerprint(redeclared)).toBe(next.fingerprint);
    expect(recordedDisks(next)).toEqual([
      { name: 'data', path: `${DIR}/disk-data.qcow2`, sizeBytes: 1024 ** 3 },
      { name: 'extra', path: `${DIR}/disk-extra.qcow2`, sizeBytes: 1024 },
    ]);
  });
});

// ---------------------------------------------------------------------------------------
// The disk methods against scripted QMP replies and a scripted runner
// ---------------------------------------------------------------------------------------

const spec = parseVmSpec({ name: 'disk-a', image: 'tiny', disks: [{ name: 'data', size: '1G' }] });
const paths = vmPaths('/s', '/run', 'disk-a');

function record(over: Partial<VmRecord> = {}): VmRecord {
  return {
    version: 1,
    name: 'disk-a',
    spec,
    fingerprint: specFingerprint(spec),
    createdAt: '2026-01-01T00:00:00.000Z',
    phase: 'ready',
    desiredState: 'running',
    boot: { kind: 'kernel', kernel: '/k' },
    arch: 'x86_64',
    disks: [{ id: 'disk-data', path: `${DIR}/disk-data.qcow2`, format: 'qcow2' }],
    paths,
    stateDisk: `${DIR}/state.qcow2`,
    ...over,
  };
}

function runResult(cmd: Command, exitCode = 0, stdout = '', stderr = ''): RunResult {
  return { file: cmd.file, args: cmd.args, exitCode, stdout, stderr, timedOut: false, durationMs: 1 };
}

/** Deps whose QMP connection answers from `reply`, whose runner answers from `run`; all recorded. */
function harness(o: {
  running?: boolean;
  rec?: VmRecord;
  reply?: (command: string, args?: Record<string, unknown>) => unknown;
  events?: QmpEvent[];
  run?: (cmd: Command) => RunResult;
}) {
  const sent: { command: string; args?: Record<string, unknown> }[] = [];
  const ran: string[] = [];
  const events: string[] = [];
  const written: VmRecord[] = [];
  const removed: string[] = [];
  let current = o.rec ?? record();
  const pending = [...(o.events ?? [])];
  const qmp = {
    async execute(command: string, args?: Record<string, unknown>) {
      sent.push(args === undefined ? { command } : { command, args });
      const r = o.reply?.(command, args);
      if (r instanceof Error) throw r;
      if (r !== undefined) return r;
      if (command === 'query-named-block-nodes') return [];
      if (command === 'query-block') return [];
      if (command === 'query-status') return { status: 'running', running: true };
      return {};
    },
    async waitEvent(name: string, _timeoutMs: number, match?: (e: QmpEvent) => boolean) {
      const i = pending.findIndex((e) => e.event === name && (!match || match(e)));
      if (i === -1) throw new LocalVmError('TIMEOUT', `no QMP event ${name}`);
      return pending.splice(i, 1)[0];
    },
  } as unknown as QmpClient;
  const runner: CommandRunner = {
    async run(cmd: Command): Promise<RunResult> {
      ran.push([cmd.file, ...cmd.args].join(' '));
      return o.run
        ? o.run(cmd)
        : runResult(cmd, 0, JSON.stringify({ filename: cmd.args.at(-1), format: 'qcow2', 'virtual-size': 1 }));
    },
  };
  const deps: DiskDeps = {
    runner,
    async lifecycle(_name, what, fn) {
      events.push(`lock ${what}`);
      try {
        return await fn();
      } finally {
        events.push('unlock');
      }
    },
    async load() {
      return { record: current, running: o.running ?? true };
    },
    async qmpSession(_name, _paths, _timeout, fn) {
      events.push('qmp');
      return fn(qmp);
    },
    async writeRecord(r) {
      written.push(r);
      current = r;
    },
    async removeFile(path) {
      removed.push(path);
    },
  };
  return { ops: createDiskOps(deps), sent, ran, events, written, removed, current: () => current };
}

describe('createDiskOps: add', () => {
  it('running: qemu-img create, record, then blockdev-add + device_add under one QMP session', async () => {
    const h = harness({});
    const info = await h.ops.diskAdd('disk-a', { name: 'extra', size: 64 << 20 });
    expect(info).toEqual({ name: 'extra', sizeBytes: 64 << 20, path: `${DIR}/disk-extra.qcow2`, attached: true });
    expect(h.ran).toEqual([`qemu-img create -f qcow2 ${DIR}/disk-extra.qcow2 ${64 << 20}`]);
    expect(h.sent).toEqual([
      { command: 'query-named-block-nodes' },
      {
        command: 'blockdev-add',
        args: {
          driver: 'qcow2',
          'node-name': 'disk-extra',
          file: { driver: 'file', filename: `${DIR}/disk-extra.qcow2` },
        },
      },
      { command: 'device_add', args: { driver: 'virtio-blk-pci', drive: 'disk-extra', id: 'dev-disk-extra' } },
    ]);
    expect(h.events).toEqual(['lock disk add', 'qmp', 'unlock']);
    expect(h.written).toHaveLength(1);
    expect(h.current().disks.map((d) => d.id)).toEqual(['disk-data', 'disk-extra']);
    expect(h.current().spec.disks).toEqual([
      { name: 'data', size: 1024 ** 3 },
      { name: 'extra', size: 64 << 20 },
    ]);
    expect(h.current().fingerprint).toBe(specFingerprint(h.current().spec));
    expect(h.removed).toEqual([]);
  });

  it('stopped: only the file and the record, no QMP', async () => {
    const h = harness({ running: false });
    const info = await h.ops.diskAdd('disk-a', { name: 'extra', size: 4096 });
    expect(info.attached).toBe(false);
    expect(h.sent).toEqual([]);
    expect(h.ran.filter((c) => c.includes(' create '))).toEqual([
      `qemu-img create -f qcow2 ${DIR}/disk-extra.qcow2 4096`,
    ]);
    expect(h.current().disks.map((d) => d.id)).toEqual(['disk-data', 'disk-extra']);
  });

  it('a failed device_add is rolled back: blockdev-del, the old record, the file removed', async () => {
    const h = harness({
      reply: (cmd) =>
        cmd === 'device_add'
          ? new LocalVmError('COMMAND_FAILED', 'QMP device_add failed: GenericError: Bus pci.0 is full')
          : undefined,
    });
    const before = h.current();
    expect(await codeOf(h.ops.diskAdd('disk-a', { name: 'extra', size: 4096 }))).toBe('COMMAND_FAILED');
    expect(h.sent.map((s) => s.command)).toEqual([
      'query-named-block-nodes',
      'blockdev-add',
      'device_add',
      'blockdev-del',
    ]);
    expect(h.sent.at(-1)?.args).toEqual({ 'node-name': 'disk-extra' });
    expect(h.current()).toEqual(before);
    expect(h.removed).toEqual([`${DIR}/disk-extra.qcow2`]);
  });

  it('a failed blockdev-add needs no blockdev-del; a failed qemu-img leaves the record untouched', async () => {
    const h = harness({
      reply: (cmd) => (cmd === 'blockdev-add' ? new LocalVmError('COMMAND_FAILED', 'no') : undefined),
    });
    const before = h.current();
    expect(await codeOf(h.ops.diskAdd('disk-a', { name: 'extra', size: 4096 }))).toBe('COMMAND_FAILED');
    expect(h.sent.map((s) => s.command)).toEqual(['query-named-block-nodes', 'blockdev-add']);
    expect(h.current()).toEqual(before);

    const img = harness({ run: (cmd) => runResult(cmd, 1, '', 'qemu-img: image size too large') });
    const original = img.current();
    expect(await codeOf(img.ops.diskAdd('disk-a', { name: 'extra', size: 4096 }))).toBe('COMMAND_FAILED');
    expect(img.sent.map((s) => s.command)).toEqual(['query-named-block-nodes']);
    expect(img.current()).toBe(original);
    expect(img.written.every((w) => w === original)).toBe(true);
  });

  it('a taken name is ALREADY_EXISTS before anything runs', async () => {
    const h = harness({});
    expect(await codeOf(h.ops.diskAdd('disk-a', { name: 'data', size: 4096 }))).toBe('ALREADY_EXISTS');
    expect(h.sent).toEqual([]);
    expect(h.ran).toEqual([]);
    expect(h.written).toEqual([]);
  });

  it('refuses (CONFLICT) while the VM has snapshots, running or stopped, and writes nothing', async () => {
    const nodes = [
      {
        drv: 'qcow2',
        file: `${DIR}/state.qcow2`,
        image: { snapshots: [{ name: 'clean', 'vm-state-size': 9, 'date-sec': 1 }] },
      },
    ];
    const h = harness({ reply: (cmd) => (cmd === 'query-named-block-nodes' ? nodes : undefined) });
    expect(await codeOf(h.ops.diskAdd('disk-a', { name: 'extra', size: 4096 }))).toBe('CONFLICT');
    expect(h.ran).toEqual([]);
    expect(h.written).toEqual([]);
    expect(h.removed).toEqual([]);
    expect(await codeOf(h.ops.diskRemove('disk-a', 'data'))).toBe('CONFLICT');
    expect(h.sent.map((s) => s.command)).toEqual(['query-named-block-nodes', 'query-named-block-nodes']);

    const info = JSON.stringify({
      filename: 'x',
      format: 'qcow2',
      'virtual-size': 1,
      snapshots: [{ id: '1', name: 'clean', 'vm-state-size': 9, 'date-sec': 1 }],
    });
    const stopped = harness({ running: false, run: (cmd) => runResult(cmd, 0, info) });
    expect(await codeOf(stopped.ops.diskAdd('disk-a', { name: 'extra', size: 4096 }))).toBe('CONFLICT');
    expect(await codeOf(stopped.ops.diskRemove('disk-a', 'data'))).toBe('CONFLICT');
    expect(stopped.ran.every((c) => c.startsWith('qemu-img info'))).toBe(true);
    expect(stopped.written).toEqual([]);
    expect(stopped.removed).toEqual([]);
  });

  it('re-validates the disk in the backend (names reach paths and QMP)', async () => {
    const h = harness({});
    for (const bad of [
      { name: '../x', size: 1 },
      { name: 'a', size: 0 },
      { name: 'A', size: 1 },
    ]) {
      expect(await codeOf(h.ops.diskAdd('disk-a', bad))).toBe('VALIDATION');
    }
    expect(await codeOf(h.ops.diskRemove('disk-a', '../x'))).toBe('VALIDATION');
    expect(h.events).toEqual([]);
  });
});

describe('createDiskOps: remove and list', () => {
  const hpRecord = () => withDisks(record(), [...spec.disks, { name: 'hp', size: 4096 }], DIR);

  it('running, hot-plugged disk: device_del, DEVICE_DELETED, blockdev-del, then record and file', async () => {
    const order: string[] = [];
    const h = harness({
      rec: hpRecord(),
      reply: (cmd) => {
        order.push(cmd);
        if (cmd === 'query-block') return QUERY_BLOCK;
        if (cmd === 'query-named-block-nodes')
          return [{ 'node-name': 'disk-hp', drv: 'qcow2', file: `${DIR}/disk-hp.qcow2` }];
        return undefined;
      },
      events: [
        { event: 'DEVICE_DELETED', data: { path: '/machine/peripheral/dev-disk-hp/virtio-backend' } },
        { event: 'DEVICE_DELETED', data: { device: 'dev-disk-hp', path: '/machine/peripheral/dev-disk-hp' } },
      ],
    });
    expect(await h.ops.diskRemove('disk-a', 'hp')).toEqual({ removed: true });
    expect(h.sent.map((s) => s.command)).toEqual([
      'query-named-block-nodes',
      'query-block',
      'query-status',
      'device_del',
      'query-named-block-nodes',
      'blockdev-del',
    ]);
    expect(h.sent.find((s) => s.command === 'device_del')?.args).toEqual({ id: '/machine/peripheral/dev-disk-hp' });
    expect(h.sent.at(-1)?.args).toEqual({ 'node-name': 'disk-hp' });
    expect(h.current().disks.map((d) => d.id)).toEqual(['disk-data']);
    expect(h.current().spec.disks.map((d) => d.name)).toEqual(['data']);
    expect(h.current().fingerprint).toBe(specFingerprint(spec));
    expect(h.removed).toEqual([`${DIR}/disk-hp.qcow2`]);
  });

  it('running, disk attached at launch: device_del by QOM path; its -drive goes with the device', async () => {
    const h = harness({
      reply: (cmd) => (cmd === 'query-block' ? QUERY_BLOCK : undefined),
      events: [{ event: 'DEVICE_DELETED', data: { path: '/machine/peripheral-anon/device[4]' } }],
    });
    expect(await h.ops.diskRemove('disk-a', 'data')).toEqual({ removed: true });
    expect(h.sent.find((s) => s.command === 'device_del')?.args).toEqual({ id: '/machine/peripheral-anon/device[4]' });
    expect(h.sent.map((s) => s.command)).not.toContain('blockdev-del');
    expect(h.current().disks).toEqual([]);
    expect(h.removed).toEqual([`${DIR}/disk-data.qcow2`]);
  });

  it('a guest that never releases the device is TIMEOUT, and the record and file stay', async () => {
    const h = harness({ reply: (cmd) => (cmd === 'query-block' ? QUERY_BLOCK : undefined), events: [] });
    const before = h.current();
    expect(await codeOf(h.ops.diskRemove('disk-a', 'data'))).toBe('TIMEOUT');
    expect(h.current()).toBe(before);
    expect(h.written).toEqual([]);
    expect(h.removed).toEqual([]);
  });

  it('a retry whose device the guest released after query-block (DeviceNotFound) is removed, not an error', async () => {
    // A detach cut short by its deadline left the unplug running; the guest finished it
    // between this retry's query-block and its device_del (seen in CI on a slow machine).
    const h = harness({
      rec: hpRecord(),
      reply: (cmd) => {
        if (cmd === 'query-block') return QUERY_BLOCK;
        if (cmd === 'query-named-block-nodes')
          return [{ 'node-name': 'disk-hp', drv: 'qcow2', file: `${DIR}/disk-hp.qcow2` }];
        if (cmd === 'device_del')
          return new LocalVmError(
            'COMMAND_FAILED',
            "QMP device_del failed: DeviceNotFound: Device '/machine/peripheral/dev-disk-hp' not found",
            { details: { protocol: 'QMP', command: 'device_del', class: 'DeviceNotFound' } },
          );
        return undefined;
      },
      events: [],
    });
    expect(await h.ops.diskRemove('disk-a', 'hp')).toEqual({ removed: true });
    expect(h.sent.at(-1)).toEqual({ command: 'blockdev-del', args: { 'node-name': 'disk-hp' } });
    expect(h.current().spec.disks.map((d) => d.name)).toEqual(['data']);
    expect(h.removed).toEqual([`${DIR}/disk-hp.qcow2`]);
  });

  it('a paused guest is CONFLICT without device_del', async () => {
    const h = harness({
      reply: (cmd) =>
        cmd === 'query-block' ? QUERY_BLOCK : cmd === 'query-status' ? { status: 'paused', running: false } : undefined,
    });
    expect(await codeOf(h.ops.diskRemove('disk-a', 'data'))).toBe('CONFLICT');
    expect(h.sent.map((s) => s.command)).not.toContain('device_del');
  });

  it('a disk the VM does not have is removed: false; stopped removes without QMP', async () => {
    const h = harness({});
    expect(await h.ops.diskRemove('disk-a', 'nope')).toEqual({ removed: false });
    expect(h.sent).toEqual([]);
    const stopped = harness({ running: false });
    expect(await stopped.ops.diskRemove('disk-a', 'data')).toEqual({ removed: true });
    expect(stopped.sent).toEqual([]);
    expect(stopped.removed).toEqual([`${DIR}/disk-data.qcow2`]);
  });

  it('lists from the record, attached from query-block when running', async () => {
    const rec = hpRecord();
    const running = harness({
      rec,
      reply: (cmd) => (cmd === 'query-block' ? QUERY_BLOCK.filter((b) => b.device !== 'disk-data') : undefined),
    });
    const list: DiskInfo[] = await running.ops.diskList('disk-a');
    expect(list).toEqual([
      { name: 'data', sizeBytes: 1024 ** 3, path: `${DIR}/disk-data.qcow2`, attached: false },
      { name: 'hp', sizeBytes: 4096, path: `${DIR}/disk-hp.qcow2`, attached: true },
    ]);
    const stopped = harness({ rec, running: false });
    expect((await stopped.ops.diskList('disk-a')).map((d) => d.attached)).toEqual([false, false]);
    expect(stopped.sent).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------
// The operations boundary
// ---------------------------------------------------------------------------------------

class DiskFake extends FakeBackend {
  async diskAdd(name: string, disk: { name: string; size: number }): Promise<DiskInfo> {
    this.calls.push(`diskAdd ${name} ${disk.name} ${disk.size}`);
    return { name: disk.name, sizeBytes: disk.size, path: `/x/${disk.name}`, attached: true };
  }
  async diskRemove(name: string, diskName: string): Promise<{ removed: boolean }> {
    this.calls.push(`diskRemove ${name} ${diskName}`);
    return { removed: true };
  }
  async diskList(name: string): Promise<DiskInfo[]> {
    this.calls.push(`diskList ${name}`);
    return [];
  }
}

describe('disk operations', () => {
  it('validates the disk with diskSchema, normalising the size', () => {
    expect(parseDisk({ name: 'data', size: '64M' })).toEqual({ name: 'data', size: 64 << 20 });
    expect(parseDiskName('data-2')).toBe('data-2');
  });

  it('rejects bad disks with VALIDATION before the backend is asked anything', async () => {
    const fake = new DiskFake();
    await fake.create(parseVmSpec({ name: 'vm1', image: 'tiny' }));
    fake.calls.length = 0;
    const ctx = fakeContext(fake);
    const bad: unknown[] = [
      { name: '../x', size: '64M' },
      { name: 'a/b', size: '64M' },
      { name: 'Data', size: '64M' },
      { name: '', size: '64M' },
      { name: '-x', size: '64M' },
      { name: 'a'.repeat(32), size: '64M' },
      { name: 'data', size: 0 },
      { name: 'data', size: '0' },
      { name: 'data', size: -1 },
      { name: 'data', size: '64Q' },
      { name: 'data' },
      { name: 'data', size: '64M', extra: 1 },
    ];
    for (const disk of bad) {
      expect(await codeOf(addDisk('vm1', disk as never, ctx)), JSON.stringify(disk)).toBe('VALIDATION');
    }
    for (const name of ['../x', 'x y', '', 'A']) expect(await codeOf(removeDisk('vm1', name, ctx))).toBe('VALIDATION');
    expect(await codeOf(addDisk('Bad Name', { name: 'data', size: '64M' }, ctx))).toBe('VALIDATION');
    expect(await codeOf(listDisks('../vm', ctx))).toBe('VALIDATION');
    expect(fake.calls).toEqual([]);
  });

  it('passes the parsed disk on, and a backend without disks is UNSUPPORTED', async () => {
    const fake = new DiskFake();
    await fake.create(parseVmSpec({ name: 'vm1', image: 'tiny' }));
    fake.calls.length = 0;
    const ctx = fakeContext(fake);
    expect((await addDisk('vm1', { name: 'data', size: '1M' }, ctx)).sizeBytes).toBe(1 << 20);
    expect(await removeDisk('vm1', 'data', ctx)).toEqual({ removed: true });
    expect(await listDisks('vm1', ctx)).toEqual([]);
    expect(fake.calls).toEqual(['diskAdd vm1 data 1048576', 'diskRemove vm1 data', 'diskList vm1']);

    const plain = new FakeBackend();
    await plain.create(parseVmSpec({ name: 'vm1', image: 'tiny' }));
    expect(await codeOf(addDisk('vm1', { name: 'data', size: '1M' }, fakeContext(plain)))).toBe('UNSUPPORTED');
    expect(await codeOf(listDisks('vm1', fakeContext(plain)))).toBe('UNSUPPORTED');
  });
});
