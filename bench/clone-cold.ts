/**
 * What a clone's first work costs under TCG, against a VM that has been running: QEMU keeps
 * the host code it translates from guest code (translation blocks, TBs) per process, so every
 * clone translates anew the guest code it runs, which a long-lived VM translated once. This is
 * the floor under `createVmFixture({ fresh: 'test' })`'s cost per test (bench/fixture-cost.ts).
 *
 * Per phase, for `clones` clones of the tiny template (one at a time, each deleted once
 * measured) and for one booted VM after it ran the same work once:
 *   restore  createVm({ template }) until it answers: launch, restore, clock/hostname/MAC
 *   idle     the next 300 ms, nothing asked of it: the guest's own timers and daemons
 *   first    the first guest process (`true` through the agent)
 *   second   the second one
 *   sample   the sample suite's test body (tests/fixtures/sample-suite/work.ts: five guest
 *            processes, a file written and read back)
 * each as QEMU CPU time (utime+stime of all its threads, from /proc/<pid>/stat), TBs
 * translated (HMP `info jit` over QMP), and wall time; medians and p95.
 *
 * Prints a table and writes bench/results/clone-cold.json.
 * Run: npx tsx bench/clone-cold.ts [clones=8]   (needs the tiny image: localvm image build)
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { vmPaths } from '../src/backends/qemu/state.js';
import { QmpClient } from '../src/backends/qemu/qmp.js';
import { loadConfig } from '../src/config.js';
import { connect } from '../src/connector.js';
import { realClock, type OperationContext } from '../src/context.js';
import { createTemplate, deleteTemplate } from '../src/operations/template.js';
import { createVm, deleteVm, listVms, vmInfo, waitForVmReady } from '../src/operations/vm.js';
import { createExecaRunner } from '../src/runner.js';
import { sampleWork } from '../tests/fixtures/sample-suite/work.js';
import { median, p95, round } from './stats.js';

const clones = Number(process.argv[2] ?? 8);
const MEMORY = 256;
const PHASES = ['restore', 'idle', 'first', 'second', 'sample'] as const;
type Phase = (typeof PHASES)[number];

const home = await mkdtemp(join(tmpdir(), 'lvm-bench-cold-'));
const ctx: OperationContext = {
  config: loadConfig({ ...process.env, LOCALVM_HOME: home }),
  runner: createExecaRunner(),
  clock: realClock,
};

/** CPU time (ms) QEMU `pid` has used, all threads: utime + stime in clock ticks (100 Hz). */
async function qemuCpuMs(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** TBs translated so far by VM `name`'s QEMU (`info jit`'s "TB count"). */
async function tbCount(name: string): Promise<number> {
  const q = await QmpClient.connect(vmPaths(ctx.config.stateDir, ctx.config.runDir, name).qmpSocket);
  try {
    const text = (await q.execute('human-monitor-command', { 'command-line': 'info jit' })) as string;
    return Number(/TB count\s+(\d+)/.exec(text)?.[1] ?? NaN);
  } finally {
    q.close();
  }
}

interface Sample {
  cpuMs: number;
  tbs: number;
  wallMs: number;
}

/** Measures `fn` on VM `name`: QEMU CPU, TBs and wall time it took. */
async function measure(name: string, pid: number, fn: () => Promise<unknown>): Promise<Sample> {
  const [cpu0, tb0, t0] = [await qemuCpuMs(pid), await tbCount(name), performance.now()];
  await fn();
  const wallMs = performance.now() - t0;
  return { cpuMs: (await qemuCpuMs(pid)) - cpu0, tbs: (await tbCount(name)) - tb0, wallMs };
}

/** The phases after `restore` on a running VM. */
async function afterReady(name: string, pid: number): Promise<Record<Exclude<Phase, 'restore'>, Sample>> {
  const vm = await connect(name, ctx);
  return {
    idle: await measure(name, pid, () => sleep(300)),
    first: await measure(name, pid, () => vm.exec(['true'])),
    second: await measure(name, pid, () => vm.exec(['true'])),
    sample: await measure(name, pid, () => sampleWork(vm, 'cold-sample')),
  };
}

const summary = (xs: Sample[], key: keyof Sample) => ({
  median: round(median(xs.map((x) => x[key]))),
  p95: round(p95(xs.map((x) => x[key]))),
});

try {
  await createTemplate({ name: 'cold', spec: { memory: MEMORY } }, ctx);
  const perPhase: Record<Phase, Sample[]> = { restore: [], idle: [], first: [], second: [], sample: [] };
  for (let i = 0; i < clones; i++) {
    const name = `clone-${i}`;
    const t0 = performance.now();
    await createVm({ name, template: 'cold' }, ctx);
    await waitForVmReady(name, {}, ctx);
    const wallMs = performance.now() - t0;
    const pid = (await vmInfo(name, ctx)).pid as number;
    // Before the restore nothing was translated: what it has now is the restore's.
    perPhase.restore.push({ cpuMs: await qemuCpuMs(pid), tbs: await tbCount(name), wallMs });
    for (const [phase, s] of Object.entries(await afterReady(name, pid))) perPhase[phase as Phase].push(s);
    await deleteVm(name, ctx);
  }

  // A booted VM that has run the sample work once: its code paths are translated.
  await createVm({ name: 'warm', memory: MEMORY }, ctx);
  await waitForVmReady('warm', {}, ctx);
  const warmPid = (await vmInfo('warm', ctx)).pid as number;
  await sleep(2_000);
  await sampleWork(await connect('warm', ctx), 'warm-up');
  const warm = await afterReady('warm', warmPid);
  await deleteVm('warm', ctx);
  await deleteTemplate('cold', ctx);

  const clone = Object.fromEntries(
    PHASES.map((p) => [
      p,
      {
        cpuMs: summary(perPhase[p], 'cpuMs'),
        tbs: summary(perPhase[p], 'tbs'),
        wallMs: summary(perPhase[p], 'wallMs'),
      },
    ]),
  ) as Record<Phase, Record<keyof Sample, ReturnType<typeof summary>>>;
  const warmRow = (s: Sample) => ({ cpuMs: s.cpuMs, tbs: s.tbs, wallMs: round(s.wallMs) });
  const results = {
    date: new Date().toISOString(),
    clones,
    memoryMiB: MEMORY,
    clone,
    warm: {
      idle: warmRow(warm.idle),
      first: warmRow(warm.first),
      second: warmRow(warm.second),
      sample: warmRow(warm.sample),
    },
  };
  console.log(`${clones} clones of the tiny template (median / p95) against a warm booted VM, TCG`);
  console.log('phase     clone QEMU CPU   clone TBs        clone wall       warm CPU  warm TBs  warm wall');
  const pair = (s: ReturnType<typeof summary>, unit: string) => `${s.median}/${s.p95}${unit}`.padEnd(17);
  for (const p of PHASES) {
    const c = clone[p];
    const w = p === 'restore' ? undefined : results.warm[p];
    console.log(
      `${p.padEnd(9)} ${pair(c.cpuMs, ' ms')}${pair(c.tbs, '')}${pair(c.wallMs, ' ms')}` +
        (w ? `${`${w.cpuMs} ms`.padEnd(10)}${String(w.tbs).padEnd(10)}${w.wallMs} ms` : '(boot)'),
    );
  }
  await writeFile(join(import.meta.dirname, 'results/clone-cold.json'), `${JSON.stringify(results, null, 2)}\n`);
} finally {
  for (const vm of await listVms(ctx)) await deleteVm(vm.name, ctx).catch(() => undefined);
  await deleteTemplate('cold', ctx).catch(() => undefined);
  await rm(home, { recursive: true, force: true });
}
