/**
 * The OrbStack backend against the orbctl simulator (tests/fixtures/orbctl) run as a real
 * process through the real execa runner, found as `orbctl` first on the search path.
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Backend } from '../../src/backend.js';
import { orbMatchesSpec } from '../../src/backends/orbstack/spec.js';
import { createOrbstackBackend } from '../../src/backends/orbstack/index.js';
import { loadConfig } from '../../src/config.js';
import { isTransient } from '../../src/errors.js';
import { createExecaRunner } from '../../src/runner.js';
import { parseVmSpec, type VmSpecInput } from '../../src/schema.js';
import {
  callsOf,
  clearFaults,
  injectFaults,
  makeSimState,
  readCallLog,
  removeSimState,
  simEnv,
  withEnv,
} from '../fixtures/orbctl-sim/faults.js';
import { rejection } from '../fixtures/rejection.js';

const PREFIX = 'pytest-test-orb-';

let stateDir: string;
let backend: Backend;

function spec(name: string, extra: Partial<VmSpecInput> = {}) {
  return parseVmSpec({ name: PREFIX + name, backend: 'orbstack', image: 'ubuntu:noble', ...extra });
}

beforeAll(async () => {
  stateDir = await makeSimState();
  const env = simEnv(stateDir, { speed: 0 });
  const config = loadConfig({ HOME: stateDir, PATH: env.PATH });
  backend = createOrbstackBackend({ config, runner: withEnv(createExecaRunner(), env) });
});

beforeEach(async () => {
  await clearFaults(stateDir);
});

afterAll(async () => {
  // The simulator's machines are directories in the state dir: removing it removes them all.
  await removeSimState(stateDir);
});

describe('orbstack backend against the orbctl simulator', () => {
  it('runs a full lifecycle: create, info, list, stop, start, restart, delete', async () => {
    const s = spec('life', { arch: 'aarch64', user: 'dev' });
    const created = await backend.create(s);
    expect(created).toMatchObject({ name: s.name, backend: 'orbstack', state: 'running', image: 'ubuntu:noble' });
    expect(created.arch).toBe('aarch64');
    expect(created.ip4).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(orbMatchesSpec(created, s)).toBe(true);
    expect(orbMatchesSpec(created, spec('life', { arch: 'aarch64', user: 'someone-else' }))).toBe(false);

    expect((await backend.list()).map((v) => v.name)).toContain(s.name);

    const stopped = await backend.stop(s.name);
    expect(stopped.state).toBe('stopped');
    expect(stopped.ip4).toBeUndefined();
    expect((await backend.start(s.name)).state).toBe('running');
    expect((await backend.restart(s.name)).state).toBe('running');
    expect(await backend.guest(s.name).probe(5_000)).toMatchObject({ ready: true });

    const createArgv = (await callsOf(stateDir, 'create')).at(-1)?.argv;
    expect(createArgv).toEqual(['create', '-a', 'arm64', '-u', 'dev', 'ubuntu:noble', s.name]);

    await backend.delete(s.name);
    expect((await backend.list()).map((v) => v.name)).not.toContain(s.name);
    expect((await rejection(backend.info(s.name))).code).toBe('NOT_FOUND');
  });

  it('delete is idempotent: deleting twice succeeds', async () => {
    const s = spec('del2');
    await backend.create(s);
    await backend.delete(s.name);
    await expect(backend.delete(s.name)).resolves.toBeUndefined();
    const deletes = await callsOf(stateDir, 'delete');
    expect(deletes.slice(-2).map((c) => c.exitCode)).toEqual([0, 1]);
  });

  it('passes user-data through a private temp file', async () => {
    const s = spec('cloud', { userData: '#cloud-config\npackages: [jq]\n' });
    await backend.create(s);
    const r = await backend.guest(s.name).exec(['cat', '/var/lib/cloud/instance/user-data.txt']);
    expect(r.stdout).toBe('#cloud-config\npackages: [jq]\n');
    await backend.delete(s.name);
  });

  describe('exec and files', () => {
    const s = spec('exec');
    beforeAll(async () => {
      await backend.create(s);
    });
    afterAll(async () => {
      await backend.delete(s.name);
    });

    it('reports exit codes, stdout and stderr', async () => {
      const r = await backend.guest(s.name).exec(['sh', '-c', 'echo out; echo err >&2; exit 7']);
      expect(r).toMatchObject({ exitCode: 7, stdout: 'out\n', stderr: 'err\n' });
      expect(Buffer.from(r.stdoutBytes).toString()).toBe('out\n');
      expect((await backend.guest(s.name).exec(['true'])).exitCode).toBe(0);
    });

    it('a guest "not found" stays the guest command result', async () => {
      const r = await backend.guest(s.name).exec(['sh', '-c', 'no-such-command-xyz']);
      expect(r.exitCode).toBe(127);
      expect(r.stderr).toMatch(/not found/);
    });

    it('feeds stdin, applies cwd and env', async () => {
      expect((await backend.guest(s.name).exec(['cat'], { stdin: 'from stdin' })).stdout).toBe('from stdin');
      await backend.guest(s.name).exec(['mkdir', '-p', 'work']);
      const r = await backend.guest(s.name).exec(['sh', '-c', 'echo "$GREETING" > here.txt'], {
        cwd: '/tmp',
        env: { GREETING: 'hi there' },
      });
      expect(r.exitCode).toBe(0);
      expect(Buffer.from(await backend.guest(s.name).getFile('/tmp/here.txt')).toString()).toBe('hi there\n');
    });

    it('times out as TIMEOUT', async () => {
      const started = performance.now();
      const error = await rejection(backend.guest(s.name).exec(['sleep', '30'], { timeoutMs: 500 }));
      expect(error.code).toBe('TIMEOUT');
      expect(error.transient).toBe(true);
      expect(performance.now() - started).toBeLessThan(10_000);
    });

    it('round-trips a binary file byte for byte, with its mode', async () => {
      const content = new Uint8Array(randomBytes(256 * 1024));
      await backend.guest(s.name).putFile('/tmp/blob.bin', content, { mode: 0o640 });
      const back = await backend.guest(s.name).getFile('/tmp/blob.bin');
      const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
      expect(sha(back)).toBe(sha(content));
      expect(back.byteLength).toBe(content.byteLength);
      const mode = await backend.guest(s.name).exec(['stat', '-c', '%a', '/tmp/blob.bin'], { cwd: '/' });
      expect(mode.stdout.trim()).toBe('640');
    });

    it('exec on a missing machine is NOT_FOUND', async () => {
      expect((await rejection(backend.guest(PREFIX + 'missing').exec(['true']))).code).toBe('NOT_FOUND');
    });
  });

  describe('failures', () => {
    it('a faulted create surfaces as a transient error and leaves nothing behind', async () => {
      await injectFaults(stateDir, { failCreates: 1 });
      const s = spec('flaky');
      const error = await rejection(backend.create(s));
      expect(error.code).toBe('TRANSIENT');
      expect(isTransient(error)).toBe(true);
      expect(error.message).toMatch(/missing IP address/);
      expect(error.command?.args).toContain(s.name);
      expect((await backend.list()).map((v) => v.name)).not.toContain(s.name);
      // the fault was consumed: the next create works
      await backend.create(s);
      await backend.delete(s.name);
    });

    it('a permanent error (unknown distro) is VALIDATION, not transient, tried once', async () => {
      const before = (await callsOf(stateDir, 'create')).length;
      const error = await rejection(backend.create(spec('nodistro', { image: 'nosuchdistro:1' })));
      expect(error.code).toBe('VALIDATION');
      expect(isTransient(error)).toBe(false);
      expect((await callsOf(stateDir, 'create')).length).toBe(before + 1);
    });

    it('creating an existing machine is ALREADY_EXISTS, not transient', async () => {
      const s = spec('twice');
      await backend.create(s);
      const error = await rejection(backend.create(s));
      expect(error.code).toBe('ALREADY_EXISTS');
      expect(isTransient(error)).toBe(false);
      await backend.delete(s.name);
    });

    it('a hung create times out (transient) yet leaves a machine that matches the spec', async () => {
      await injectFaults(stateDir, { hangCreates: 1, hangMs: 60_000 });
      const s = spec('hung', { timeouts: { createMs: 1_000 } });
      const error = await rejection(backend.create(s));
      expect(error.code).toBe('TIMEOUT');
      expect(isTransient(error)).toBe(true);
      const left = await backend.info(s.name);
      expect(orbMatchesSpec(left, s)).toBe(true);
      expect(orbMatchesSpec(left, spec('hung', { image: 'debian:bookworm' }))).toBe(false);
      expect((await callsOf(stateDir, 'create')).at(-1)?.hung).toBe(true);
      await backend.delete(s.name);
    });

    it('a machine that never gets an IP is running without ip4 and not ready, naming the state', async () => {
      await injectFaults(stateDir, { noIpCreates: 1 });
      const s = spec('noip');
      const info = await backend.create(s);
      expect(info.state).toBe('running');
      expect(info.ip4).toBeUndefined();
      const probe = await backend.guest(s.name).probe(2_000);
      expect(probe.ready).toBe(false);
      expect(probe.detail).toMatch(/running/);
      expect(probe.detail).toMatch(/ip4/);
      await backend.delete(s.name);
    });

    it('the daemon being down is a transient error, and clears when it comes back', async () => {
      await injectFaults(stateDir, { daemonDown: true });
      const error = await rejection(backend.list());
      expect(error.code).toBe('TRANSIENT');
      expect(isTransient(error)).toBe(true);
      const probe = await backend.guest(PREFIX + 'any').probe(1_000);
      expect(probe).toMatchObject({ ready: false });
      await clearFaults(stateDir);
      await expect(backend.list()).resolves.toBeInstanceOf(Array);
    });

    it('stops gracefully, and forces when the graceful stop does not finish in time', async () => {
      const s = spec('stopper');
      await backend.create(s);
      let before = (await readCallLog(stateDir)).length;
      expect((await backend.stop(s.name)).state).toBe('stopped');
      let stops = (await readCallLog(stateDir)).slice(before).filter((c) => c.argv[0] === 'stop');
      expect(stops.map((c) => c.argv)).toEqual([['stop', s.name]]);

      await backend.start(s.name);
      await injectFaults(stateDir, { slowStopMs: 30_000 });
      before = (await readCallLog(stateDir)).length;
      const started = performance.now();
      expect((await backend.stop(s.name, { timeoutMs: 500 })).state).toBe('stopped');
      expect(performance.now() - started).toBeLessThan(10_000);
      stops = (await readCallLog(stateDir)).slice(before).filter((c) => c.argv[0] === 'stop');
      // the killed graceful stop never logged its exit; the forced one did
      expect(stops.map((c) => c.argv)).toEqual([['stop', '-f', s.name]]);
      await backend.delete(s.name);
    });
  });

  it('reads the bare-record info shape, relying on `run true` for readiness', async () => {
    const env = simEnv(stateDir, { speed: 0, infoShape: 'bare' });
    const bare = createOrbstackBackend({
      config: loadConfig({ HOME: stateDir, PATH: env.PATH }),
      runner: withEnv(createExecaRunner(), env),
    });
    const s = spec('bare');
    const info = await bare.create(s);
    expect(info).toMatchObject({ state: 'running', image: 'ubuntu:noble', ip4: undefined });
    expect(await bare.guest(s.name).probe(5_000)).toMatchObject({ ready: true });
    await bare.delete(s.name);
  });
});
