import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { isLocalVmError } from '../../src/errors.js';
import { createRecordingRunner } from '../../src/runner.js';
import {
  newSession,
  parseSession,
  processAlive,
  reaperStep,
  sessionFile,
  sessionIdFor,
  sessionVmName,
  updateSession,
  withVm,
  withoutVm,
  type ReaperView,
} from '../../src/vitest/session.js';
import { runReaper } from '../../src/vitest/reaper.js';
import { reuseHash, reuseVmName, testPrefix, fixtureEnv, sweepLeftovers } from '../../src/vitest/index.js';
import { FakeBackend, fakeClock } from '../fixtures/fakeBackend.js';
import { testTempDir } from '../fixtures/tempDir.js';
import { specFingerprint, parseVmSpec } from '../../src/schema.js';

const deadPid = () => spawnSync('true').pid ?? 999_999;

const view = (over: Partial<ReaperView>): ReaperView => ({
  record: {
    ...newSession('s1', 100, 5),
    vms: [
      { name: 'p-s1-w1', pid: 200 },
      { name: 'p-s1-w2', pid: 201 },
    ],
  },
  runnerAlive: true,
  workerAlive: () => false,
  sinceRunnerDeathMs: 0,
  workerGraceMs: 10_000,
  ...over,
});

describe('session record logic', () => {
  it('names sessions and their VMs deterministically within the VM name rules', () => {
    expect(sessionIdFor(4_194_304, 123_456_789)).toBe('s2hwcg-21i3v9');
    expect(sessionIdFor(42, undefined)).toBe('s16');
    const name = sessionVmName('pytest-test-', sessionIdFor(4_194_304, 2 ** 40), '16');
    expect(name).toMatch(/^[a-z0-9][a-z0-9-]{0,62}$/);
    expect(name.startsWith('pytest-test-reuse-')).toBe(false);
  });

  it('adds and removes VMs without duplicates', () => {
    const r = newSession('s1', 100, undefined);
    const one = withVm(withVm(r, { name: 'a', pid: 1 }), { name: 'a', pid: 2 });
    expect(one.vms).toEqual([{ name: 'a', pid: 2 }]);
    expect(withoutVm(one, 'a').vms).toEqual([]);
    expect(r.vms).toEqual([]);
  });

  it('parses only well-formed records', () => {
    const r = withVm(newSession('s1', 100, 7), { name: 'a', pid: 1 });
    expect(parseSession(JSON.stringify(r))).toEqual(r);
    expect(parseSession('{"version":1}')).toBeUndefined();
    expect(parseSession('not json')).toBeUndefined();
    expect(parseSession(JSON.stringify({ ...r, vms: [{ name: 'a', pid: 1 }, { name: 5 }] }))?.vms).toEqual([
      { name: 'a', pid: 1 },
    ]);
  });

  it('decides what the reaper does on each tick', () => {
    expect(reaperStep(view({ record: undefined })).action).toBe('exit');
    expect(reaperStep(view({ runnerAlive: true }))).toEqual({ action: 'wait' });
    expect(reaperStep(view({ runnerAlive: false }))).toEqual({
      action: 'reap',
      vms: ['p-s1-w1', 'p-s1-w2'],
      then: 'exit',
    });
    // A worker that outlives the runner may be mid-create: spared until the grace ends.
    const oneAlive = view({ runnerAlive: false, workerAlive: (vm) => vm.pid === 201 });
    expect(reaperStep(oneAlive)).toEqual({ action: 'reap', vms: ['p-s1-w1'], then: 'wait' });
    expect(reaperStep({ ...oneAlive, sinceRunnerDeathMs: 10_000 })).toMatchObject({
      vms: ['p-s1-w1', 'p-s1-w2'],
      then: 'exit',
    });
    expect(reaperStep(view({ runnerAlive: false, record: newSession('s1', 100, 5) })).action).toBe('exit');
  });

  it('tells live processes from dead ones, including a reused pid', async () => {
    expect(await processAlive(process.pid, undefined)).toBe(true);
    expect(await processAlive(deadPid(), undefined)).toBe(false);
    if (existsSync('/proc/self/stat')) expect(await processAlive(process.pid, 1)).toBe(false);
  });

  it('updates the session file atomically under its lock, deleting it when asked', async () => {
    const dir = testTempDir('localvm-session-');
    await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        updateSession(dir, 's1', (r) => withVm(r ?? newSession('s1', 100, undefined), { name: `vm${i}`, pid: i + 1 })),
      ),
    );
    const record = parseSession(readFileSync(sessionFile(dir, 's1'), 'utf8'));
    expect(record?.vms.map((v) => v.name).sort()).toEqual(['vm0', 'vm1', 'vm2', 'vm3', 'vm4', 'vm5', 'vm6', 'vm7']);
    await updateSession(dir, 's1', () => undefined);
    expect(existsSync(sessionFile(dir, 's1'))).toBe(false);
  });
});

describe('reaper', () => {
  function setup() {
    const dir = testTempDir('localvm-reaper-');
    const backend = new FakeBackend();
    const ctx = {
      config: loadConfig({ HOME: dir, LOCALVM_HOME: dir, PATH: '' }),
      runner: createRecordingRunner(),
      clock: fakeClock(),
      backends: { qemu: backend },
    };
    return { dir, backend, ctx };
  }

  it('deletes exactly the listed VMs when the runner is dead, then removes the record', async () => {
    const { dir, backend, ctx } = setup();
    for (const name of ['p-s1-w1', 'p-s1-w2', 'p-other']) await backend.create(parseVmSpec({ name }));
    const record = {
      ...newSession('s1', deadPid(), undefined),
      vms: [
        { name: 'p-s1-w1', pid: deadPid() },
        { name: 'p-s1-w2', pid: deadPid() },
      ],
    };
    mkdirSync(join(dir, 'sessions'));
    writeFileSync(sessionFile(dir, 's1'), JSON.stringify(record));
    const why = await runReaper(sessionFile(dir, 's1'), { ctx, intervalMs: 5 });
    expect(why).toContain('reaped p-s1-w1, p-s1-w2');
    expect([...backend.vms.keys()]).toEqual(['p-other']);
    expect(existsSync(sessionFile(dir, 's1'))).toBe(false);
  });

  it('exits without deleting anything when a clean teardown removed the record', async () => {
    const { dir, backend, ctx } = setup();
    await backend.create(parseVmSpec({ name: 'p-s1-w1' }));
    const record = withVm(newSession('s1', process.pid, undefined), { name: 'p-s1-w1', pid: process.pid });
    mkdirSync(join(dir, 'sessions'));
    writeFileSync(sessionFile(dir, 's1'), JSON.stringify(record));
    const reaping = runReaper(sessionFile(dir, 's1'), { ctx, intervalMs: 5 });
    await new Promise((r) => setTimeout(r, 50));
    expect(backend.vms.size).toBe(1);
    await updateSession(dir, 's1', () => undefined);
    expect(await reaping).toContain('clean teardown');
    expect(backend.calls.filter((c) => c.startsWith('delete'))).toEqual([]);
  });
});

describe('fixture naming and sweep', () => {
  it('validates the prefix and keys reused VMs by the spec hash', () => {
    const ctx = { config: loadConfig({ HOME: '/x', LOCALVM_TEST_PREFIX: 'ci-vm-' }) };
    expect(testPrefix(undefined, ctx)).toBe('ci-vm-');
    expect(testPrefix('mine-', ctx)).toBe('mine-');
    try {
      testPrefix('Bad Prefix', ctx);
      expect.unreachable();
    } catch (error) {
      expect(isLocalVmError(error, 'VALIDATION')).toBe(true);
    }
    const h = reuseHash({ image: 'tiny', memory: 256 });
    expect(h).toBe(specFingerprint(parseVmSpec({ name: 'x', image: 'tiny', memory: 256 })).slice(0, 10));
    expect(reuseHash({ image: 'tiny', memory: 512 })).not.toBe(h);
    expect(reuseVmName('pytest-test-', h, '1')).toBe(`pytest-test-reuse-${h}-w1`);
    expect(fixtureEnv({ VITEST_POOL_ID: '3' })).toEqual({ worker: '3' });
    expect(loadConfig({ LOCALVM_REUSE: '1' }).reuse).toBe(true);
    expect(loadConfig({}).reuse).toBe(false);
  });

  it('sweeps prefixed leftovers but not reused VMs, other prefixes, or live sessions', async () => {
    const dir = testTempDir('localvm-sweep-');
    const backend = new FakeBackend();
    const ctx = {
      config: loadConfig({ HOME: dir, LOCALVM_HOME: dir, PATH: '' }),
      runner: createRecordingRunner(),
      clock: fakeClock(),
      backends: { qemu: backend },
    };
    for (const name of ['pytest-test-sold-w1', 'pytest-test-reuse-abc-w1', 'pytest-test-slive-w1', 'other-vm']) {
      await backend.create(parseVmSpec({ name }));
    }
    await updateSession(dir, 'slive', () =>
      withVm(newSession('slive', process.pid, undefined), { name: 'pytest-test-slive-w1', pid: process.pid }),
    );
    await updateSession(dir, 'sold', () =>
      withVm(newSession('sold', deadPid(), undefined), { name: 'pytest-test-sold-w1', pid: deadPid() }),
    );
    expect(await sweepLeftovers('pytest-test-', ctx)).toEqual(['pytest-test-sold-w1']);
    expect([...backend.vms.keys()].sort()).toEqual(['other-vm', 'pytest-test-reuse-abc-w1', 'pytest-test-slive-w1']);
    expect(existsSync(sessionFile(dir, 'sold'))).toBe(false);
    expect(existsSync(sessionFile(dir, 'slive'))).toBe(true);
  });

  it('spares the VM of a runner that starts while the sweep runs (session recorded, then VM created)', async () => {
    const dir = testTempDir('localvm-sweep-');
    const backend = new FakeBackend();
    const ctx = {
      config: loadConfig({ HOME: dir, LOCALVM_HOME: dir, PATH: '' }),
      runner: createRecordingRunner(),
      clock: fakeClock(),
      backends: { qemu: backend },
    };
    const list = backend.list.bind(backend);
    let started = false;
    backend.list = async () => {
      // Another runner starts now, as the fixture does it: its session first, then the create.
      if (!started) {
        started = true;
        await updateSession(dir, 'snew', () =>
          withVm(newSession('snew', process.pid, undefined), { name: 'pytest-test-snew-w1', pid: process.pid }),
        );
        await backend.create(parseVmSpec({ name: 'pytest-test-snew-w1' }));
      }
      return list();
    };
    expect(await sweepLeftovers('pytest-test-', ctx)).toEqual([]);
    expect([...backend.vms.keys()]).toEqual(['pytest-test-snew-w1']);
  });
});
