import { describe, expect, it } from 'vitest';
import {
  accelFromCmdline,
  completedRecord,
  cmdlineHasName,
  isLiveQemu,
  MAX_SOCKET_PATH,
  reconcile,
  socketPaths,
  vmPaths,
  type VmRecord,
} from '../../src/backends/qemu/state.js';
import { parseProcStat } from '../../src/host/proc.js';
import { qemuBinaryFor } from '../../src/backends/qemu/layout.js';
import { parseVmSpec } from '../../src/schema.js';

// Captured from /proc/self/stat on the project machine.
const CAT_STAT =
  '13811 (cat) R 13809 13809 3540 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 364296 3133440 390 18446744073709551615 93863572107264 93863572127145 140731372369200 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 93863572143152 93863572144768 93863748599808 140731372370658 140731372370678 140731372370678 140731372371947 0';

describe('parseProcStat', () => {
  it('reads pid, state, ppid and start time', () => {
    expect(parseProcStat(CAT_STAT)).toEqual({ pid: 13811, comm: 'cat', state: 'R', ppid: 13809, startTime: 364296 });
  });

  it('survives a comm with spaces and parentheses', () => {
    const text = CAT_STAT.replace('(cat)', '(qemu) Z (x)');
    expect(parseProcStat(text)).toMatchObject({ comm: 'qemu) Z (x', state: 'R', startTime: 364296 });
  });

  it('rejects garbage', () => {
    expect(parseProcStat('')).toBeUndefined();
    expect(parseProcStat('12 (x')).toBeUndefined();
    expect(parseProcStat('12 (x) S 1')).toBeUndefined();
  });
});

const cmdline = (...args: string[]) => `${args.join('\0')}\0`;

describe('cmdlineHasName / isLiveQemu', () => {
  const qemu = cmdline('qemu-system-x86_64', '-name', 'web-1', '-accel', 'tcg');
  it('matches the exact -name value only', () => {
    expect(cmdlineHasName(qemu, 'web-1')).toBe(true);
    expect(cmdlineHasName(qemu, 'web')).toBe(false);
    expect(cmdlineHasName(cmdline('qemu', '-name', 'guest=web,debug-threads=on'), 'web')).toBe(true);
    expect(cmdlineHasName(cmdline('bash', 'web-1'), 'web-1')).toBe(false);
  });

  it('treats zombies, missing processes and reused pids as dead', () => {
    const stat = parseProcStat(CAT_STAT)!;
    expect(isLiveQemu({ stat, cmdline: qemu }, 'web-1')).toBe(true);
    expect(isLiveQemu({ stat: { ...stat, state: 'Z' }, cmdline: qemu }, 'web-1')).toBe(false);
    expect(isLiveQemu(undefined, 'web-1')).toBe(false);
    expect(isLiveQemu({ stat, cmdline: cmdline('nginx', '-g', 'daemon off;') }, 'web-1')).toBe(false);
  });
});

function record(over: Partial<VmRecord> = {}): VmRecord {
  const spec = parseVmSpec({ name: 'web-1' });
  return {
    version: 1,
    name: 'web-1',
    spec,
    fingerprint: 'f',
    createdAt: '2025-01-01T00:00:00Z',
    phase: 'ready',
    desiredState: 'running',
    boot: { kind: 'kernel', kernel: '/k' },
    arch: 'x86_64',
    disks: [],
    paths: vmPaths('/s', '/r', 'web-1'),
    ...over,
  };
}

describe('reconcile', () => {
  const live = { stat: parseProcStat(CAT_STAT.replace('13811', '500'))!, cmdline: cmdline('qemu', '-name', 'web-1') };
  const zombie = { ...live, stat: { ...live.stat, state: 'Z' } };
  const cases: [string, VmRecord, typeof live | undefined, boolean, { state: string; reason?: string }][] = [
    ['live process', record(), live, false, { state: 'running' }],
    ['recorded running, process gone', record(), undefined, false, { state: 'stopped', reason: 'crashed' }],
    ['recorded running, zombie', record(), zombie, false, { state: 'stopped', reason: 'crashed' }],
    ['stopped on purpose', record({ desiredState: 'stopped' }), undefined, false, { state: 'stopped' }],
    [
      'create failed',
      record({ desiredState: 'stopped', stopReason: 'create-failed' }),
      undefined,
      false,
      { state: 'stopped', reason: 'create-failed' },
    ],
    ['creator still working', record({ phase: 'creating' }), undefined, true, { state: 'creating' }],
    ['creator died', record({ phase: 'creating' }), undefined, false, { state: 'stopped', reason: 'create-failed' }],
    ['running although marked stopped', record({ desiredState: 'stopped' }), live, false, { state: 'running' }],
  ];
  it.each(cases)('%s', (_what, rec, proc, creatorAlive, expected) => {
    const r = reconcile(rec, proc, creatorAlive);
    expect(r.state).toBe(expected.state);
    expect(r.reason).toBe(expected.reason);
    if (expected.state === 'running') expect(r.pid).toBe(500);
  });

  it('a creating record whose QEMU ran (creator killed after the launch) crashed, it never failed to create', () => {
    expect(reconcile(record({ phase: 'creating' }), undefined, false, true)).toEqual({
      state: 'stopped',
      reason: 'crashed',
    });
    expect(reconcile(record({ phase: 'creating' }), live, false, true).state).toBe('running');
    expect(reconcile(record({ phase: 'creating' }), undefined, true, true).state).toBe('creating');
  });
});

describe('completing an interrupted create', () => {
  it('reads the accelerator from a QEMU command line', () => {
    expect(accelFromCmdline(cmdline('qemu', '-name', 'a', '-accel', 'tcg,tb-size=64', '-m', '256'))).toBe('tcg');
    expect(accelFromCmdline(cmdline('qemu', '-accel', 'kvm', '-cpu', 'host'))).toBe('kvm');
    expect(accelFromCmdline(cmdline('qemu', '-name', 'a'))).toBeUndefined();
    expect(accelFromCmdline(undefined)).toBeUndefined();
  });

  it('writes what the launch would have: ready, meant to run, pid, accel, start time', () => {
    const creating = record({ phase: 'creating', stopReason: 'start-failed', lastError: 'x' });
    const running = completedRecord(creating, { pid: 42, accel: 'tcg', startedAt: '2025-01-01T00:00:01Z' });
    expect(running).toMatchObject({ phase: 'ready', desiredState: 'running', pid: 42, accel: 'tcg' });
    expect(running).toMatchObject({ startedAt: '2025-01-01T00:00:01Z', stopReason: undefined, lastError: undefined });
    expect(reconcile(running, undefined)).toEqual({ state: 'stopped', reason: 'crashed' });
    const stopped = completedRecord(creating, { startedAt: 'ignored without a pid' });
    expect(stopped).toMatchObject({ phase: 'ready', pid: undefined, startedAt: undefined });
  });
});

describe('socketPaths', () => {
  it('keeps sockets in the VM dir when they fit', () => {
    expect(socketPaths('/home/u/.local/state/localvm/vms/a', '/run/x')).toEqual({
      qmpSocket: '/home/u/.local/state/localvm/vms/a/qmp.sock',
      qgaSocket: '/home/u/.local/state/localvm/vms/a/qga.sock',
    });
  });

  it('moves them to a short, stable per-VM dir under runDir when the VM dir is too long', () => {
    const long = `/tmp/${'d'.repeat(90)}/vms/a-vm-name`;
    const a = socketPaths(long, '/tmp/localvm-0');
    expect(a.socketDir).toMatch(/^\/tmp\/localvm-0\/[0-9a-f]{12}$/);
    expect(a.qgaSocket.startsWith(`${a.socketDir}/`)).toBe(true);
    expect(Buffer.byteLength(a.qmpSocket)).toBeLessThanOrEqual(MAX_SOCKET_PATH);
    expect(socketPaths(long, '/tmp/localvm-0')).toEqual(a);
    expect(socketPaths(`${long}2`, '/tmp/localvm-0').socketDir).not.toBe(a.socketDir);
  });

  it('measures bytes, not characters', () => {
    const dir = `/tmp/${'é'.repeat(48)}`; // 96 bytes, 53 characters
    expect(socketPaths(dir, '/r').socketDir).toBeDefined();
  });

  it('refuses a run dir that is itself too long', () => {
    expect(() => socketPaths(`/${'x'.repeat(120)}`, `/${'y'.repeat(100)}`)).toThrow(/too long/);
  });
});

describe('qemuBinaryFor', () => {
  it('accepts a binary or a directory', () => {
    expect(qemuBinaryFor(undefined, 'aarch64')).toBe('qemu-system-aarch64');
    expect(qemuBinaryFor('/opt/q/bin', 'x86_64')).toBe('/opt/q/bin/qemu-system-x86_64');
    expect(qemuBinaryFor('/opt/q/bin/qemu-system-x86_64', 'x86_64')).toBe('/opt/q/bin/qemu-system-x86_64');
  });
});
