/**
 * Templates against cold boots, measured in the same run on the same machine.
 *
 *   template: createTemplate (boot to agent, freeze) time and size on disk.
 *   cold:     createVm + waitForVmReady of the tiny guest, booted.
 *   clone:    createVm({ template }) + waitForVmReady, restored. Cold and clone alternate, and
 *             each VM is deleted once measured, so each measurement has the machine to itself.
 *   burst:    10 clones created concurrently: wall time until all are ready, and each one's time.
 *   rss:      resident memory (VmRSS) of a clone's QEMU vs a booted VM's, both idle and ready.
 *
 * Prints medians, p95 and ratios and writes bench/results/template.json.
 * Run: npx tsx bench/template.ts [runs=10]   (needs the tiny image: localvm image build)
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config.js';
import { realClock, type OperationContext } from '../src/context.js';
import { createTemplate, deleteTemplate } from '../src/operations/template.js';
import { createVm, deleteVm, listVms, waitForVmReady } from '../src/operations/vm.js';
import { createExecaRunner } from '../src/runner.js';
import { idleRssThenDelete, median, p95, round, templateRow } from './stats.js';

const runs = Number(process.argv[2] ?? 10);
const MEMORY = 256;

const home = await mkdtemp(join(tmpdir(), 'lvm-bench-tpl-'));
const ctx: OperationContext = {
  config: loadConfig({ ...process.env, LOCALVM_HOME: home }),
  runner: createExecaRunner(),
  clock: realClock,
};

async function timed(name: string, input: Parameters<typeof createVm>[0]): Promise<number> {
  const started = performance.now();
  await createVm(input, ctx);
  await waitForVmReady(name, {}, ctx);
  return performance.now() - started;
}

try {
  let started = performance.now();
  const template = await createTemplate({ name: 'bench', spec: { memory: MEMORY } }, ctx);
  const templateMs = performance.now() - started;

  const cold: number[] = [];
  const clone: number[] = [];
  for (let i = 0; i < runs; i++) {
    // Each VM goes as soon as it is measured: a VM just booted keeps the CPU busy for seconds
    // (modules, DHCP), and the next measurement would pay for it.
    cold.push(await timed(`cold-${i}`, { name: `cold-${i}`, memory: MEMORY }));
    await deleteVm(`cold-${i}`, ctx);
    clone.push(await timed(`clone-${i}`, { name: `clone-${i}`, template: 'bench' }));
    await deleteVm(`clone-${i}`, ctx);
  }
  // One of each for RSS, settled a little so both are idle when it is read.
  await timed('cold-rss', { name: 'cold-rss', memory: MEMORY });
  await timed('clone-rss', { name: 'clone-rss', template: 'bench' });
  const [rssCold = 0, rssClone = 0] = await idleRssThenDelete(['cold-rss', 'clone-rss'], 2_000, ctx);

  started = performance.now();
  const burst = await Promise.all(
    Array.from({ length: 10 }, (_, i) => timed(`burst-${i}`, { name: `burst-${i}`, template: 'bench' })),
  );
  const burstWallMs = performance.now() - started;
  for (let i = 0; i < 10; i++) await deleteVm(`burst-${i}`, ctx);
  await deleteTemplate('bench', ctx);

  const results = {
    date: new Date().toISOString(),
    runs,
    memoryMiB: MEMORY,
    template: templateRow(template, templateMs),
    coldReadyMs: { median: round(median(cold)), p95: round(p95(cold)), all: cold.map(round) },
    cloneReadyMs: { median: round(median(clone)), p95: round(p95(clone)), all: clone.map(round) },
    speedup: Number((median(cold) / median(clone)).toFixed(1)),
    burst10: { wallMs: round(burstWallMs), median: round(median(burst)), p95: round(p95(burst)) },
    rssKiB: { cold: rssCold, clone: rssClone, ratio: Number((rssClone / rssCold).toFixed(2)) },
  };
  console.log(JSON.stringify(results, null, 2));
  await writeFile(join(import.meta.dirname, 'results', 'template.json'), `${JSON.stringify(results, null, 2)}\n`);
} finally {
  // A failed run must not leave QEMU processes behind.
  for (const vm of await listVms(ctx).catch(() => [])) await deleteVm(vm.name, ctx).catch(() => undefined);
  await rm(home, { recursive: true, force: true });
}
