/** doctor's pure parts: facts (record, directory, processes, locks, sessions) → findings. */
import { describe, expect, it } from 'vitest';
import { vmPaths, type VmRecord } from '../../src/backends/qemu/state.js';
import { diskLayout, stateDiskFor } from '../../src/backends/qemu/layout.js';
import {
  classifyHome,
  heldByOther,
  isProblem,
  lifecycleLockPath,
  testVmStatus,
  UNREADABLE_LOCK_MS,
} from '../../src/operations/doctor/classify.js';
import { ourQemu, qemuNameOf } from '../../src/operations/doctor/gather.js';
import { qcow2BackingRange, resolveBacking } from '../../src/operations/doctor/qcow2.js';
import type { Entry, HomeFacts, QemuFact, SessionFact, VmFacts } from '../../src/operations/doctor/types.js';
import { parseVmSpec } from '../../src/schema.js';
import { createQemuHost } from '../../src/backends/qemu/host.js';
import { loadConfig } from '../../src/config.js';
import { createRecordingRunner } from '../../src/runner.js';

const STATE = '/home/u/.local/state/localvm';
const RUN = '/tmp/localvm-0';
const IMG = '/home/u/.cache/localvm/images/tiny-aaaa';

function record(name: string, over: Partial<VmRecord> = {}, disks: string[] = []): VmRecord {
  const paths = vmPaths(STATE, RUN, name);
  const spec = parseVmSpec({ name, disks: disks.map((d) => ({ name: d, size: '1G' })) });
  return {
    version: 1,
    name,
    spec,
    fingerprint: 'f',
    createdAt: '2026-01-01T00:00:00Z',
    phase: 'ready',
    desiredState: 'stopped',
    boot: { kind: 'kernel', kernel: `${IMG}/vmlinux`, initrd: `${IMG}/initramfs.cpio.gz` },
    arch: 'x86_64',
    disks: diskLayout(spec, paths.dir),
    stateDisk: stateDiskFor(paths.dir),
    paths,
    ...over,
  };
}

const files = (...names: string[]): Entry[] => names.map((name) => ({ name, kind: 'file' }));

/** Facts of a coherent VM for `r`: its files present, running iff `pid` is given. */
function vm(r: VmRecord, extra: Partial<VmFacts> = {}): VmFacts {
  const names = ['vm.json', 'console.log', 'state.qcow2', ...r.disks.map((d) => d.path.split('/').pop() as string)];
  return {
    name: r.name,
    dir: r.paths.dir,
    entries: files(...names),
    record: r,
    procs: [],
    sockets: [],
    needed: [
      { path: `${IMG}/vmlinux`, what: 'kernel', present: true },
      { path: r.paths.dir + '/state.qcow2', what: 'state disk', present: true },
    ],
    ...extra,
  };
}

const qemu = (name: string, pid: number): QemuFact => ({
  pid,
  zombie: false,
  startTime: 1000 + pid,
  qemuName: name,
  dir: vmPaths(STATE, RUN, name).dir,
  vm: name,
});

function home(over: Partial<HomeFacts>): HomeFacts {
  return {
    stateDir: STATE,
    testPrefix: 'pytest-test-',
    vms: [],
    qemus: [],
    locks: [],
    sessions: [],
    images: [{ dir: IMG, name: 'tiny', builtAt: '2026-01-02', sizeBytes: 1 }],
    currentImage: IMG,
    selfHeld: [],
    ...over,
  };
}

const codes = (facts: HomeFacts) => classifyHome(facts).map((f) => f.code);

describe('classifyHome: record against process', () => {
  it('finds nothing in a coherent home (one VM running, one stopped)', () => {
    const web = record('web', { desiredState: 'running', pid: 100 });
    const running = vm(web, {
      entries: files('vm.json', 'console.log', 'state.qcow2', 'qemu.pid', 'qmp.sock', 'qga.sock'),
      pidFilePid: 100,
      sockets: [web.paths.qmpSocket, web.paths.qgaSocket],
    });
    expect(classifyHome(home({ vms: [running, vm(record('db'))], qemus: [qemu('web', 100)] }))).toEqual([]);
  });

  it('a record that says running over a zombie or a vanished pid: mark crashed', () => {
    const r = record('web', { desiredState: 'running', pid: 100 });
    const zombie = classifyHome(
      home({ vms: [vm(r, { procs: [{ pid: 100, zombie: true, startTime: 1 }], pidFilePid: 100 })] }),
    );
    expect(zombie[0]).toMatchObject({
      code: 'RECORD_RUNNING_QEMU_DEAD',
      vm: 'web',
      pid: 100,
      fixable: true,
      needsForce: false,
      action: { kind: 'mark-crashed' },
    });
    expect(zombie[0]?.seen).toContain('zombie');
    const gone = classifyHome(
      home({
        vms: [
          vm(r, {
            entries: files('vm.json', 'console.log', 'state.qcow2', 'qemu.pid', 'qmp.sock'),
            pidFilePid: 100,
            sockets: [r.paths.qmpSocket],
          }),
        ],
      }),
    );
    expect(gone.map((f) => f.code)).toEqual(['RECORD_RUNNING_QEMU_DEAD', 'STALE_SOCKET', 'STALE_PIDFILE']);
    expect(gone[0]?.seen).toContain('pid 100 is gone');
  });

  it('the reverse: a live QEMU the record says is stopped, or under another pid, is adopted', () => {
    const stopped = classifyHome(home({ vms: [vm(record('web'))], qemus: [qemu('web', 200)] }));
    expect(stopped).toMatchObject([
      { code: 'QEMU_RUNNING_RECORD_STOPPED', pid: 200, action: { kind: 'adopt-qemu', pid: 200 } },
    ]);
    const other = classifyHome(
      home({ vms: [vm(record('web', { desiredState: 'running', pid: 100 }))], qemus: [qemu('web', 200)] }),
    );
    expect(other[0]?.seen).toContain('names pid 100');
  });

  it('a second QEMU beside the recorded one needs --force to kill', () => {
    const r = record('web', { desiredState: 'running', pid: 100 });
    const found = classifyHome(
      home({ vms: [vm(r, { pidFilePid: 100 })], qemus: [qemu('web', 100), qemu('web', 300)] }),
    );
    expect(found).toMatchObject([{ code: 'QEMU_DUPLICATE', pid: 300, needsForce: true }]);
  });

  it('a QEMU of this home whose VM directory is gone is an orphan, killed without --force', () => {
    const found = classifyHome(home({ qemus: [qemu('gone', 400)] }));
    expect(found).toMatchObject([
      { code: 'ORPHAN_QEMU', vm: 'gone', pid: 400, needsForce: false, action: { kind: 'kill-qemu', pid: 400 } },
    ]);
  });

  it('a VM whose lifecycle lock another live process holds is busy: nothing is said about it', () => {
    const r = record('web', { desiredState: 'running', pid: 100 });
    const lock = lifecycleLockPath(STATE, 'web');
    const holder = { pid: 5, startTime: 1, token: 't', acquiredAt: 'now', what: 'start' };
    const locks = [{ path: lock, holder, holderAlive: true, ageMs: 10 }];
    expect(classifyHome(home({ vms: [vm(r)], locks }))).toEqual([]);
    // The same lock held by the caller itself (doctor --fix) does not hide anything.
    expect(codes(home({ vms: [vm(r)], locks, selfHeld: [lock] }))).toEqual(['RECORD_RUNNING_QEMU_DEAD']);
    expect(heldByOther(locks, lock, [])).toBe(true);
  });

  it('judges busyness by the very lock file the lifecycle takes', () => {
    const host = createQemuHost({
      config: loadConfig({}, { stateDir: STATE, runDir: RUN }),
      runner: createRecordingRunner(),
    });
    expect(lifecycleLockPath(STATE, 'web')).toBe(host.lockPath('web', 'lifecycle'));
  });
});

describe('classifyHome: files', () => {
  it('orphan files: disks and unknown files need --force, generated leftovers do not', () => {
    const r = record('web');
    const found = classifyHome(
      home({
        vms: [
          vm(r, {
            entries: [
              ...files('vm.json', 'console.log', 'state.qcow2', 'disk-old.qcow2', 'notes.txt', 'vm.json.1a2b3c'),
            ],
          }),
        ],
      }),
    );
    expect(found.map((f) => [f.code, f.path?.split('/').pop(), f.needsForce])).toEqual([
      ['ORPHAN_FILE', 'disk-old.qcow2', true],
      ['ORPHAN_FILE', 'notes.txt', true],
      ['ORPHAN_FILE', 'vm.json.1a2b3c', false],
    ]);
  });

  it('missing files: a tiny kernel is re-pointed, a lost disk dropped only with --force, an overlay by hand', () => {
    const r = record('web', {}, ['data']);
    const disk = r.disks[0]?.path as string;
    const facts = vm(r, {
      needed: [
        { path: `${IMG}/vmlinux`, what: 'kernel', present: false },
        { path: disk, what: 'disk', disk: 'data', present: false },
        { path: '/images/base.qcow2', what: 'backing image', present: false },
      ],
      entries: files('vm.json', 'console.log', 'state.qcow2'),
    });
    expect(classifyHome(home({ vms: [facts] })).map((f) => [f.code, f.action?.kind, f.fixable, f.needsForce])).toEqual([
      ['MISSING_FILE', 'repoint-tiny', true, false],
      ['MISSING_FILE', 'drop-disk', true, true],
      ['MISSING_FILE', undefined, false, false],
    ]);
    // While QEMU runs the record cannot lose a disk it has open: stop first.
    const running = classifyHome(
      home({
        vms: [{ ...facts, record: { ...r, desiredState: 'running', pid: 100 }, pidFilePid: 100 }],
        qemus: [qemu('web', 100)],
      }),
    );
    expect(running.find((f) => f.path === disk)).toMatchObject({ fixable: false });
    // Without a tiny image there is nothing to point at.
    expect(classifyHome(home({ vms: [facts], currentImage: undefined }))[0]).toMatchObject({ fixable: false });
  });

  it('half-created: a directory without vm.json, or a record still creating (no data: no --force)', () => {
    const dir = vmPaths(STATE, RUN, 'half').dir;
    const empty: VmFacts = { name: 'half', dir, entries: [], procs: [], sockets: [], needed: [] };
    expect(classifyHome(home({ vms: [empty] }))).toMatchObject([
      { code: 'HALF_CREATED', needsForce: false, action: { kind: 'delete-vm' } },
    ]);
    const withData = { ...empty, entries: files('console.log', 'state.qcow2') };
    expect(classifyHome(home({ vms: [withData] }))).toMatchObject([{ code: 'HALF_CREATED', needsForce: true }]);
    // The record was removed under a running QEMU: the QEMU is an orphan too.
    expect(codes(home({ vms: [withData], qemus: [qemu('half', 9)] }))).toEqual(['ORPHAN_QEMU', 'HALF_CREATED']);
    const creating = vm(record('new', { phase: 'creating', desiredState: 'running' }));
    expect(classifyHome(home({ vms: [creating], qemus: [qemu('new', 10)] }))).toMatchObject([
      { code: 'HALF_CREATED', needsForce: false },
    ]);
  });

  it('an unreadable record is said, not repaired', () => {
    const dir = vmPaths(STATE, RUN, 'bad').dir;
    const bad: VmFacts = {
      name: 'bad',
      dir,
      entries: files('vm.json'),
      recordError: 'not JSON',
      procs: [],
      sockets: [],
      needed: [],
    };
    expect(classifyHome(home({ vms: [bad] }))).toMatchObject([{ code: 'RECORD_UNREADABLE', fixable: false }]);
  });
});

describe('classifyHome: locks, sessions, images', () => {
  const holder = { pid: 77, startTime: 1, token: 't', acquiredAt: '2026-01-01', what: 'create' };

  it('a lock of a dead holder is stale; a live one, or an unreadable one being written, is not', () => {
    const path = `${STATE}/locks/web.lock`;
    expect(codes(home({ locks: [{ path, holder, holderAlive: false, ageMs: 10 }] }))).toEqual(['STALE_LOCK']);
    expect(codes(home({ locks: [{ path, holder, holderAlive: true, ageMs: 1e9 }] }))).toEqual([]);
    expect(codes(home({ locks: [{ path, holderAlive: false, ageMs: 10 }] }))).toEqual([]);
    expect(codes(home({ locks: [{ path, holderAlive: false, ageMs: UNREADABLE_LOCK_MS + 1 }] }))).toEqual([
      'STALE_LOCK',
    ]);
  });

  const session = (id: string, alive: boolean, vms: string[]): SessionFact => ({
    file: `${STATE}/sessions/${id}.json`,
    runnerAlive: alive,
    record: { version: 1, id, pid: 42, createdAt: 'x', vms: vms.map((name) => ({ name, pid: 43 })) },
  });

  it('test VMs: owned by a live session, of a dead one, in none; reused VMs are left alone', () => {
    const p = 'pytest-test-';
    expect(testVmStatus('web', p, [])).toBeUndefined();
    expect(testVmStatus(`${p}reuse-abc-w1`, p, [])).toBeUndefined();
    expect(testVmStatus(`${p}s1-w1`, p, [session('s1', true, [`${p}s1-w1`])])).toEqual({ kind: 'live' });
    expect(testVmStatus(`${p}s1-w1`, p, [session('s1', false, [`${p}s1-w1`])])).toEqual({
      kind: 'dead-session',
      id: 's1',
      runnerPid: 42,
    });
    expect(testVmStatus(`${p}s9-w1`, p, [])).toEqual({ kind: 'unlisted' });
    const facts = home({ vms: [vm(record(`${p}s1-w1`))], sessions: [session('s1', false, [`${p}s1-w1`])] });
    expect(classifyHome(facts).map((f) => [f.code, f.action?.kind])).toEqual([
      ['TEST_VM_ORPHANED', 'delete-vm'],
      ['STALE_SESSION', 'remove-session'],
    ]);
  });

  it('an old image no VM uses is info only; the current build and used builds are not reported', () => {
    const old = { dir: '/c/images/tiny-old', name: 'tiny', builtAt: '2025', sizeBytes: 5 };
    const usedDir = '/c/images/tiny-used';
    const used = { ...old, dir: usedDir };
    const r = record('web', { boot: { kind: 'kernel', kernel: `${usedDir}/vmlinux` } });
    const found = classifyHome(
      home({
        vms: [vm(r, { needed: [] })],
        images: [old, used, { ...old, dir: IMG }],
      }),
    );
    expect(found).toMatchObject([{ code: 'UNUSED_IMAGE', path: old.dir, severity: 'info', fixable: false }]);
    expect(found.some(isProblem)).toBe(false);
  });
});

describe('reading QEMU command lines and qcow2 headers', () => {
  const argv = (...a: string[]) => a.join('\0') + '\0';
  it('recognizes a QEMU of this home by its -pidfile, and reads its -name', () => {
    const root = `${STATE}/vms`;
    const line = argv('qemu-system-x86_64', '-name', 'web', '-daemonize', '-pidfile', `${root}/web/qemu.pid`);
    expect(ourQemu(line, root)).toEqual({ dir: `${root}/web`, vm: 'web', qemuName: 'web' });
    expect(ourQemu(line, '/other/vms')).toBeUndefined();
    expect(ourQemu(argv('qemu-system-x86_64', '-pidfile', `${root}/a/b/qemu.pid`), root)).toBeUndefined();
    expect(qemuNameOf(['-name', 'guest=db,debug-threads=on'])).toBe('db');
  });

  it('finds the backing file range in a qcow2 header', () => {
    const header = new Uint8Array(20);
    const view = new DataView(header.buffer);
    view.setUint32(0, 0x514649fb);
    view.setUint32(4, 3);
    view.setBigUint64(8, 0x170n);
    view.setUint32(16, 21);
    expect(qcow2BackingRange(header)).toEqual({ offset: 0x170, size: 21 });
    view.setBigUint64(8, 0n);
    expect(qcow2BackingRange(header)).toBeNull();
    expect(qcow2BackingRange(new Uint8Array(20))).toBeUndefined();
    expect(resolveBacking('/vms/a/overlay.qcow2', 'base.qcow2')).toBe('/vms/a/base.qcow2');
    expect(resolveBacking('/vms/a/overlay.qcow2', '/img/base.qcow2')).toBe('/img/base.qcow2');
  });
});
