/**
 * Issue 10, defect 2: a `localvm create` killed (SIGKILL) the moment QEMU has daemonized
 * leaves vm.json in phase `creating` with QEMU running. Before the fix the next create
 * adopted it without completing the record, so after `disk add` and a QEMU crash the VM
 * showed `stopped (create-failed)` instead of `crashed`, and the next create deleted it
 * and made a new one: the disk was gone. A `start` killed the same way left the record
 * saying `stopped`, so a later crash showed as a plain stop. Built CLI, real QEMU, a
 * LOCALVM_HOME of its own.
 */
import { execFile, spawn } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VmInfo } from '../../src/backend.js';
import { createQemuBackend } from '../../src/backends/qemu/index.js';
import { qemuImg } from '../../src/backends/qemu/qemuImg.js';
import type { VmRecord } from '../../src/backends/qemu/state.js';
import { loadConfig } from '../../src/config.js';
import { createExecaRunner } from '../../src/runner.js';
import { parseVmSpec, specFingerprint, type VmSpec } from '../../src/schema.js';
import { ensureBuilt, repo } from '../fixtures/build.js';
import { qemuProcessesOf } from '../fixtures/qemuProcs.js';
import { rejection } from '../fixtures/rejection.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';

const skip = await missingQemuOrTiny();
const cli = join(repo, 'dist/cli/main.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

describe.skipIf(skip)('a create killed while QEMU daemonizes (built CLI, real QEMU)', () => {
  const home = mkdtempSync(join(tmpdir(), 'lvm-interrupted-'));
  const state = join(home, 'state');
  const env = { ...process.env, LOCALVM_HOME: state, LOCALVM_RUN_DIR: join(home, 'run') };
  const localvm = (...args: string[]) =>
    new Promise<Run>((resolve) => {
      execFile(process.execPath, [cli, ...args], { env, timeout: 240_000 }, (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr });
      });
    });
  /** The `{"error": ...}` line a failed command prints on stderr (progress lines come before it). */
  const errorOf = (run: Run) =>
    JSON.parse(run.stderr.split('\n').find((l) => l.startsWith('{"error"')) ?? '{}') as {
      error?: { code: string; hint?: string };
    };
  const record = (name: string) => JSON.parse(readFileSync(join(state, 'vms', name, 'vm.json'), 'utf8')) as VmRecord;

  /**
   * Runs `localvm VERB NAME` and SIGKILLs it as soon as QEMU has written its pidfile, before
   * the CLI records the launch. Tries again (after `undo`) when the CLI was quicker.
   */
  async function interrupted(verb: 'create' | 'start', name: string, cut: (r: VmRecord) => boolean, undo: string[]) {
    const pidFile = join(state, 'vms', name, 'qemu.pid');
    for (let attempt = 1; attempt <= 5; attempt++) {
      const child = spawn(process.execPath, [cli, verb, name, '--json'], { env, stdio: 'ignore' });
      const exited = new Promise((r) => child.once('exit', r));
      while (!existsSync(pidFile) && child.exitCode === null) await new Promise((r) => setTimeout(r, 1));
      child.kill('SIGKILL');
      await exited;
      // QEMU finishes daemonizing on its own: wait for the daemon.
      for (let i = 0; i < 500 && !(await qemuProcessesOf(home, name)).some((p) => p.daemon); i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      if (cut(record(name))) return;
      await localvm(...undo, name);
    }
    throw new Error(`${verb} recorded the launch before it could be killed, 5 times`);
  }
  const interruptedCreate = (name: string) => interrupted('create', name, (r) => r.phase === 'creating', ['delete']);

  /** SIGKILLs every QEMU of VM `name` and waits until they are gone. */
  async function crash(name: string): Promise<void> {
    for (const p of await qemuProcessesOf(home, name)) process.kill(p.pid, 'SIGKILL');
    for (let i = 0; i < 250 && (await qemuProcessesOf(home, name)).length > 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  beforeAll(() => ensureBuilt('dist/cli/main.js'), 300_000);
  afterAll(async () => {
    for (const name of ['cut', 'cut-disk', 'cut-start']) await localvm('delete', name);
    rmSync(home, { recursive: true, force: true });
  });

  it('the next create adopts it and completes the record; a later crash is `crashed`; the disk survives', async () => {
    await interruptedCreate('cut');
    const [daemon] = (await qemuProcessesOf(home, 'cut')).filter((p) => p.daemon);
    expect(daemon).toBeDefined();
    expect(record('cut')).toMatchObject({ phase: 'creating' });

    const adopted = await localvm('create', 'cut', '--json');
    expect(adopted.code, adopted.stderr).toBe(0);
    expect(JSON.parse(adopted.stdout)).toMatchObject({ adopted: true, vm: { state: 'running', pid: daemon!.pid } });
    expect(record('cut')).toMatchObject({ phase: 'ready', desiredState: 'running', pid: daemon!.pid, accel: 'tcg' });

    const added = await localvm('disk', 'add', 'cut', 'data', '16M', '--json');
    expect(added.code, added.stderr).toBe(0);
    const disk = record('cut').disks.find((d) => d.path.includes('data'));
    expect(disk && existsSync(disk.path)).toBe(true);

    await crash('cut');
    const info = await localvm('info', 'cut', '--json');
    expect(JSON.parse(info.stdout)).toMatchObject({ state: 'stopped', reason: 'crashed' });

    // The disk changed the spec, so this create may not adopt it: a CONFLICT, never a re-create.
    const again = await localvm('create', 'cut', '--json');
    if (again.code === 0) {
      expect(JSON.parse(again.stdout)).toMatchObject({ adopted: true });
    } else {
      expect(errorOf(again)).toMatchObject({ error: { code: 'CONFLICT' } });
      expect(errorOf(again).error?.hint).toContain('localvm delete cut');
    }
    expect(existsSync(disk!.path)).toBe(true);
    expect(record('cut').disks.map((d) => d.path)).toContain(disk!.path);
    expect(record('cut').createdAt).toBe(JSON.parse(info.stdout).createdAt);
  });

  it('a disk added without a second create completes the record first', async () => {
    await interruptedCreate('cut-disk');
    const added = await localvm('disk', 'add', 'cut-disk', 'data', '16M', '--json');
    expect(added.code, added.stderr).toBe(0);
    expect(record('cut-disk')).toMatchObject({ phase: 'ready', desiredState: 'running', accel: 'tcg' });
    const disk = record('cut-disk').disks.find((d) => d.path.includes('data'))!;

    await crash('cut-disk');
    expect(JSON.parse((await localvm('info', 'cut-disk', '--json')).stdout)).toMatchObject({ reason: 'crashed' });
    const again = await localvm('create', 'cut-disk', '--json');
    expect(again.code).not.toBe(0);
    expect(errorOf(again), again.stderr).toMatchObject({ error: { code: 'CONFLICT' } });
    expect(existsSync(disk.path)).toBe(true);
  });

  it('a start killed as QEMU daemonizes: the next start completes the record, a later crash is `crashed`', async () => {
    const created = await localvm('create', 'cut-start', '--no-wait', '--json');
    expect(created.code, created.stderr).toBe(0);
    expect((await localvm('stop', 'cut-start', '--force')).code).toBe(0);
    await interrupted('start', 'cut-start', (r) => r.desiredState === 'stopped', ['stop', '--force']);
    const [daemon] = (await qemuProcessesOf(home, 'cut-start')).filter((p) => p.daemon);
    expect(daemon).toBeDefined();

    const started = await localvm('start', 'cut-start', '--json');
    expect(started.code, started.stderr).toBe(0);
    expect(record('cut-start')).toMatchObject({ desiredState: 'running', pid: daemon!.pid, accel: 'tcg' });
    await crash('cut-start');
    expect(JSON.parse((await localvm('info', 'cut-start', '--json')).stdout)).toMatchObject({ reason: 'crashed' });
  });
});

describe.skipIf(skip)('a VM whose create failed takes no user data, and is replaced only while it holds none', () => {
  const home = mkdtempSync(join(tmpdir(), 'lvm-failed-'));
  const config = loadConfig(process.env, { stateDir: join(home, 'state'), runDir: join(home, 'run'), accel: 'tcg' });
  const runner = createExecaRunner();
  const backend = createQemuBackend({ config, runner });
  const name = 'half';
  const spec = (ports: { host: number; guest: number }[] = []) =>
    parseVmSpec({ name, image: 'tiny', memory: 128, backend: 'qemu', ports });
  const same = (wanted: VmSpec) => (info: VmInfo) => info.fingerprint === specFingerprint(wanted);

  afterAll(async () => {
    await backend.delete(name);
    rmSync(home, { recursive: true, force: true });
  });

  it('refuses disk add and snapshot create (CONFLICT); createOrAdopt refuses it while it holds a snapshot', async () => {
    // A host port that is taken makes QEMU refuse to start after the VM dir and record exist.
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const failed = await rejection(backend.create(spec([{ host: port, guest: 22 }])));
    server.close();
    expect(failed.code).toBe('TRANSIENT');
    expect(await backend.info(name)).toMatchObject({ state: 'stopped', reason: 'create-failed' });

    expect((await rejection(backend.diskAdd(name, { name: 'data', size: 16 << 20 }))).code).toBe('CONFLICT');
    expect((await rejection(backend.snapshotCreate(name, 's1'))).code).toBe('CONFLICT');
    expect(existsSync(join(config.stateDir, 'vms', name, 'disk-data.qcow2'))).toBe(false);

    // A record from before this rule may hold a snapshot: then the next create must not replace it.
    const stateDisk = join(config.stateDir, 'vms', name, 'state.qcow2');
    expect((await runner.run(qemuImg.snapshot({ path: stateDisk, op: 'create', name: 'kept' }))).exitCode).toBe(0);
    const wanted = spec();
    const refused = await rejection(backend.createOrAdopt(wanted, same(wanted)));
    expect(refused).toMatchObject({ code: 'CONFLICT', details: { snapshots: ['kept'] } });
    expect(existsSync(stateDisk)).toBe(true);

    expect((await runner.run(qemuImg.snapshot({ path: stateDisk, op: 'delete', name: 'kept' }))).exitCode).toBe(0);
    const created = await backend.createOrAdopt(wanted, same(wanted));
    expect(created).toMatchObject({ adopted: false, info: { state: 'running' } });
  });
});
