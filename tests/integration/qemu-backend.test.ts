/**
 * The QEMU backend against real QEMU (TCG here). One VM is shared by most tests because
 * each boot costs seconds under software emulation; the tests that must kill or restart
 * a VM run last, in file order.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createQemuBackend, type QemuBackend } from '../../src/backends/qemu/index.js';
import { loadConfig, type LocalVmConfig } from '../../src/config.js';
import { isLocalVmError } from '../../src/errors.js';
import { createExecaRunner } from '../../src/runner.js';
import { parseVmSpec, type VmSpecInput } from '../../src/schema.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';

const skip = (await missingQemuOrTiny()) !== undefined;

const runner = createExecaRunner();
let root: string;
let config: LocalVmConfig;
let backend: QemuBackend;
const prefix = loadConfig().testPrefix;
const MAIN = `${prefix}qb-main`;
const measured: Record<string, string> = {};

/** Pids of live (non-zombie) QEMU processes whose `-name` is `name`, from /proc. */
function qemuPids(name: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      const i = cmdline.indexOf('-name');
      if (i === -1 || cmdline[i + 1] !== name) continue;
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z') pids.push(Number(entry));
    } catch {
      // the process exited while we looked
    }
  }
  return pids;
}

async function waitReady(name: string, timeoutMs = 90_000): Promise<number> {
  const started = performance.now();
  let last = '';
  while (performance.now() - started < timeoutMs) {
    const p = await backend.guest(name).probe(2_000);
    if (p.ready) return performance.now() - started;
    last = p.detail;
    if (p.detail.startsWith('process not running')) break;
  }
  throw new Error(`${name} not ready: ${last}\n${await backend.consoleTail?.(name, 20)}`);
}

const spec = (name: string, extra: Partial<VmSpecInput> = {}) => parseVmSpec({ name, memory: 128, ...extra });

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  try {
    await p;
  } catch (error) {
    if (isLocalVmError(error, code as never)) return;
    throw error;
  }
  throw new Error(`expected ${code}, but it resolved`);
}

describe.skipIf(skip)('QEMU backend (real QEMU)', () => {
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'lvm-qb-'));
    config = loadConfig(process.env, { stateDir: join(root, 'state'), runDir: join(root, 'run'), accel: 'auto' });
    backend = createQemuBackend({ config, runner });
    const started = performance.now();
    const info = await backend.create(spec(MAIN));
    expect(info.state).toBe('running');
    await waitReady(MAIN);
    measured['launch → agent ready'] = `${Math.round(performance.now() - started)} ms`;
  });

  afterAll(async () => {
    if (backend) for (const vm of await backend.list()) await backend.delete(vm.name);
    for (const name of [MAIN, `${prefix}qb-b`, `${prefix}qb-child`, `${prefix}qb-disk`]) {
      for (const pid of qemuPids(name)) process.kill(pid, 'SIGKILL');
    }
    if (root) rmSync(root, { recursive: true, force: true });
    if (Object.keys(measured).length) console.log('[qemu-backend] measured:', measured);
  });

  it('records a running VM: info, list, a private dir and an atomic vm.json', async () => {
    const info = await backend.info(MAIN);
    expect(info).toMatchObject({ name: MAIN, backend: 'qemu', state: 'running', accel: 'tcg', image: 'tiny' });
    expect(qemuPids(MAIN)).toEqual([info.pid]);
    expect(info.uptimeMs).toBeGreaterThan(0);
    expect(info.fingerprint).toMatch(/^[0-9a-f]{16}$/);
    expect((await backend.list()).map((v) => v.name)).toContain(MAIN);
    const dir = join(config.stateDir, 'vms', MAIN);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const record = JSON.parse(readFileSync(join(dir, 'vm.json'), 'utf8'));
    expect(record).toMatchObject({ version: 1, name: MAIN, desiredState: 'running', pid: info.pid, accel: 'tcg' });
    expect(record.accelReason).toMatch(/^chose tcg/);
    await expectCode(backend.create(spec(MAIN)), 'ALREADY_EXISTS');
    const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${info.pid}/status`, 'utf8'))?.[1];
    measured['QEMU RSS, idle tiny VM at -m 128'] = `${Math.round(Number(rss) / 1024)} MiB`;
  });

  it('execs with exit codes, stderr, env, stdin and cwd', async () => {
    const r = await backend.guest(MAIN).exec(['sh', '-c', 'echo "out:$GREETING"; pwd; cat; echo oops >&2; exit 3'], {
      env: { GREETING: 'hello world' },
      cwd: '/proc',
      stdin: 'from stdin\n',
    });
    expect(r.exitCode).toBe(3);
    expect(r.stdout).toBe('out:hello world\n/proc\nfrom stdin\n');
    expect(r.stderr).toBe('oops\n');
    expect(Buffer.from(r.stdoutBytes).toString()).toBe(r.stdout);
    expect((await backend.guest(MAIN).exec(['false'])).exitCode).toBe(1);
    const times: number[] = [];
    for (let i = 0; i < 7; i++) {
      const t = performance.now();
      expect((await backend.guest(MAIN).exec(['true'])).exitCode).toBe(0);
      times.push(performance.now() - t);
    }
    measured['exec `true` round trip (median of 7)'] = `${times.sort((a, b) => a - b)[3]!.toFixed(1)} ms`;
  });

  it('times out a guest command that runs too long', async () => {
    await expectCode(backend.guest(MAIN).exec(['sleep', '30'], { timeoutMs: 300 }), 'TIMEOUT');
    // The agent is usable right after.
    expect((await backend.guest(MAIN).exec(['echo', 'ok'])).stdout).toBe('ok\n');
  });

  it('round-trips a 1 MiB random binary file byte-exactly, with its mode', async () => {
    const data = randomBytes(1024 * 1024);
    let t = performance.now();
    await backend.guest(MAIN).putFile('/tmp/blob.bin', data, { mode: 0o640 });
    measured['put 1 MiB'] = `${Math.round(performance.now() - t)} ms`;
    t = performance.now();
    const back = await backend.guest(MAIN).getFile('/tmp/blob.bin');
    measured['get 1 MiB'] = `${Math.round(performance.now() - t)} ms`;
    const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
    expect(sha(back)).toBe(sha(data));
    const guest = await backend.guest(MAIN).exec(['sh', '-c', 'stat -c %a /tmp/blob.bin; sha256sum /tmp/blob.bin']);
    expect(guest.stdout).toBe(`640\n${sha(data)}  /tmp/blob.bin\n`);
    await expectCode(backend.guest(MAIN).getFile('/no/such/file'), 'COMMAND_FAILED');
  });

  it('passes raw QMP through and serializes concurrent agent sessions', async () => {
    expect(await backend.qmp(MAIN, 'query-status')).toMatchObject({ status: 'running', running: true });
    await expectCode(backend.qmp(MAIN, 'no-such-command'), 'COMMAND_FAILED');
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => backend.guest(MAIN).exec(['sh', '-c', `echo ${i}`])),
    );
    expect(results.map((r) => r.stdout)).toEqual(['0\n', '1\n', '2\n', '3\n', '4\n', '5\n']);
  });

  it('refuses missing images with NOT_FOUND and leaves nothing on disk', async () => {
    const name = `${prefix}qb-missing`;
    await expectCode(backend.create(spec(name, { image: join(root, 'absent.qcow2') })), 'NOT_FOUND');
    await expectCode(backend.create(spec(name, { kernel: join(root, 'absent-vmlinux') })), 'NOT_FOUND');
    const noTiny = createQemuBackend({ config, runner, findImage: async () => undefined });
    try {
      await noTiny.create(spec(name));
      expect.unreachable();
    } catch (error) {
      expect(isLocalVmError(error, 'NOT_FOUND')).toBe(true);
      expect((error as { hint: string }).hint).toMatch(/localvm image build/);
    }
    expect(existsSync(join(config.stateDir, 'vms', name))).toBe(false);
    await expectCode(backend.info(name), 'NOT_FOUND');
    await backend.delete(name); // deleting what does not exist succeeds
    expect((await backend.info(MAIN)).state).toBe('running');
  });

  it('records a create that failed half-way as stopped/create-failed with its error, and deletes it', async () => {
    // A host port that is already taken makes QEMU refuse to start after the VM dir exists.
    // The holder may let go of it soon, so the failure is TRANSIENT (createVmWithRetry retries).
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const name = `${prefix}qb-failed`;
    try {
      await expectCode(backend.create(spec(name, { ports: [{ host: port, guest: 22 }] })), 'TRANSIENT');
    } finally {
      server.close();
    }
    const info = await backend.info(name);
    expect(info).toMatchObject({ state: 'stopped', reason: 'create-failed' });
    expect(info.lastError).toMatch(/QEMU/);
    expect(qemuPids(name)).toEqual([]);
    expect((await backend.guest(name).probe(200)).detail).toBe('process not running (create-failed)');
    await backend.delete(name);
    expect(existsSync(join(config.stateDir, 'vms', name))).toBe(false);
  });

  it('boots a user image under a per-VM overlay with extra disks, updates it, and keeps long state dirs working', async () => {
    const image = join(root, 'base.raw');
    writeFileSync(image, Buffer.alloc(1024 * 1024));
    // A state dir so deep that the VM dir cannot hold its sockets (107-byte limit).
    const deep = join(root, 'd'.repeat(60), 'e'.repeat(40));
    const deepBackend = createQemuBackend({ config: { ...config, stateDir: deep }, runner });
    const name = `${prefix}qb-disk`;
    const info = await deepBackend.create(
      spec(name, { image, disks: [{ name: 'data', size: '16M' }], timeouts: { stopMs: 500 } }),
    );
    try {
      expect(info.state).toBe('running');
      const dir = join(deep, 'vms', name);
      const overlay = JSON.parse(
        (await runner.run({ file: 'qemu-img', args: ['info', '--output=json', '-U', join(dir, 'overlay.qcow2')] }))
          .stdout,
      );
      expect(overlay).toMatchObject({ format: 'qcow2', 'backing-filename': image, 'backing-filename-format': 'raw' });
      expect(existsSync(join(dir, 'disk-data.qcow2'))).toBe(true);
      expect(existsSync(join(dir, 'qmp.sock'))).toBe(false);
      expect(await deepBackend.qmp(name, 'query-status')).toMatchObject({ running: true });
      const updated = await deepBackend.update!(name, { ...info.spec!, memory: 192 });
      expect(updated.memory).toBe(192);
      const cmdline = readFileSync(`/proc/${updated.pid}/cmdline`, 'utf8').split('\0');
      expect(cmdline[cmdline.indexOf('-m') + 1]).toBe('192');
      expect(qemuPids(name)).toEqual([updated.pid]);
    } finally {
      await deepBackend.delete(name);
    }
    expect(qemuPids(name)).toEqual([]);
    expect(existsSync(join(deep, 'vms', name))).toBe(false);
  });

  it('keeps a VM created by a child process that exited running and usable; stopping one VM leaves the others', async () => {
    const child = `${prefix}qb-child`;
    const other = `${prefix}qb-b`;
    const fixture = resolve('tests/fixtures/qemu-create-child.ts');
    const run = await runner.run(
      { file: process.execPath, args: ['--import', 'tsx', fixture, config.stateDir, config.runDir, child] },
      { timeoutMs: 60_000 },
    );
    expect(run.exitCode, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ state: 'running' });
    await backend.create(spec(other));
    expect((await backend.info(child)).state).toBe('running');
    await backend.stop(other, { force: true });
    expect((await backend.info(other)).state).toBe('stopped');
    expect(qemuPids(other)).toEqual([]);
    await waitReady(child);
    expect((await backend.guest(child).exec(['echo', 'alive'])).stdout).toBe('alive\n');
    expect((await backend.info(MAIN)).state).toBe('running');
    await backend.delete(other);
    await backend.delete(child);
    expect(qemuPids(child)).toEqual([]);
  });

  it('stops gracefully through system_powerdown within the timeout', async () => {
    const pid = (await backend.info(MAIN)).pid!;
    const t = performance.now();
    const stopped = await backend.stop(MAIN, { timeoutMs: 10_000 });
    measured['graceful stop'] = `${Math.round(performance.now() - t)} ms`;
    expect(stopped.state).toBe('stopped');
    expect(stopped.reason).toBeUndefined();
    expect(qemuPids(MAIN)).toEqual([]);
    expect(existsSync(`/proc/${pid}/cmdline`) && qemuPids(MAIN).includes(pid)).toBe(false);
    expect(existsSync(join(config.stateDir, 'vms', MAIN, 'qga.sock'))).toBe(false);
  });

  it('starts exactly one QEMU for 10 concurrent starts, and survives 5 rapid start/stop cycles', async () => {
    const infos = await Promise.all(Array.from({ length: 10 }, () => backend.start(MAIN)));
    const pids = qemuPids(MAIN);
    expect(pids).toHaveLength(1);
    expect(new Set(infos.map((i) => i.pid))).toEqual(new Set(pids));
    // Another backend instance (as another process would) sees the same single VM.
    const second = createQemuBackend({ config, runner });
    expect((await second.start(MAIN)).pid).toBe(pids[0]);
    for (let i = 0; i < 5; i++) {
      expect((await backend.stop(MAIN, { force: true })).state).toBe('stopped');
      expect(qemuPids(MAIN)).toEqual([]);
      expect((await backend.start(MAIN)).state).toBe('running');
      expect(qemuPids(MAIN)).toHaveLength(1);
    }
  });

  it('reports a SIGKILLed QEMU as stopped/crashed, and starts it again', async () => {
    await waitReady(MAIN);
    const pid = (await backend.info(MAIN)).pid!;
    process.kill(pid, 'SIGKILL');
    let info = await backend.info(MAIN);
    for (let i = 0; i < 50 && info.state === 'running'; i++) {
      await new Promise((r) => setTimeout(r, 20));
      info = await backend.info(MAIN);
    }
    expect(info).toMatchObject({ state: 'stopped', reason: 'crashed' });
    expect((await backend.guest(MAIN).probe(500)).detail).toMatch(/process not running \(crashed\)/);
    await expectCode(backend.guest(MAIN).exec(['true']), 'CONFLICT');
    const restarted = await backend.start(MAIN);
    expect(restarted.state).toBe('running');
    expect(restarted.pid).not.toBe(pid);
    await waitReady(MAIN);
    expect((await backend.guest(MAIN).exec(['echo', 'back'])).stdout).toBe('back\n');
  });

  it('deletes idempotently, killing the process', async () => {
    const pid = (await backend.info(MAIN)).pid!;
    await backend.delete(MAIN);
    await backend.delete(MAIN);
    expect(qemuPids(MAIN)).toEqual([]);
    expect(qemuPids(MAIN).includes(pid)).toBe(false);
    expect(existsSync(join(config.stateDir, 'vms', MAIN))).toBe(false);
    await expectCode(backend.info(MAIN), 'NOT_FOUND');
  });
});
