/**
 * Warm pools, measured in one run on one machine (the tiny guest, 256 MiB, TCG):
 *
 *   acquire:   acquire latency from a full pool of held (paused) clones, and from warm ones
 *              (kept resumed: `warm`), p50/p95/p99; and how long the refill of one VM took.
 *   first:     time to first exec (acquire + `true`) from the held pool, against creating a
 *              VM per job: a cold boot and a template clone (create + ready + `true`).
 *   burst:     10 concurrent `run`s of a small job on a pool of 4: p95 job latency, jobs/min.
 *   sustained: 100 sequential `run`s on a pool of min 2: jobs/min, and the acquire wait
 *              (how long a job waited for the refill) p50/p95.
 *   idle:      RSS of an idle held clone and of an idle warm one; CPU of each over 10 s.
 *
 * Writes bench/results/pool.json. Run: npx tsx bench/pool.ts [samples=20] [sustained=100]
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config.js';
import { connect } from '../src/connector.js';
import { realClock, type OperationContext } from '../src/context.js';
import { createTemplate, deleteTemplate } from '../src/operations/template.js';
import { createVm, deleteVm, listVms, vmInfo, waitForVmReady } from '../src/operations/vm.js';
import { createPool, type Pool } from '../src/pool/pool.js';
import { createExecaRunner } from '../src/runner.js';
import { quantile, rssKiB } from './stats.js';

const samples = Number(process.argv[2] ?? 20);
const sustained = Number(process.argv[3] ?? 100);
const MEMORY = 256;
const q = quantile;
const summary = (xs: number[]) => ({
  p50: Math.round(q(xs, 0.5)),
  p95: Math.round(q(xs, 0.95)),
  p99: Math.round(q(xs, 0.99)),
  n: xs.length,
});
const ms = (x: number) => Math.round(x * 10) / 10;

const home = await mkdtemp(join(tmpdir(), 'lvm-bench-pool-'));
const ctx: OperationContext = {
  config: loadConfig({ ...process.env, LOCALVM_HOME: home }),
  runner: createExecaRunner(),
  clock: realClock,
};

const sleep = (t: number) => new Promise((r) => setTimeout(r, t));
async function until(done: () => boolean, limitMs = 120_000): Promise<number> {
  const started = performance.now();
  while (!done()) {
    if (performance.now() - started > limitMs) throw new Error('pool did not refill in time');
    await sleep(5);
  }
  return performance.now() - started;
}

/** Acquire latencies from a full pool; each lease is released and the pool refilled before the next. */
async function acquireLatencies(
  pool: Pool,
  size: number,
): Promise<{ acquire: number[]; first: number[]; refill: number[] }> {
  const acquire: number[] = [];
  const first: number[] = [];
  const refill: number[] = [];
  await until(() => pool.stats().idle >= size);
  for (let i = 0; i < samples; i++) {
    const started = performance.now();
    const lease = await pool.acquire({ timeoutMs: 60_000 });
    acquire.push(performance.now() - started);
    await lease.vm.exec(['true']);
    first.push(performance.now() - started);
    const released = performance.now();
    await lease.release();
    await until(() => pool.stats().idle >= size);
    refill.push(performance.now() - released);
  }
  return { acquire, first, refill };
}

async function cpuTicks(pid: number | undefined): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]?.split(' ') ?? [];
  // utime and stime are fields 14 and 15 of /proc/PID/stat (11 and 12 after "pid (comm) ").
  return Number(fields[11]) + Number(fields[12]);
}
/** Percent of one core used by `pid` over `windowMs`. */
async function cpuPercent(pid: number | undefined, windowMs: number): Promise<number> {
  const a = await cpuTicks(pid);
  await sleep(windowMs);
  const b = await cpuTicks(pid);
  return Number((((b - a) / 100 / (windowMs / 1000)) * 100).toFixed(2));
}

async function perJob(name: string, input: Parameters<typeof createVm>[0]): Promise<number> {
  const started = performance.now();
  await createVm(input, ctx);
  await waitForVmReady(name, {}, ctx);
  await (await connect(name, ctx)).exec(['true']);
  const t = performance.now() - started;
  await deleteVm(name, ctx);
  return t;
}

try {
  await createTemplate({ name: 'bench', spec: { memory: MEMORY } }, ctx);

  // Held pool: acquire = dequeue + resume + one agent answer.
  const held = await createPool({ template: 'bench', min: 2, max: 4, prefix: 'held-', context: ctx });
  const h = await acquireLatencies(held, 2);
  const heldIdle = (await listVms(ctx)).filter((v) => v.name.startsWith('held-'));
  const heldPid = (await vmInfo(heldIdle[0]!.name, ctx)).pid;
  await sleep(2_000);
  const heldRss = await rssKiB(heldPid);
  const heldCpu = await cpuPercent(heldPid, 10_000);
  await held.close();

  // Warm pool: idle VMs already resumed and answered, acquire = dequeue.
  const warm = await createPool({ template: 'bench', min: 2, max: 4, warm: 2, prefix: 'warm-', context: ctx });
  await until(() => warm.stats().warm >= 2);
  const w = await acquireLatencies(warm, 2);
  await until(() => warm.stats().warm >= 2);
  const warmIdle = (await listVms(ctx)).filter((v) => v.name.startsWith('warm-'));
  const warmPid = (await vmInfo(warmIdle[0]!.name, ctx)).pid;
  await sleep(2_000);
  const warmRss = await rssKiB(warmPid);
  const warmCpu = await cpuPercent(warmPid, 10_000);
  await warm.close();

  // A VM per job, for comparison: cold boot and template clone, alternated.
  const cold: number[] = [];
  const clone: number[] = [];
  for (let i = 0; i < Math.min(samples, 10); i++) {
    cold.push(await perJob(`cold-${i}`, { name: `cold-${i}`, memory: MEMORY }));
    clone.push(await perJob(`clone-${i}`, { name: `clone-${i}`, template: 'bench' }));
  }

  // 10 concurrent small jobs on a pool of 4.
  const burstPool = await createPool({
    template: 'bench',
    min: 4,
    max: 4,
    refillConcurrency: 2,
    prefix: 'burst-',
    context: ctx,
  });
  await until(() => burstPool.stats().idle >= 4);
  let started = performance.now();
  const burst = await Promise.all(
    Array.from({ length: 10 }, async (_, i) => {
      const t = performance.now();
      const r = await burstPool.run({ argv: ['echo', `job-${i}`], acquireTimeoutMs: 300_000 });
      if (r.stdout.trim() !== `job-${i}`) throw new Error(`job ${i} answered ${JSON.stringify(r.stdout)}`);
      return performance.now() - t;
    }),
  );
  const burstWall = performance.now() - started;
  await burstPool.close();

  // Sustained sequential jobs.
  const seqPool = await createPool({
    template: 'bench',
    min: 2,
    max: 4,
    refillConcurrency: 2,
    prefix: 'seq-',
    context: ctx,
  });
  await until(() => seqPool.stats().idle >= 2);
  const waits: number[] = [];
  started = performance.now();
  for (let i = 0; i < sustained; i++) {
    const r = await seqPool.run({ argv: ['echo', `job-${i}`], acquireTimeoutMs: 300_000 });
    if (r.stdout.trim() !== `job-${i}`) throw new Error(`job ${i} answered ${JSON.stringify(r.stdout)}`);
    waits.push(r.acquireMs);
  }
  const seqWall = performance.now() - started;
  const seqStats = seqPool.stats();
  await seqPool.close();
  await deleteTemplate('bench', ctx);

  const results = {
    date: new Date().toISOString(),
    samples,
    memoryMiB: MEMORY,
    acquireMs: {
      held: summary(h.acquire),
      warm: summary(w.acquire),
      targets: 'p50 <= 20, p95 <= 50',
    },
    refillOneVmMs: { held: summary(h.refill), warm: summary(w.refill) },
    firstExecMs: {
      heldPool: summary(h.first),
      warmPool: summary(w.first),
      perJobColdBoot: summary(cold),
      perJobClone: summary(clone),
    },
    burst10onPool4: {
      wallMs: Math.round(burstWall),
      jobP95Ms: Math.round(q(burst, 0.95)),
      jobsPerMinute: Math.round((10 / burstWall) * 60_000),
    },
    sustained: {
      jobs: sustained,
      wallMs: Math.round(seqWall),
      jobsPerMinute: Math.round((sustained / seqWall) * 60_000),
      acquireWaitMs: summary(waits),
      failed: seqStats.failed,
    },
    idle: {
      heldRssKiB: heldRss,
      warmRssKiB: warmRss,
      heldCpuPercentOfCore: heldCpu,
      warmCpuPercentOfCore: warmCpu,
    },
    raw: { heldAcquire: h.acquire.map(ms), warmAcquire: w.acquire.map(ms) },
  };
  console.log(JSON.stringify(results, null, 2));
  await writeFile(join(import.meta.dirname, 'results', 'pool.json'), `${JSON.stringify(results, null, 2)}\n`);
} finally {
  // A failed run must not leave QEMU processes behind.
  for (const vm of await listVms(ctx).catch(() => [])) await deleteVm(vm.name, ctx).catch(() => undefined);
  await deleteTemplate('bench', ctx).catch(() => undefined);
  await rm(home, { recursive: true, force: true });
}
