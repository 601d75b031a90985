/**
 * The Debian-guest row of the template benchmark (issue 12): a clone of a frozen Debian
 * bookworm guest (the agent image of scripts/build-debian-image.sh, 1024 MiB, cloud-init
 * user-data) against a cold boot of the same spec, in the same run on the same machine.
 *
 *   template: createTemplate (boot, agent, cloud-init done, freeze) time and size on disk.
 *   cold:     createVm + waitForVmReady (agent answers), then until `cloud-init status --wait`
 *             returns (what a clone already has). Cold and clone alternate.
 *   clone:    createVm({ template }) + waitForVmReady, restored.
 *   burst:    3 clones created concurrently: wall time until all are ready.
 *   rss:      VmRSS of a clone's QEMU vs a booted VM's, both idle and ready.
 *
 * Prints medians, p95 and ratios and writes bench/results/template-debian.json.
 * Run: npx tsx bench/template-debian.ts [runs=3] [image]
 *   (image default: bash scripts/build-debian-image.sh --print-path agent; build it as root first)
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config.js';
import { connect } from '../src/connector.js';
import { realClock, type OperationContext } from '../src/context.js';
import { createTemplate, deleteTemplate } from '../src/operations/template.js';
import { createVm, deleteVm, listVms, waitForVmReady } from '../src/operations/vm.js';
import { createExecaRunner } from '../src/runner.js';
import { idleRssThenDelete, median, p95, round, templateRow } from './stats.js';

const runs = Number(process.argv[2] ?? 3);
const image =
  process.argv[3] ??
  execFileSync('bash', [join(import.meta.dirname, '../scripts/build-debian-image.sh'), '--print-path', 'agent'], {
    encoding: 'utf8',
  }).trim();
const MEMORY = 1024;
const BOOT_MS = 600_000;
const USER_DATA = `#cloud-config
write_files:
  - path: /etc/localvm-bench.txt
    content: written by cloud-init
runcmd:
  - [sh, -c, 'echo ran > /var/lib/localvm-bench-runcmd']
`;
const spec = { image, memory: MEMORY, userData: USER_DATA, timeouts: { readyMs: BOOT_MS } };

const stats = (xs: number[]) => ({ median: round(median(xs)), p95: round(p95(xs)), all: xs.map(round) });

const home = await mkdtemp(join(tmpdir(), 'lvm-bench-tpld-'));
const ctx: OperationContext = {
  config: loadConfig({ ...process.env, LOCALVM_HOME: home }),
  runner: createExecaRunner(),
  clock: realClock,
};

/** Create → ready (agent), and for a boot → cloud-init done. */
async function timed(name: string, input: Parameters<typeof createVm>[0], cloudInit: boolean) {
  const started = performance.now();
  await createVm(input, ctx);
  await waitForVmReady(name, { timeoutMs: BOOT_MS }, ctx);
  const readyMs = performance.now() - started;
  if (!cloudInit) return { readyMs, cloudInitMs: readyMs };
  const r = await (await connect(name, ctx)).exec(['cloud-init', 'status', '--wait'], { timeoutMs: BOOT_MS });
  if (r.exitCode !== 0 && r.exitCode !== 2) throw new Error(`cloud-init in ${name} exited ${r.exitCode}`);
  return { readyMs, cloudInitMs: performance.now() - started };
}

try {
  console.error(`image ${image}, ${MEMORY} MiB, ${runs} runs`);
  let started = performance.now();
  const template = await createTemplate({ name: 'deb', spec }, ctx);
  const templateMs = performance.now() - started;
  console.error(`template frozen in ${round(templateMs)} ms`);

  const cold: { readyMs: number; cloudInitMs: number }[] = [];
  const clone: number[] = [];
  for (let i = 0; i < runs; i++) {
    cold.push(await timed(`cold-${i}`, { name: `cold-${i}`, ...spec }, true));
    clone.push((await timed(`clone-${i}`, { name: `clone-${i}`, template: 'deb' }, false)).readyMs);
    console.error(
      `run ${i}: cold ${round(cold[i]!.readyMs)} ms (cloud-init ${round(cold[i]!.cloudInitMs)}), clone ${round(clone[i]!)} ms`,
    );
    if (i > 0) {
      await deleteVm(`cold-${i}`, ctx);
      await deleteVm(`clone-${i}`, ctx);
    }
  }
  // Settle, so both VMs are idle when their RSS is read.
  const [rssCold = 0, rssClone = 0] = await idleRssThenDelete(['cold-0', 'clone-0'], 5_000, ctx);

  started = performance.now();
  const burst = await Promise.all(
    Array.from({ length: 3 }, (_, i) =>
      timed(`burst-${i}`, { name: `burst-${i}`, template: 'deb' }, false).then((t) => t.readyMs),
    ),
  );
  const burstWallMs = performance.now() - started;
  for (let i = 0; i < 3; i++) await deleteVm(`burst-${i}`, ctx);
  await deleteTemplate('deb', ctx);

  const coldReady = cold.map((c) => c.readyMs);
  const results = {
    date: new Date().toISOString(),
    image,
    runs,
    memoryMiB: MEMORY,
    template: templateRow(template, templateMs),
    coldReadyMs: stats(coldReady),
    coldCloudInitDoneMs: stats(cold.map((c) => c.cloudInitMs)),
    cloneReadyMs: stats(clone),
    speedup: Number((median(coldReady) / median(clone)).toFixed(1)),
    burst3: { wallMs: round(burstWallMs), ...stats(burst) },
    rssKiB: { cold: rssCold, clone: rssClone, ratio: Number((rssClone / rssCold).toFixed(2)) },
  };
  console.log(JSON.stringify(results, null, 2));
  await writeFile(
    join(import.meta.dirname, 'results', 'template-debian.json'),
    `${JSON.stringify(results, null, 2)}\n`,
  );
} finally {
  // A failed run must not leave QEMU processes behind.
  for (const vm of await listVms(ctx).catch(() => [])) await deleteVm(vm.name, ctx).catch(() => undefined);
  await rm(home, { recursive: true, force: true });
}
