/**
 * Warm pools on real QEMU (TCG), clones of one tiny template: jobs are isolated from each
 * other, a timed-out job's VM is destroyed, 10 concurrent jobs on a pool of 4 each get their
 * own answer, drain waits for leases and leaves nothing, a clone that fails to restore is
 * replaced, and a pool whose process is SIGKILLed leaves no VM behind.
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdtemp, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { realClock, type OperationContext } from '../../src/context.js';
import { createTemplate, templateInfo } from '../../src/operations/template.js';
import { createVm, deleteVm, listVms } from '../../src/operations/vm.js';
import { createPool, type Pool } from '../../src/pool/pool.js';
import { createExecaRunner } from '../../src/runner.js';
import { poll } from '../../src/time/poll.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';

const skip = (await missingQemuOrTiny()) !== undefined;
const T = 'pooltpl';

describe.skipIf(skip)('warm pools (real QEMU)', () => {
  let home: string;
  let ctx: OperationContext;
  const names = async (prefix: string) => (await listVms(ctx)).map((v) => v.name).filter((n) => n.startsWith(prefix));
  const until = (what: string, ms: number, done: () => Promise<boolean> | boolean) =>
    poll(async () => ((await done()) ? true : undefined), {
      what,
      timeoutMs: ms,
      initialMs: 50,
      factor: 1.5,
      maxMs: 500,
    });
  const withPool = async (o: Parameters<typeof createPool>[0], fn: (p: Pool) => Promise<void>) => {
    const pool = await createPool({ template: T, context: ctx, ...o });
    try {
      await fn(pool);
    } finally {
      await pool.close();
    }
  };

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'lvm-pool-'));
    ctx = { config: loadConfig({ ...process.env, LOCALVM_HOME: home }), runner: createExecaRunner(), clock: realClock };
    await createTemplate({ name: T, spec: { memory: 128 } }, ctx);
  });

  afterAll(async () => {
    for (const v of await listVms(ctx).catch(() => [])) await deleteVm(v.name, ctx).catch(() => undefined);
    await rm(home, { recursive: true, force: true });
  });

  it('isolates jobs: a file and a process of job 1 are absent in job 2; files in, collect out', async () => {
    await withPool({ prefix: 'iso-', min: 1, max: 2 }, async (pool) => {
      const first = await pool.run({
        script: 'echo secret > /tmp/left; nohup sleep 300 >/dev/null 2>&1 & cat /job/in.txt; hostname',
        files: { '/job/in.txt': 'from the host\n' },
      });
      expect(first.exitCode).toBe(0);
      expect(first.stdout.split('\n')[0]).toBe('from the host');
      const second = await pool.run({
        script:
          'test -e /tmp/left && echo file-there; pgrep -x sleep >/dev/null && echo sleep-there; ' +
          'mkdir -p /job/dir/sub; echo out > /job/out.txt; echo a > /job/dir/sub/a; hostname',
        collect: ['/job/out.txt', '/job/dir/', '/job/none'],
      });
      expect(second.exitCode).toBe(0);
      expect(second.stdout).not.toContain('file-there');
      expect(second.stdout).not.toContain('sleep-there');
      expect(second.stdout.trim()).not.toBe(first.stdout.split('\n')[1]);
      expect(Buffer.from(second.files['/job/out.txt'] ?? []).toString()).toBe('out\n');
      expect(Buffer.from(second.files['/job/dir/sub/a'] ?? []).toString()).toBe('a\n');
      expect(second.missing).toEqual(['/job/none']);
      expect(await names('iso-')).not.toContain(first.vm);
    });
  });

  it('a pool VM is its own machine once acquired: hostname its name, clock set', async () => {
    await withPool({ prefix: 'who-', min: 1, max: 1 }, async (pool) => {
      const r = await pool.run({ script: 'hostname; date +%s' });
      const [host, clock] = r.stdout.trim().split('\n');
      expect(host).toBe(r.vm);
      expect(Math.abs(Number(clock) - Date.now() / 1000)).toBeLessThan(2);
    });
  });

  it('a job past its timeout returns timedOut and its VM is gone; the pool keeps serving', async () => {
    await withPool({ prefix: 'tmo-', min: 1, max: 2 }, async (pool) => {
      const r = await pool.run({ argv: ['sleep', '1000'], timeoutMs: 1_000 });
      expect(r).toMatchObject({ timedOut: true, exitCode: null });
      expect(await names('tmo-')).not.toContain(r.vm);
      const big = await pool.run({ script: 'head -c 100000 /dev/zero', maxOutputBytes: 1000 });
      expect(big).toMatchObject({ exitCode: 0, truncated: true, truncatedOutputs: ['stdout'] });
      expect(big.stdoutBytes.length).toBe(1000);
    });
  });

  it('runs 10 concurrent jobs on a pool of 4, each with its own output', async () => {
    await withPool({ prefix: 'ten-', min: 2, max: 4, refillConcurrency: 2 }, async (pool) => {
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) => pool.run({ argv: ['echo', `job-${i}`], acquireTimeoutMs: 120_000 })),
      );
      expect(results.map((r) => r.stdout.trim())).toEqual(Array.from({ length: 10 }, (_, i) => `job-${i}`));
      expect(new Set(results.map((r) => r.vm)).size).toBe(10);
      expect(pool.stats()).toMatchObject({ leased: 0, acquired: 10, failed: 0 });
    });
    expect(await names('ten-')).toEqual([]);
  });

  it('drain waits for the lease, then leaves no VM', async () => {
    const pool = await createPool({ template: T, context: ctx, prefix: 'drn-', min: 2 });
    const lease = await pool.acquire({ timeoutMs: 60_000 });
    expect((await lease.vm.exec(['true'])).exitCode).toBe(0);
    let drained = false;
    const draining = pool.drain().then(() => (drained = true));
    await new Promise((r) => setTimeout(r, 300));
    expect(drained).toBe(false);
    expect(await names('drn-')).toContain(lease.name);
    await lease.release();
    await draining;
    expect(await names('drn-')).toEqual([]);
  });

  it('discards a clone that fails to restore, counts it, and replaces it once restores work', async () => {
    const state = join((await templateInfo(T, ctx)).dir, 'state');
    await copyFile(state, `${state}.good`);
    await truncate(state, 1000);
    const pool = await createPool({ template: T, context: ctx, prefix: 'bad-', min: 1, max: 1 });
    try {
      await until('a failed clone', 30_000, () => pool.stats().failed >= 1);
      expect(pool.stats().idle).toBe(0);
      await copyFile(`${state}.good`, state);
      await until('a replacement', 60_000, () => pool.stats().idle === 1);
      const lease = await pool.acquire({ timeoutMs: 30_000 });
      expect((await lease.vm.exec(['true'])).exitCode).toBe(0);
      await lease.release();
    } finally {
      await copyFile(`${state}.good`, state);
      await rm(`${state}.good`, { force: true });
      await pool.close();
    }
    expect(await names('bad-')).toEqual([]);
  });

  it('a new pool sweeps the VMs of dead pools with its prefix, and nothing else', async () => {
    // A pool VM whose session (s1-1: no such owner) is gone, as a dead pool whose reaper died too leaves it.
    await createVm({ name: 'swp-s1-1-1', template: T }, ctx);
    await createVm({ name: 'swp-mine', template: T }, ctx);
    const pool = await createPool({ template: T, context: ctx, prefix: 'swp-', min: 0 });
    try {
      expect(await names('swp-')).toEqual(['swp-mine']);
    } finally {
      await pool.close();
      await deleteVm('swp-mine', ctx);
    }
  });

  it('a pool whose process is SIGKILLed leaves no VM behind', async () => {
    const owner = fileURLToPath(new URL('../fixtures/poolOwner.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', owner, T, 'kil-'], {
      env: { ...process.env, LOCALVM_HOME: home },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(out);
      });
      child.once('exit', (code) => reject(new Error(`pool owner exited ${code}: ${out}`)));
    });
    expect(JSON.parse(line)).toMatchObject({ ready: true });
    expect((await names('kil-')).length).toBe(2);
    child.kill('SIGKILL');
    await until('the reaper to delete the pool VMs', 60_000, async () => (await names('kil-')).length === 0);
  });
});
