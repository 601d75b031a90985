/**
 * `localvm doctor` against real QEMU, real files and real processes: each finding is made
 * for real (kill -9 a QEMU, remove a disk file, a lock left by a SIGKILLed process, a QEMU
 * whose directory was deleted, an interrupted create, a record rewritten under a running
 * QEMU, a test VM whose session runner died), then found, fixed by `--fix`, and gone.
 * The CLI runs in-process, so exit codes and `--json` output are the command's own.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createQemuBackend, type QemuBackend } from '../../src/backends/qemu/index.js';
import { findTinyImage } from '../../src/backends/qemu/image/index.js';
import { qemuImg } from '../../src/backends/qemu/qemuImg.js';
import { buildQemuCommand } from '../../src/backends/qemu/cmdline.js';
import { launchFor } from '../../src/backends/qemu/layout.js';
import { readPidFile, readRecord, writeRecord } from '../../src/backends/qemu/state.js';
import { runCli } from '../../src/cli/program.js';
import { loadConfig, type LocalVmConfig } from '../../src/config.js';
import { probeProcess, processStartTime } from '../../src/host/proc.js';
import type { DoctorFinding } from '../../src/operations/doctor.js';
import { scanQemus } from '../../src/operations/doctor/gather.js';
import { createExecaRunner, runChecked } from '../../src/runner.js';
import { parseVmSpec } from '../../src/schema.js';
import { newSession, sessionFile, sessionIdFor, sessionVmName, updateSession } from '../../src/vitest/session.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';

const skip = (await missingQemuOrTiny()) !== undefined;
const runner = createExecaRunner();
let root: string;
let config: LocalVmConfig;
let backend: QemuBackend;
const prefix = loadConfig().testPrefix;

/** `localvm doctor ARGS --json`, in-process: the exit code and the findings printed. */
async function doctorCli(...args: string[]): Promise<{ code: number; findings: DoctorFinding[]; text: string }> {
  let out = '';
  let err = '';
  const code = await runCli(['doctor', ...args], {
    stdout: { write: (s) => void (out += String(s)) },
    stderr: { write: (s) => void (err += String(s)) },
    env: process.env,
    context: { config, runner },
  });
  if (err) throw new Error(`doctor wrote to stderr: ${err}`);
  const json = args.includes('--json');
  return { code, findings: json ? (JSON.parse(out) as DoctorFinding[]) : [], text: out };
}

const summary = (fs: DoctorFinding[]) => fs.map((f) => `${f.code}:${f.vm ?? basename(f.path ?? '')}:${f.status}`);

/** Runs doctor, expects `codes` about `vm`, fixes them (with `force` if asked), and expects a clean home. */
async function findFixAndClear(codes: string[], vm: string | undefined, force = false): Promise<DoctorFinding[]> {
  const before = await doctorCli('--json');
  expect(before.findings.map((f) => f.code).sort()).toEqual([...codes].sort());
  if (vm) for (const f of before.findings) expect(f.vm).toBe(vm);
  expect(before.code).toBe(1);
  const fixed = await doctorCli('--json', '--fix', ...(force ? ['--force'] : []));
  expect(summary(fixed.findings).filter((s) => !s.endsWith(':fixed'))).toEqual([]);
  expect(fixed.code).toBe(0);
  const after = await doctorCli('--json');
  expect(after.findings).toEqual([]);
  expect(after.code).toBe(0);
  return fixed.findings;
}

async function waitFor<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, ms = 30_000): Promise<T> {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    const v = await fn();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Starts `node` with `args`; resolves once it printed `marker`. */
async function nodeChild(args: string[], marker: string, env: NodeJS.ProcessEnv = process.env): Promise<ChildProcess> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], env });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(`child to print ${marker}`, () => (out.includes(marker) ? true : undefined));
  return child;
}

async function sigkill(child: ChildProcess): Promise<void> {
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}

const spec = (name: string, extra: Record<string, unknown> = {}) => parseVmSpec({ name, memory: 128, ...extra });

describe.skipIf(skip)('localvm doctor (real QEMU, files and processes)', () => {
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'lvm-dr-'));
    // A cache of our own holding only the current tiny build (hard links), so "unused
    // image" speaks of this test's images only.
    const base = loadConfig();
    const tiny = await findTinyImage(base);
    if (!tiny) throw new Error('no tiny image');
    const cacheDir = join(root, 'cache');
    const imageDir = join(cacheDir, 'images', basename(tiny.dir));
    mkdirSync(imageDir, { recursive: true });
    for (const f of readdirSync(tiny.dir)) linkSync(join(tiny.dir, f), join(imageDir, f));
    if (existsSync(join(base.cacheDir, 'accel.json'))) {
      writeFileSync(join(cacheDir, 'accel.json'), readFileSync(join(base.cacheDir, 'accel.json')));
    }
    config = loadConfig(process.env, {
      stateDir: join(root, 'state'),
      runDir: join(root, 'run'),
      cacheDir,
      accel: 'auto',
    });
    backend = createQemuBackend({ config, runner });
    await backend.create(spec('dr-run'));
    await backend.create(spec('dr-stop'));
    await backend.stop('dr-stop', { force: true });
    await backend.create(spec('dr-disk', { disks: [{ name: 'data', size: '64M' }] }));
    await backend.stop('dr-disk', { force: true });
  });

  afterAll(async () => {
    if (!root) return;
    for (const vm of await backend.list().catch(() => [])) await backend.delete(vm.name).catch(() => undefined);
    for (const q of await scanQemus(config.stateDir)) process.kill(q.pid, 'SIGKILL');
    rmSync(root, { recursive: true, force: true });
  });

  it('finds nothing in a healthy home (one VM running, two stopped) and exits 0', async () => {
    const { code, findings } = await doctorCli('--json');
    expect(findings).toEqual([]);
    expect(code).toBe(0);
    const text = await doctorCli();
    expect(text.text).toContain('no findings');
  });

  it('kill -9 of a running QEMU: the record is reconciled, stale sockets and pidfile removed', async () => {
    const pid = (await backend.info('dr-run')).pid as number;
    process.kill(pid, 'SIGKILL');
    await waitFor('QEMU to go', () => (alive(pid) ? undefined : true));
    const text = await doctorCli();
    expect(text.code).toBe(1);
    expect(text.text).toContain('RECORD_RUNNING_QEMU_DEAD');
    const fixed = await findFixAndClear(
      ['RECORD_RUNNING_QEMU_DEAD', 'STALE_SOCKET', 'STALE_SOCKET', 'STALE_PIDFILE'],
      'dr-run',
    );
    expect(fixed.find((f) => f.code === 'RECORD_RUNNING_QEMU_DEAD')?.outcome).toContain('crashed');
    expect(await backend.info('dr-run')).toMatchObject({ state: 'stopped', reason: 'crashed' });
  });

  it('a QEMU that died as a zombie (its parent never reaps it): the record is reconciled', async () => {
    const path = join(config.stateDir, 'vms', 'dr-stop', 'vm.json');
    const record = await readRecord(path);
    if (!record) throw new Error('no record');
    const cmd = buildQemuCommand(launchFor(record, 'tcg', config.qemuBinary));
    // sh starts QEMU (not daemonized) in the background and becomes `sleep`, which never waits for it.
    const parent = spawn(
      'sh',
      ['-c', '"$0" "$@" & exec sleep 600', cmd.file, ...cmd.args.filter((a) => a !== '-daemonize')],
      {
        stdio: 'ignore',
      },
    );
    try {
      const pid = await waitFor('the pidfile', () => readPidFile(record.paths.pidFile));
      await writeRecord({ ...record, desiredState: 'running', pid, startedAt: new Date().toISOString() });
      expect((await doctorCli('--json')).findings).toEqual([]); // coherent while it runs
      process.kill(pid, 'SIGKILL');
      await waitFor('a zombie', async () => ((await probeProcess(pid))?.stat?.state === 'Z' ? true : undefined));
      const fixed = await findFixAndClear(
        ['RECORD_RUNNING_QEMU_DEAD', 'STALE_SOCKET', 'STALE_SOCKET', 'STALE_PIDFILE'],
        'dr-stop',
      );
      expect(fixed.find((f) => f.code === 'RECORD_RUNNING_QEMU_DEAD')?.seen).toContain(`pid ${pid} is a zombie`);
      expect(await readRecord(path)).toMatchObject({ desiredState: 'stopped', stopReason: 'crashed' });
    } finally {
      parent.kill('SIGKILL');
    }
    // Back to a plain stopped VM for the tests below.
    const now = await readRecord(path);
    if (now) await writeRecord({ ...now, stopReason: undefined });
  });

  it('a removed disk file: found; dropping it from the record needs --force', async () => {
    const record = await readRecord(join(config.stateDir, 'vms', 'dr-disk', 'vm.json'));
    const disk = record?.disks.find((d) => d.id === 'disk-data')?.path as string;
    rmSync(disk);
    const found = await doctorCli('--json');
    expect(found.findings).toMatchObject([{ code: 'MISSING_FILE', vm: 'dr-disk', path: disk, needsForce: true }]);
    const unforced = await doctorCli('--json', '--fix');
    expect(summary(unforced.findings)).toEqual(['MISSING_FILE:dr-disk:skipped']);
    expect(unforced.code).toBe(1);
    await findFixAndClear(['MISSING_FILE'], 'dr-disk', true);
    const after = await readRecord(join(config.stateDir, 'vms', 'dr-disk', 'vm.json'));
    expect(after?.disks.map((d) => d.id)).toEqual([]);
    expect(after?.spec.disks).toEqual([]);
  });

  it('an orphan disk file in a VM directory is only removed with --force', async () => {
    const orphan = join(config.stateDir, 'vms', 'dr-stop', 'disk-old.qcow2');
    await runChecked(runner, qemuImg.create({ path: orphan, format: 'qcow2', size: 1024 * 1024 }));
    const unforced = await doctorCli('--json', '--fix');
    expect(summary(unforced.findings)).toEqual(['ORPHAN_FILE:dr-stop:skipped']);
    expect(existsSync(orphan)).toBe(true);
    await findFixAndClear(['ORPHAN_FILE'], 'dr-stop', true);
    expect(existsSync(orphan)).toBe(false);
  });

  it('a lock left by a SIGKILLed holder is stale; while the holder lives the VM is busy and nothing is said', async () => {
    const lock = join(config.stateDir, 'locks', 'dr-stop.lock');
    const lockModule = resolve('src/host/lock.ts');
    const holder = await nodeChild(
      [
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        `import { acquireFileLock } from ${JSON.stringify(lockModule)};
         await acquireFileLock(${JSON.stringify(lock)}, { timeoutMs: 5000, what: 'start' });
         console.log('locked'); setInterval(() => {}, 1000);`,
      ],
      'locked',
    );
    // A live holder: an operation under way, so its VM is not judged (even made incoherent).
    const record = await readRecord(join(config.stateDir, 'vms', 'dr-stop', 'vm.json'));
    if (!record) throw new Error('no record');
    await writeRecord({ ...record, desiredState: 'running', pid: 999_999 });
    expect((await doctorCli('--json')).findings).toEqual([]);
    await writeRecord(record);
    await sigkill(holder);
    const fixed = await findFixAndClear(['STALE_LOCK'], undefined);
    expect(fixed[0]).toMatchObject({ path: lock, pid: holder.pid });
    expect(existsSync(lock)).toBe(false);
  });

  it('a QEMU whose VM directory was deleted is killed', async () => {
    const info = await backend.create(spec('dr-stray'));
    const pid = info.pid as number;
    rmSync(join(config.stateDir, 'vms', 'dr-stray'), { recursive: true, force: true });
    expect(alive(pid)).toBe(true);
    const fixed = await findFixAndClear(['ORPHAN_QEMU'], 'dr-stray');
    expect(fixed[0]).toMatchObject({ pid, outcome: `killed QEMU pid ${pid}` });
    expect((await scanQemus(config.stateDir)).map((q) => q.vm)).not.toContain('dr-stray');
  });

  it('an interrupted create (creator SIGKILLed) is deleted', async () => {
    const dir = join(config.stateDir, 'vms', 'dr-half');
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'tests/fixtures/qemu-create-child.ts', config.stateDir, config.runDir, 'dr-half'],
      { stdio: 'ignore', env: { ...process.env, LOCALVM_CACHE: config.cacheDir } },
    );
    const exited = new Promise((r) => child.once('exit', r));
    await waitFor('vm.json of dr-half', () => (existsSync(join(dir, 'vm.json')) ? true : undefined), 60_000);
    child.kill('SIGKILL');
    await exited;
    const before = await doctorCli('--json');
    expect(before.findings.map((f) => f.code)).toContain('HALF_CREATED');
    // Whatever the creator held is stale now: its lifecycle lock (and a QEMU if it got that far).
    for (const f of before.findings) expect(['HALF_CREATED', 'STALE_LOCK']).toContain(f.code);
    await doctorCli('--json', '--fix').then((r) => expect(r.code).toBe(0));
    expect((await doctorCli('--json')).findings).toEqual([]);
    expect(existsSync(dir)).toBe(false);
    expect((await scanQemus(config.stateDir)).map((q) => q.vm)).not.toContain('dr-half');
  });

  it('a live QEMU whose record says stopped is adopted', async () => {
    const info = await backend.start('dr-run');
    const path = join(config.stateDir, 'vms', 'dr-run', 'vm.json');
    const record = await readRecord(path);
    if (!record) throw new Error('no record');
    await writeRecord({ ...record, desiredState: 'stopped', pid: undefined });
    const fixed = await findFixAndClear(['QEMU_RUNNING_RECORD_STOPPED'], 'dr-run');
    expect(fixed[0]?.pid).toBe(info.pid);
    expect(await readRecord(path)).toMatchObject({ desiredState: 'running', pid: info.pid });
  });

  it('a test VM whose fixture session runner died is deleted with its session record', async () => {
    const runnerChild = await nodeChild(['-e', 'console.log("up"); setInterval(() => {}, 1000)'], 'up');
    const pid = runnerChild.pid as number;
    const startTime = await processStartTime(pid);
    const id = sessionIdFor(pid, startTime);
    const name = sessionVmName(prefix, id, '1');
    await updateSession(config.stateDir, id, () => ({
      ...newSession(id, pid, startTime),
      vms: [{ name, pid, startTime }],
    }));
    await backend.create(spec(name));
    expect((await doctorCli('--json')).findings).toEqual([]); // its session lives
    await sigkill(runnerChild);
    await findFixAndClear(['TEST_VM_ORPHANED', 'STALE_SESSION'], undefined);
    expect(existsSync(join(config.stateDir, 'vms', name))).toBe(false);
    expect(existsSync(sessionFile(config.stateDir, id))).toBe(false);
  });

  it('an old image build nothing uses is reported as info: exit 0, left by --fix', async () => {
    const current = (await findTinyImage(config))?.dir as string;
    const old = join(config.cacheDir, 'images', 'tiny-0000000000000000');
    mkdirSync(old);
    const image = JSON.parse(readFileSync(join(current, 'image.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(old, 'image.json'), JSON.stringify({ ...image, builtAt: '2000-01-01T00:00:00.000Z' }));
    for (const f of readdirSync(current)) if (f !== 'image.json') linkSync(join(current, f), join(old, f));
    const found = await doctorCli('--json');
    expect(found.findings).toMatchObject([{ code: 'UNUSED_IMAGE', path: old, severity: 'info', fixable: false }]);
    expect(found.code).toBe(0);
    const fixed = await doctorCli('--json', '--fix');
    expect(summary(fixed.findings)).toEqual(['UNUSED_IMAGE:tiny-0000000000000000:open']);
    expect(existsSync(old)).toBe(true);
    rmSync(old, { recursive: true });
  });
});
