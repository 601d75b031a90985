/**
 * Per-test cost of VM fixtures on the 10-test sample suite (tests/fixtures/sample-suite),
 * one worker, real QEMU: a fresh VM per test, the worker-scoped fixture, a template clone per
 * test (`createVmFixture({ fresh: 'test' })`, its template made in the run and counted in the
 * first test), and with reuse across runs (measured on the second run) the worker fixture and
 * the clone per test, whose template is then kept.
 * Prints wall time, mean and median test duration per mode, and the ratios to a booted VM
 * per test and to the worker fixture. Run: `npx tsx bench/fixture-cost.ts`
 * (builds nothing: run `npm run build` first so the suite imports the current dist).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { loadConfig } from '../src/config.js';
import { deleteVm, listVms } from '../src/operations/vm.js';
import { deleteTemplate, listTemplates } from '../src/operations/template.js';
import { createExecaRunner } from '../src/runner.js';

const repo = resolve(import.meta.dirname, '..');
const suiteDir = join(repo, 'tests/fixtures/sample-suite');
const home = mkdtempSync(join(tmpdir(), 'localvm-bench-'));
const stateDir = join(home, 'state');
const ctx = { config: loadConfig({ ...process.env, LOCALVM_HOME: stateDir }), runner: createExecaRunner() };

interface RunStats {
  wallMs: number;
  durations: number[];
}

async function runSuite(label: string, extra: Record<string, string>): Promise<RunStats> {
  const report = join(home, `${label}.json`);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('VITEST')));
  const started = performance.now();
  const code = await new Promise<number | null>((done) => {
    const child = spawn(
      process.execPath,
      [join(repo, 'node_modules/vitest/vitest.mjs'), 'run', '--reporter=json', `--outputFile=${report}`],
      { cwd: suiteDir, env: { ...env, LOCALVM_HOME: stateDir, SAMPLE_WORKERS: '1', ...extra }, stdio: 'ignore' },
    );
    child.on('close', done);
  });
  const wallMs = performance.now() - started;
  if (code !== 0) throw new Error(`${label}: the sample suite failed (exit ${code})`);
  const json = JSON.parse(readFileSync(report, 'utf8')) as {
    testResults: { assertionResults: { duration: number }[] }[];
  };
  const durations = json.testResults.flatMap((f) => f.assertionResults.map((a) => a.duration));
  if (durations.length !== 10) throw new Error(`${label}: expected 10 tests, got ${durations.length}`);
  return { wallMs, durations };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
};
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

try {
  const results: [string, RunStats][] = [];
  results.push(['fresh VM per test', await runSuite('fresh', { SAMPLE_MODE: 'fresh' })]);
  results.push(['worker fixture', await runSuite('worker', {})]);
  results.push(["template clone per test (fresh: 'test')", await runSuite('clone', { SAMPLE_MODE: 'clone' })]);
  await runSuite('reuse-warmup', { LOCALVM_REUSE: '1' });
  results.push(['worker fixture, reused across runs', await runSuite('reuse', { LOCALVM_REUSE: '1' })]);
  // With reuse on the template is kept across runs: a later run clones it straight away.
  await runSuite('clone-reuse-warmup', { SAMPLE_MODE: 'clone', LOCALVM_REUSE: '1' });
  results.push([
    'clone per test, template kept across runs',
    await runSuite('clone-reuse', { SAMPLE_MODE: 'clone', LOCALVM_REUSE: '1' }),
  ]);

  const base = results[0]?.[1];
  const worker = results[1]?.[1];
  console.log(
    `host: ${process.platform} ${process.arch}, accel ${ctx.config.accel} (auto → tcg here), 1 vitest worker, 10 tests`,
  );
  console.log('mode                                      wall      mean/test  median/test  fresh÷mode  mode÷worker');
  for (const [label, r] of results) {
    const ratio = base ? mean(base.durations) / mean(r.durations) : 1;
    const vsWorker = worker ? mean(r.durations) / mean(worker.durations) : 1;
    console.log(
      `${label.padEnd(41)} ${(r.wallMs / 1000).toFixed(1).padStart(6)} s ${mean(r.durations).toFixed(0).padStart(7)} ms ${median(r.durations).toFixed(0).padStart(9)} ms ${ratio.toFixed(1).padStart(9)}× ${vsWorker.toFixed(2).padStart(10)}×`,
    );
  }
} finally {
  for (const vm of await listVms(ctx)) await deleteVm(vm.name, ctx);
  for (const t of await listTemplates(ctx)) await deleteTemplate(t.name, ctx);
  rmSync(home, { recursive: true, force: true });
}
