/**
 * The pool's logic on a fake backend that can hold clones (createHeld/resume), with the
 * injected manual clock: sizes and refill, waiting and TIMEOUT past max, TTL eviction,
 * failed clones discarded and replaced with back-off, drain and close, option and job
 * validation. Real clones are in tests/integration/pool.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { VmInfo } from '../../src/backend.js';
import { loadConfig } from '../../src/config.js';
import type { OperationContext } from '../../src/context.js';
import { LocalVmError } from '../../src/errors.js';
import { cut, parentDirs, requested, runJob } from '../../src/pool/executor.js';
import { parseJob, parsePoolOptions } from '../../src/pool/options.js';
import { backoffMs, createPool, type Pool } from '../../src/pool/pool.js';
import { defaultAcquireMs } from '../../src/pool/warmPool.js';
import { poolVmName, sessionOfPoolVm } from '../../src/pool/sweep.js';
import { createRecordingRunner } from '../../src/runner.js';
import type { VmSpec } from '../../src/schema.js';
import { FakeBackend } from '../fixtures/fakeBackend.js';
import { manualClock } from '../fixtures/manualClock.js';
import { codeOf, rejection } from '../fixtures/rejection.js';

/** A fake backend with held clones: createHeld makes a paused VM, resume runs it. */
class HoldingFake extends FakeBackend {
  readonly paused = new Set<string>();
  /** Names whose resume fails (the clone does not come back). */
  failResume = new Set<string>();
  /** createHeld calls that fail, in order (true: fail). */
  failCreates: boolean[] = [];

  async createHeld(spec: VmSpec & { template: string }): Promise<VmInfo> {
    if (this.failCreates.shift()) {
      this.calls.push(`createHeld-failed ${spec.name}`);
      throw new LocalVmError('COMMAND_FAILED', `restoring ${spec.name} failed`);
    }
    const info = await this.create(spec);
    this.paused.add(spec.name);
    return info;
  }

  async resume(name: string): Promise<void> {
    this.calls.push(`resume ${name}`);
    if (this.failResume.has(name)) throw new LocalVmError('TIMEOUT', `${name} did not answer`);
    this.paused.delete(name);
  }
}

function setup() {
  const backend = new HoldingFake();
  const clock = manualClock();
  const ctx: OperationContext = {
    config: loadConfig({ HOME: '/nonexistent', PATH: '' }),
    runner: createRecordingRunner(),
    clock,
    backends: { qemu: backend },
  };
  const recorded: string[] = [];
  const released: string[] = [];
  const internals = {
    sweep: false,
    record: async (name: string) => {
      recorded.push(name);
      return async () => void released.push(name);
    },
  };
  const make = (o: Record<string, unknown> = {}) =>
    createPool({ template: 'base', min: 2, max: 4, context: ctx, clock, ...o }, internals);
  return { backend, clock, ctx, make, recorded, released };
}

/** Lets the pool's background work (creates, deletes) run to its next wait. */
const settle = async () => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
};

// The fake's createHeld skips the template lookup createPool does against a real backend.
async function withPool<T>(pool: Promise<Pool>, fn: (p: Pool) => Promise<T>): Promise<T> {
  const p = await pool;
  try {
    return await fn(p);
  } finally {
    await p.close();
  }
}

describe('createPool', () => {
  it('fills to min with held clones, recorded before each is made', async () => {
    const { backend, make, recorded } = setup();
    await withPool(make(), async (pool) => {
      await settle();
      expect(pool.stats()).toMatchObject({ idle: 2, creating: 0, created: 2, leased: 0 });
      expect([...backend.paused].sort()).toEqual([...recorded].sort());
      for (const name of recorded) expect(name.startsWith('pool-')).toBe(true);
    });
  });

  it('hands out a resumed VM, destroys it on release and makes a replacement', async () => {
    const { backend, make, released } = setup();
    await withPool(make(), async (pool) => {
      await settle();
      const lease = await pool.acquire();
      expect(backend.paused.has(lease.name)).toBe(false);
      expect(backend.calls).toContain(`resume ${lease.name}`);
      expect((await lease.vm.exec(['echo', 'hi'])).stdout).toBe('hi');
      await settle();
      expect(pool.stats()).toMatchObject({ leased: 1, idle: 2, created: 3 });
      await lease.release();
      await lease.release();
      expect(backend.vms.has(lease.name)).toBe(false);
      expect(released).toEqual([lease.name]);
      expect(pool.stats()).toMatchObject({ leased: 0, acquired: 1 });
      expect(pool.stats().acquireLatencyMs.count).toBe(1);
    });
  });

  it('past max, acquire waits and fails with TIMEOUT at its deadline', async () => {
    const { clock, make } = setup();
    await withPool(make({ min: 1, max: 2 }), async (pool) => {
      await settle();
      await pool.acquire();
      await pool.acquire();
      const third = pool.acquire({ timeoutMs: 5_000 });
      await settle();
      expect(pool.stats()).toMatchObject({ waiting: 1, leased: 2, creating: 0 });
      clock.advance(5_000);
      expect((await rejection(third)).code).toBe('TIMEOUT');
      expect(pool.stats().waiting).toBe(0);
    });
  });

  it('without a timeout, an acquire waits as long as making its VM may take, not a flat 60 s', async () => {
    // A spec pool's VM boots; on a loaded machine a guest can take 90 s to answer.
    const { backend, clock, make } = setup();
    let booted: () => void = () => undefined;
    const boot = new Promise<void>((r) => (booted = r));
    const create = backend.create.bind(backend);
    backend.create = async (spec) => {
      await boot;
      return create(spec);
    };
    await withPool(make({ template: undefined, spec: { image: 'tiny' }, min: 1, max: 1 }), async (pool) => {
      await settle();
      let outcome = 'waiting';
      const acquiring = pool.acquire().then(
        () => (outcome = 'leased'),
        (e: LocalVmError) => (outcome = e.code),
      );
      clock.advance(90_000);
      await settle();
      booted(); // before asserting: close() waits for the VM being made
      const at90s = outcome;
      await acquiring;
      expect(at90s).toBe('waiting');
      expect(outcome).toBe('leased');
    });
  });

  it('the default acquire deadline is at least 60 s and covers making one VM', () => {
    expect(defaultAcquireMs(1_000)).toBe(60_000);
    expect(defaultAcquireMs(240_000)).toBe(240_000);
  });

  it('a waiter gets the VM freed by a release', async () => {
    const { make } = setup();
    await withPool(make({ min: 1, max: 1 }), async (pool) => {
      await settle();
      const first = await pool.acquire();
      const second = pool.acquire({ timeoutMs: 60_000 });
      await settle();
      await first.release();
      const lease = await second;
      expect(lease.name).not.toBe(first.name);
    });
  });

  it('evicts idle VMs past idleTtlMs and replaces them', async () => {
    const { backend, clock, make } = setup();
    await withPool(make({ min: 2, idleTtlMs: 60_000 }), async (pool) => {
      await settle();
      const before = [...backend.vms.keys()];
      clock.advance(59_000);
      await settle();
      expect(pool.stats().evicted).toBe(0);
      clock.advance(1_000);
      await settle();
      expect(pool.stats()).toMatchObject({ evicted: 2, idle: 2, created: 4 });
      for (const name of before) expect(backend.vms.has(name)).toBe(false);
    });
  });

  it('discards a clone that fails to restore, counts it and replaces it after a back-off', async () => {
    const { backend, clock, make } = setup();
    backend.failCreates = [true, true];
    await withPool(make({ min: 1, refillConcurrency: 1 }), async (pool) => {
      await settle();
      expect(pool.stats()).toMatchObject({ failed: 1, idle: 0 });
      clock.advance(backoffMs(1));
      await settle();
      expect(pool.stats()).toMatchObject({ failed: 2, idle: 0 });
      clock.advance(backoffMs(2));
      await settle();
      expect(pool.stats()).toMatchObject({ failed: 2, idle: 1, created: 1 });
    });
  });

  it('never hands out a clone that fails to resume: it is discarded and the next one is tried', async () => {
    const { backend, make } = setup();
    await withPool(make({ min: 2 }), async (pool) => {
      await settle();
      const [bad] = [...backend.paused];
      backend.failResume.add(bad ?? '');
      const lease = await pool.acquire();
      expect(lease.name).not.toBe(bad);
      await settle();
      expect(backend.vms.has(bad ?? '')).toBe(false);
      expect(pool.stats().failed).toBe(1);
    });
  });

  it('drain refuses new leases, waits for the current ones, then deletes every VM', async () => {
    const { backend, make } = setup();
    const pool = await make();
    await settle();
    const lease = await pool.acquire();
    let drained = false;
    const draining = pool.drain().then(() => (drained = true));
    await settle();
    expect(await codeOf(pool.acquire())).toBe('CONFLICT');
    expect(drained).toBe(false);
    expect(backend.vms.has(lease.name)).toBe(true);
    await lease.release();
    await draining;
    expect(backend.vms.size).toBe(0);
  });

  it('keeps `warm` idle VMs resumed, so acquiring one is a dequeue', async () => {
    const { backend, make } = setup();
    await withPool(make({ min: 2, warm: 1 }), async (pool) => {
      await settle();
      expect(pool.stats()).toMatchObject({ idle: 2, warm: 1 });
      const resumes = backend.calls.filter((c) => c.startsWith('resume')).length;
      await pool.acquire();
      expect(backend.calls.filter((c) => c.startsWith('resume')).length).toBe(resumes);
    });
  });
});

describe('a waiting acquire', () => {
  it('keeps its process alive until its deadline, though every timer it waits on is unref’d', () => {
    const script = fileURLToPath(new URL('../fixtures/poolWaiter.ts', import.meta.url));
    const r = spawnSync(process.execPath, ['--import', 'tsx', script], { encoding: 'utf8', timeout: 30_000 });
    expect(r.stdout.trim()).toBe('TIMEOUT');
    expect(r.status).toBe(0);
    // A child node with tsx: slow to start on a loaded machine.
  }, 30_000);
});

describe('pool options and jobs (VALIDATION)', () => {
  it.each([
    [{ template: 't', min: 5, max: 2 }, 'min'],
    [{ template: 't', max: 10_000 }, 'max'],
    [{ template: 't', min: -1 }, 'min'],
    [{ min: 1 }, 'template'],
    [{ template: 't', spec: {} }, 'template'],
    [{ template: 't', prefix: 'Bad/' }, 'prefix'],
  ])('%j → %s', (input, property) => {
    try {
      parsePoolOptions(input);
      expect.unreachable();
    } catch (error) {
      expect((error as LocalVmError).code).toBe('VALIDATION');
      expect((error as LocalVmError).issues?.map((i) => i.property)).toContain(property);
    }
  });

  it('defaults max to max(min, 4)', () => {
    expect(parsePoolOptions({ template: 't', min: 6 }).max).toBe(6);
    expect(parsePoolOptions({ template: 't' })).toMatchObject({ min: 1, max: 4 });
  });

  it.each([
    [{ argv: [] }, 'argv'],
    [{ argv: [''] }, 'argv.0'],
    [{}, 'argv'],
    [{ argv: ['true'], script: 'true' }, 'argv'],
    [{ argv: ['true'], files: { 'job/x': 'a' } }, 'files.job/x'],
    [{ argv: ['true'], files: { '/job/../etc/passwd': 'a' } }, 'files./job/../etc/passwd'],
    [{ argv: ['true'], collect: ['/job/../x'] }, 'collect.0'],
    [{ argv: ['true'], cwd: 'rel' }, 'cwd'],
    [{ argv: ['true'], maxOutputBytes: 0 }, 'maxOutputBytes'],
    [{ argv: ['true'], maxOutputBytes: 2 ** 40 }, 'maxOutputBytes'],
  ])('job %j → %s', (input, property) => {
    try {
      parseJob(input);
      expect.unreachable();
    } catch (error) {
      expect((error as LocalVmError).code).toBe('VALIDATION');
      expect((error as LocalVmError).issues?.map((i) => i.property)).toContain(property);
    }
  });

  it('a bad job is refused before a VM is taken, and the pool keeps serving', async () => {
    const { make } = setup();
    await withPool(make({ min: 1 }), async (pool) => {
      await settle();
      expect(await codeOf(pool.run({ argv: [] }))).toBe('VALIDATION');
      expect(pool.stats()).toMatchObject({ acquired: 0, idle: 1 });
      const r = await pool.run({ argv: ['echo', 'ok'] });
      expect(r).toMatchObject({ exitCode: 0, stdout: 'ok', timedOut: false, truncated: false });
    });
  });
});

describe('executor parts', () => {
  it('cuts output at maxOutputBytes and says so', async () => {
    expect(cut(new Uint8Array(10), 4)).toMatchObject({ cut: true, bytes: new Uint8Array(4) });
    expect(cut(new Uint8Array(4), 4).cut).toBe(false);
    const { make } = setup();
    await withPool(make({ min: 1 }), async (pool) => {
      await settle();
      const r = await runJob(pool, { argv: ['echo', 'x'.repeat(100)], maxOutputBytes: 10 });
      expect(r.stdout).toBe('x'.repeat(10));
      expect(r).toMatchObject({ truncated: true, truncatedOutputs: ['stdout'] });
    });
  });

  it('reads back only what was asked for, whatever the guest lists', () => {
    const collect = ['/job/out.json', '/job/out/', '/job/dir'];
    expect(requested(collect, '/job/out.json')).toBe(true);
    expect(requested(collect, '/job/out/a/b')).toBe(true);
    expect(requested(collect, '/job/dir/x')).toBe(true);
    expect(requested(collect, '/etc/shadow')).toBe(false);
    expect(requested(collect, '/job/out/../../etc/shadow')).toBe(false);
    expect(requested(collect, '/job/dirx')).toBe(false);
  });

  it('creates each parent directory of the files once', () => {
    expect(parentDirs(['/job/a.py', '/job/b.py', '/x/y/z', '/top'], '/work')).toEqual(['/job', '/work', '/x/y']);
  });

  it('names pool VMs so a sweep finds their session, and nothing else', () => {
    const name = poolVmName('pool-', 's1x-2ab', 7);
    expect(name).toBe('pool-s1x-2ab-7');
    expect(sessionOfPoolVm('pool-', name)).toBe('s1x-2ab');
    expect(sessionOfPoolVm('pool-', 'pool-mine')).toBeUndefined();
    expect(sessionOfPoolVm('pool-', 'other-s1x-2ab-7')).toBeUndefined();
  });
});
