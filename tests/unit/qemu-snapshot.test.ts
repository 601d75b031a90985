/**
 * QEMU snapshots without QEMU: HMP reply error detection and block-node parsing on output
 * captured from QEMU 7.2, the launch argv with the vmstate disk, the snapshot methods'
 * decisions against a scripted QMP connection, and validation at the operations boundary.
 */
import { describe, expect, it } from 'vitest';
import type { Snapshot } from '../../src/backend.js';
import { buildQemuCommand } from '../../src/backends/qemu/cmdline.js';
import { launchFor, stateDiskFor, type LaunchInputs } from '../../src/backends/qemu/layout.js';
import type { QmpClient } from '../../src/backends/qemu/qmp.js';
import {
  createSnapshotOps,
  hmpError,
  hmpSnapshotCommand,
  mergeSnapshots,
  snapshotDisks,
  snapshotsFromBlockNodes,
  type SnapshotDeps,
} from '../../src/backends/qemu/snapshot.js';
import { vmPaths, type VmRecord } from '../../src/backends/qemu/state.js';
import { isLocalVmError, LocalVmError } from '../../src/errors.js';
import {
  deleteSnapshot,
  listSnapshots,
  parseSnapshotName,
  restoreSnapshot,
  snapshotVm,
} from '../../src/operations/snapshot.js';
import { createRecordingRunner, type Command, type CommandRunner, type RunResult } from '../../src/runner.js';
import { parseVmSpec } from '../../src/schema.js';
import { FakeBackend, fakeContext } from '../fixtures/fakeBackend.js';
import { codeOfSync as codeOf } from '../fixtures/rejection.js';

async function asyncCodeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (error) {
    return isLocalVmError(error) ? error.code : `non-LocalVmError: ${String(error)}`;
  }
  return 'no error';
}

// `human-monitor-command` return values captured from qemu-system-x86_64 7.2.
const HMP = {
  ok: '',
  loadvmMissing: "Error: Snapshot 'nope' does not exist in one or more devices\r\n",
  loadvmDiskOnly: 'Error: This is a disk-only snapshot. Revert to it  offline using qemu-img\r\n',
  savevmNoDisk: 'Error: no block device can store vmstate for snapshot\r\n',
  savevmRawDisk: "Error: Device 'r0' is writable but does not support snapshots\r\n",
  // `info snapshots` without a qcow2 disk prints its complaint without the prefix.
  infoNoDisk: 'no block device can store vmstate for snapshot\r\n',
};

// `query-named-block-nodes` captured from QEMU 7.2 with `-drive file=...,format=qcow2,if=none,id=vmstate`
// after two savevm (unrelated fields trimmed): the qcow2 node, then its protocol node.
const BLOCK_NODES = [
  {
    iops_rd: 0,
    image: {
      snapshots: [
        {
          'vm-clock-nsec': 575402475,
          name: 'clean',
          'date-sec': 1795326988,
          'date-nsec': 698363000,
          'vm-clock-sec': 3,
          id: '1',
          'vm-state-size': 76359820,
        },
        {
          'vm-clock-nsec': 575402475,
          name: 'vm-20261122055631',
          'date-sec': 1795326991,
          'date-nsec': 130835000,
          'vm-clock-sec': 3,
          id: '3',
          'vm-state-size': 76359874,
        },
      ],
      'virtual-size': 67108864,
      filename: '/tmp/snapx/state.qcow2',
      'cluster-size': 65536,
      format: 'qcow2',
      'actual-size': 229728256,
      'dirty-flag': false,
    },
    ro: false,
    'node-name': '#block175',
    backing_file_depth: 0,
    drv: 'qcow2',
    file: '/tmp/snapx/state.qcow2',
  },
  {
    image: {
      'virtual-size': 229966336,
      filename: '/tmp/snapx/state.qcow2',
      format: 'file',
      'actual-size': 229728256,
      'dirty-flag': false,
    },
    ro: false,
    'node-name': '#block030',
    backing_file_depth: 0,
    drv: 'file',
    file: '/tmp/snapx/state.qcow2',
  },
];

describe('hmpError', () => {
  it('accepts the empty reply of a successful savevm/loadvm/delvm, and warnings', () => {
    expect(hmpError('savevm a', HMP.ok)).toBeUndefined();
    expect(hmpError('savevm a', 'warning: something odd\r\n')).toBeUndefined();
  });

  it.each([
    ['loadvm nope', HMP.loadvmMissing, 'NOT_FOUND'],
    ['loadvm diskonly', HMP.loadvmDiskOnly, 'CONFLICT'],
    ['savevm a', HMP.savevmNoDisk, 'CONFLICT'],
    ['savevm b', HMP.savevmRawDisk, 'CONFLICT'],
    ['savevm c', HMP.infoNoDisk, 'CONFLICT'],
    ['savevm d', 'Error: something new in QEMU 11\r\n', 'COMMAND_FAILED'],
    ['savevm e', 'unexpected chatter\n', 'COMMAND_FAILED'],
  ])('%s with %j → %s', (cmd, output, code) => {
    const error = hmpError(cmd, output, 'vm1');
    expect(error?.code).toBe(code);
    expect(error?.vm).toBe('vm1');
    expect(error?.details).toMatchObject({ hmp: cmd });
    expect(error?.message).not.toMatch(/Error: Error/);
  });
});

describe('hmpSnapshotCommand', () => {
  it('builds the HMP line for a valid name', () => {
    expect(hmpSnapshotCommand('savevm', 'clean')).toBe('savevm clean');
    expect(hmpSnapshotCommand('delvm', 'v1.2_x-y')).toBe('delvm v1.2_x-y');
  });

  it.each(['', 'x y', 'a"b', "a'b", 'a;quit', '-c', 'A', 'a\nquit', `a${'b'.repeat(63)}`])(
    'refuses %j (HMP would read it as syntax)',
    (bad) => {
      expect(codeOf(() => hmpSnapshotCommand('loadvm', bad))).toBe('VALIDATION');
    },
  );
});

describe('block nodes and merging', () => {
  it('reads the snapshots of the named qcow2 disks only', () => {
    const disks = snapshotsFromBlockNodes(BLOCK_NODES, ['/tmp/snapx/state.qcow2', '/tmp/snapx/missing.qcow2']);
    expect(disks).toEqual([
      {
        path: '/tmp/snapx/state.qcow2',
        snapshots: [
          { name: 'clean', vmStateSize: 76359820, dateSec: 1795326988, dateNsec: 698363000 },
          { name: 'vm-20261122055631', vmStateSize: 76359874, dateSec: 1795326991, dateNsec: 130835000 },
        ],
      },
    ]);
    expect(mergeSnapshots(disks)).toEqual([
      { name: 'clean', createdAt: new Date(1795326988698).toISOString(), sizeBytes: 76359820 },
      { name: 'vm-20261122055631', createdAt: new Date(1795326991130).toISOString(), sizeBytes: 76359874 },
    ]);
  });

  it('throws PROTOCOL on a reply of another shape', () => {
    expect(codeOf(() => snapshotsFromBlockNodes({ not: 'a list' }, []))).toBe('PROTOCOL');
    expect(codeOf(() => snapshotsFromBlockNodes([{ drv: 'qcow2' }], []))).toBe('PROTOCOL');
  });

  it('merges one snapshot spread over several disks into one entry, oldest first', () => {
    const merged = mergeSnapshots([
      { path: '/s', snapshots: [{ name: 'b', vmStateSize: 100, dateSec: 20 }] },
      {
        path: '/o',
        snapshots: [
          { name: 'b', vmStateSize: 0, dateSec: 21 },
          { name: 'a', vmStateSize: 0, dateSec: 30 },
        ],
      },
    ]);
    expect(merged).toEqual([
      { name: 'b', createdAt: new Date(20_000).toISOString(), sizeBytes: 100 },
      { name: 'a', createdAt: new Date(30_000).toISOString(), sizeBytes: 0 },
    ]);
  });
});

const spec = parseVmSpec({ name: 'snap-a', image: 'tiny', disks: [{ name: 'data', size: '1G' }] });
const paths = vmPaths('/s', '/run', 'snap-a');
const inputs: LaunchInputs = {
  name: 'snap-a',
  spec,
  arch: 'x86_64',
  boot: { kind: 'kernel', kernel: '/img/vmlinux', initrd: '/img/initrd' },
  disks: [{ id: 'disk-data', path: '/s/vms/snap-a/disk-data.qcow2', format: 'qcow2' }],
  paths,
};

describe('launch argv with the vmstate disk', () => {
  it('holds the state disk as a drive without a device', () => {
    const args = buildQemuCommand(launchFor({ ...inputs, stateDisk: stateDiskFor(paths.dir) }, 'tcg', undefined)).args;
    const drive = `file=${stateDiskFor(paths.dir)},format=qcow2,if=none,id=vmstate`;
    expect(stateDiskFor(paths.dir)).toBe('/s/vms/snap-a/state.qcow2');
    expect(args[args.indexOf(drive) - 1]).toBe('-drive');
    expect(args.filter((a) => a.includes('vmstate'))).toEqual([drive]);
    expect(args.indexOf(drive)).toBeLessThan(args.indexOf('-daemonize'));
    // The extra disk still has its device; the state disk has none.
    expect(args).toContain('virtio-blk-pci,drive=disk-data');
    expect(args.filter((a) => a.startsWith('virtio-blk-pci'))).toHaveLength(1);
  });

  it('adds no state drive for a VM recorded without one', () => {
    const own = buildQemuCommand(launchFor({ ...inputs, stateDisk: '/elsewhere/st.qcow2' }, 'tcg', undefined)).args;
    expect(own).toContain('file=/elsewhere/st.qcow2,format=qcow2,if=none,id=vmstate');
    const none = buildQemuCommand(launchFor(inputs, 'tcg', undefined)).args;
    expect(none.some((a) => a.includes('vmstate'))).toBe(false);
    expect(none.length).toBe(own.length - 2);
  });

  it('refuses a state disk path with a comma (QEMU option injection)', () => {
    expect(codeOf(() => buildQemuCommand(launchFor({ ...inputs, stateDisk: '/a,b' }, 'tcg', undefined)))).toBe(
      'VALIDATION',
    );
  });
});

// ---------------------------------------------------------------------------------------
// The snapshot methods against scripted QMP replies and a scripted runner
// ---------------------------------------------------------------------------------------

const record = (over: Partial<VmRecord> = {}): VmRecord => ({
  version: 1,
  name: 'snap-a',
  spec,
  fingerprint: 'f',
  createdAt: '2026-01-01T00:00:00.000Z',
  phase: 'ready',
  desiredState: 'running',
  boot: { kind: 'kernel', kernel: '/k' },
  arch: 'x86_64',
  disks: [{ id: 'disk-data', path: '/s/vms/snap-a/disk-data.qcow2', format: 'qcow2' }],
  paths,
  stateDisk: '/s/vms/snap-a/state.qcow2',
  ...over,
});

function nodes(snaps: { name: string; size: number }[]): unknown {
  return [
    {
      drv: 'qcow2',
      file: '/s/vms/snap-a/state.qcow2',
      image: {
        snapshots: snaps.map((s, i) => ({ name: s.name, 'vm-state-size': s.size, 'date-sec': 100 + i, id: `${i}` })),
      },
    },
  ];
}

/** Deps whose QMP connection answers from `reply` and records every command. */
function harness(o: {
  running?: boolean;
  rec?: VmRecord;
  reply: (command: string, args?: Record<string, unknown>) => unknown;
  runner?: CommandRunner;
}) {
  const sent: string[] = [];
  const events: string[] = [];
  const qmp = {
    async execute(command: string, args?: Record<string, unknown>) {
      sent.push(command === 'human-monitor-command' ? `hmp ${String(args?.['command-line'])}` : command);
      return o.reply(command, args);
    },
  } as unknown as QmpClient;
  const deps: SnapshotDeps = {
    runner: o.runner ?? createRecordingRunner(),
    async lifecycle(name, what, fn) {
      events.push(`lock ${what}`);
      try {
        return await fn();
      } finally {
        events.push('unlock');
      }
    },
    async load() {
      return { record: o.rec ?? record(), running: o.running ?? true };
    },
    async qmpSession(_name, _paths, _timeout, fn) {
      events.push('qmp');
      return fn(qmp);
    },
    async dropAgent() {
      events.push('drop agent');
    },
  };
  return { ops: createSnapshotOps(deps), sent, events };
}

describe('createSnapshotOps', () => {
  it('create: savevm under the lifecycle lock, after the agent session is dropped, then verifies', async () => {
    let saved = false;
    const h = harness({
      reply: (cmd) => {
        if (cmd === 'query-named-block-nodes') return nodes(saved ? [{ name: 'clean', size: 5 }] : []);
        saved = true;
        return '';
      },
    });
    await h.ops.snapshotCreate('snap-a', 'clean');
    expect(h.sent).toEqual(['query-named-block-nodes', 'hmp savevm clean', 'query-named-block-nodes']);
    expect(h.events).toEqual(['lock snapshot create', 'drop agent', 'qmp', 'unlock']);
  });

  it('create: a taken name is ALREADY_EXISTS and savevm never runs', async () => {
    const h = harness({ reply: () => nodes([{ name: 'clean', size: 5 }]) });
    expect(await asyncCodeOf(h.ops.snapshotCreate('snap-a', 'clean'))).toBe('ALREADY_EXISTS');
    expect(h.sent).toEqual(['query-named-block-nodes']);
  });

  it('create: a savevm that answers success but made nothing is COMMAND_FAILED', async () => {
    const h = harness({ reply: (cmd) => (cmd === 'query-named-block-nodes' ? nodes([]) : '') });
    expect(await asyncCodeOf(h.ops.snapshotCreate('snap-a', 'clean'))).toBe('COMMAND_FAILED');
  });

  it('create: an HMP error text becomes a LocalVmError', async () => {
    const h = harness({ reply: (cmd) => (cmd === 'query-named-block-nodes' ? nodes([]) : HMP.savevmRawDisk) });
    expect(await asyncCodeOf(h.ops.snapshotCreate('snap-a', 'clean'))).toBe('CONFLICT');
  });

  it('create: a VM recorded without a state disk is UNSUPPORTED; a stopped one CONFLICT', async () => {
    const legacy = harness({ rec: record({ stateDisk: undefined }), reply: () => nodes([]) });
    expect(await asyncCodeOf(legacy.ops.snapshotCreate('snap-a', 'clean'))).toBe('UNSUPPORTED');
    expect(legacy.sent).toEqual([]);
    const stopped = harness({ running: false, reply: () => nodes([]) });
    expect(await asyncCodeOf(stopped.ops.snapshotCreate('snap-a', 'clean'))).toBe('CONFLICT');
    expect(await asyncCodeOf(stopped.ops.snapshotRestore('snap-a', 'clean'))).toBe('CONFLICT');
    expect(stopped.sent).toEqual([]);
  });

  it('restore: a missing snapshot is NOT_FOUND without loadvm; a disk-only one CONFLICT', async () => {
    const h = harness({ reply: () => nodes([{ name: 'disk-only', size: 0 }]) });
    expect(await asyncCodeOf(h.ops.snapshotRestore('snap-a', 'clean'))).toBe('NOT_FOUND');
    expect(await asyncCodeOf(h.ops.snapshotRestore('snap-a', 'disk-only'))).toBe('CONFLICT');
    expect(h.sent.filter((s) => s.startsWith('hmp'))).toEqual([]);
  });

  it('restore: drops the agent session before and after loadvm', async () => {
    const h = harness({
      reply: (cmd) => (cmd === 'query-named-block-nodes' ? nodes([{ name: 'clean', size: 9 }]) : ''),
    });
    await h.ops.snapshotRestore('snap-a', 'clean');
    expect(h.sent).toEqual(['query-named-block-nodes', 'hmp loadvm clean']);
    expect(h.events).toEqual(['lock snapshot restore', 'drop agent', 'qmp', 'drop agent', 'unlock']);
  });

  it('restore: a failed loadvm leaves QEMU paused, so the VM is resumed before the error is thrown', async () => {
    const h = harness({
      reply: (cmd) => {
        if (cmd === 'query-named-block-nodes') return nodes([{ name: 'clean', size: 9 }]);
        if (cmd === 'query-status') return { status: 'restore-vm', running: false };
        if (cmd === 'cont') return {};
        return "Error: Snapshot 'clean' does not exist in one or more devices\r\n";
      },
    });
    expect(await asyncCodeOf(h.ops.snapshotRestore('snap-a', 'clean'))).toBe('NOT_FOUND');
    expect(h.sent).toEqual(['query-named-block-nodes', 'hmp loadvm clean', 'query-status', 'cont']);
  });

  it('delete while running: delvm only for a snapshot that exists (delvm of a missing one says nothing)', async () => {
    const h = harness({ reply: (cmd) => (cmd === 'query-named-block-nodes' ? nodes([{ name: 'a', size: 1 }]) : '') });
    expect(await asyncCodeOf(h.ops.snapshotDelete('snap-a', 'b'))).toBe('NOT_FOUND');
    await h.ops.snapshotDelete('snap-a', 'a');
    expect(h.sent).toEqual(['query-named-block-nodes', 'query-named-block-nodes', 'hmp delvm a']);
  });

  it('stopped: lists with qemu-img info on every qcow2 disk and deletes with qemu-img snapshot -d where held', async () => {
    const infoJson = (file: string, names: string[]) =>
      JSON.stringify({
        filename: file,
        format: 'qcow2',
        'virtual-size': 1,
        snapshots: names.map((n, i) => ({ id: `${i}`, name: n, 'vm-state-size': 7, 'date-sec': 50 })),
      });
    const calls: string[] = [];
    const runner: CommandRunner = {
      async run(cmd: Command): Promise<RunResult> {
        calls.push([cmd.file, ...cmd.args].join(' '));
        const path = cmd.args.at(-1) ?? '';
        const done = (stdout: string, exitCode = 0, stderr = ''): RunResult => ({
          file: cmd.file,
          args: cmd.args,
          exitCode,
          stdout,
          stderr,
          timedOut: false,
          durationMs: 1,
        });
        if (cmd.args[0] === 'snapshot') return done('');
        if (path.endsWith('state.qcow2')) return done(infoJson(path, ['a', 'b']));
        return done(infoJson(path, ['a']));
      },
    };
    const h = harness({ running: false, runner, reply: () => undefined });
    const list: Snapshot[] = await h.ops.snapshotList('snap-a');
    expect(list).toEqual([
      { name: 'a', createdAt: new Date(50_000).toISOString(), sizeBytes: 14 },
      { name: 'b', createdAt: new Date(50_000).toISOString(), sizeBytes: 7 },
    ]);
    calls.length = 0;
    await h.ops.snapshotDelete('snap-a', 'a');
    expect(calls.filter((c) => c.includes('snapshot'))).toEqual([
      'qemu-img snapshot -d a /s/vms/snap-a/state.qcow2',
      'qemu-img snapshot -d a /s/vms/snap-a/disk-data.qcow2',
    ]);
    expect(await asyncCodeOf(h.ops.snapshotDelete('snap-a', 'zzz'))).toBe('NOT_FOUND');
    expect(h.sent).toEqual([]);
  });

  it('knows which disks hold snapshots: state disk, a qcow2 boot overlay, qcow2 extra disks', () => {
    expect(snapshotDisks(record({ boot: { kind: 'disk', image: '/s/o.qcow2', format: 'qcow2' } }))).toEqual([
      '/s/vms/snap-a/state.qcow2',
      '/s/o.qcow2',
      '/s/vms/snap-a/disk-data.qcow2',
    ]);
    expect(snapshotDisks(record({ stateDisk: undefined, disks: [] }))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------
// The operations boundary
// ---------------------------------------------------------------------------------------

class SnapshotFake extends FakeBackend {
  readonly snaps = new Map<string, Snapshot[]>();
  async snapshotCreate(name: string, snapshot: string): Promise<void> {
    this.calls.push(`snapshotCreate ${name} ${snapshot}`);
    this.snaps.set(name, [...(this.snaps.get(name) ?? []), { name: snapshot, sizeBytes: 1 }]);
  }
  async snapshotList(name: string): Promise<Snapshot[]> {
    this.calls.push(`snapshotList ${name}`);
    return this.snaps.get(name) ?? [];
  }
  async snapshotRestore(name: string, snapshot: string): Promise<void> {
    this.calls.push(`snapshotRestore ${name} ${snapshot}`);
  }
  async snapshotDelete(name: string, snapshot: string): Promise<void> {
    this.calls.push(`snapshotDelete ${name} ${snapshot}`);
    const list = this.snaps.get(name) ?? [];
    if (!list.some((s) => s.name === snapshot)) {
      throw new LocalVmError('NOT_FOUND', 'no such snapshot', { details: { snapshot } });
    }
    this.snaps.set(
      name,
      list.filter((s) => s.name !== snapshot),
    );
  }
}

describe('snapshot operations', () => {
  it('validates snapshot names with the schema', () => {
    expect(parseSnapshotName('clean-1.a_b')).toBe('clean-1.a_b');
    for (const bad of ['', 'Clean', '.x', 'x y', 'a/b', 'a$(reboot)', 7, undefined, `a${'b'.repeat(63)}`]) {
      expect(codeOf(() => parseSnapshotName(bad))).toBe('VALIDATION');
    }
    try {
      parseSnapshotName('x y');
    } catch (error) {
      expect(isLocalVmError(error) && error.issues?.[0]?.property).toBe('snapshot');
    }
  });

  it('rejects hostile names before the backend is asked anything', async () => {
    const fake = new SnapshotFake();
    await fake.create(parseVmSpec({ name: 'vm1', image: 'tiny' }));
    fake.calls.length = 0;
    const ctx = fakeContext(fake);
    for (const bad of ['a;quit', '-d', 'x y', '']) {
      expect(await asyncCodeOf(snapshotVm('vm1', bad, ctx))).toBe('VALIDATION');
      expect(await asyncCodeOf(restoreSnapshot('vm1', bad, ctx))).toBe('VALIDATION');
      expect(await asyncCodeOf(deleteSnapshot('vm1', bad, ctx))).toBe('VALIDATION');
    }
    expect(await asyncCodeOf(listSnapshots('Bad Name', ctx))).toBe('VALIDATION');
    expect(fake.calls).toEqual([]);
  });

  it('passes valid calls through, returns the created snapshot, and deletes idempotently', async () => {
    const fake = new SnapshotFake();
    await fake.create(parseVmSpec({ name: 'vm1', image: 'tiny' }));
    const ctx = fakeContext(fake);
    expect(await snapshotVm('vm1', 'clean', ctx)).toEqual({ name: 'clean', sizeBytes: 1 });
    expect(await listSnapshots('vm1', ctx)).toEqual([{ name: 'clean', sizeBytes: 1 }]);
    await restoreSnapshot('vm1', 'clean', ctx);
    expect(await deleteSnapshot('vm1', 'clean', ctx)).toEqual({ deleted: true });
    expect(await deleteSnapshot('vm1', 'clean', ctx)).toEqual({ deleted: false });
    expect(fake.calls).toContain('snapshotRestore vm1 clean');
    expect(await asyncCodeOf(listSnapshots('ghost', ctx))).toBe('NOT_FOUND');
  });

  it('a backend without snapshots is UNSUPPORTED', async () => {
    const plain = new FakeBackend();
    await plain.create(parseVmSpec({ name: 'vm1', image: 'tiny' }));
    const ctx = fakeContext(plain);
    expect(await asyncCodeOf(snapshotVm('vm1', 'clean', ctx))).toBe('UNSUPPORTED');
    expect(await asyncCodeOf(listSnapshots('vm1', ctx))).toBe('UNSUPPORTED');
  });
});
