/**
 * How long `doctor` takes on a home of 50 VMs, a few of them running (target < 1 s: it is
 * meant to run before every CI job).
 *
 * The home: RUNNING real VMs (created, left running) and two real VMs created and stopped
 * (one with an extra disk), whose directories are then copied under new names and their
 * records rewritten consistently (name, paths, disks, state disk, fingerprint), up to 50
 * VMs in all. Doctor must find the home coherent before anything is timed.
 *
 * Prints the median of `runs` (default 5) for the library call `doctor()` and for the CLI
 * as a fresh process (`node dist/cli/main.js doctor --json`, when built).
 * Run: npx tsx bench/doctor.ts [runs] [--running N]   (needs the tiny image: localvm image build)
 */
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createQemuBackend } from '../src/backends/qemu/index.js';
import { diskLayout, seedDirFor, stateDiskFor } from '../src/backends/qemu/layout.js';
import { readRecord, vmPaths, writeRecord } from '../src/backends/qemu/state.js';
import { loadConfig } from '../src/config.js';
import { isProblem } from '../src/operations/doctor/classify.js';
import { doctor } from '../src/operations/doctor.js';
import { createExecaRunner } from '../src/runner.js';
import { parseVmSpec, specFingerprint } from '../src/schema.js';

const args = process.argv.slice(2);
const runs = Number(args.find((a, i) => !a.startsWith('--') && args[i - 1] !== '--running') ?? 5);
const runningAt = args.indexOf('--running');
const RUNNING = runningAt >= 0 ? Number(args[runningAt + 1]) : 4;
const TOTAL = 50;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

const root = await mkdtemp(join(tmpdir(), 'lvm-bench-doctor-'));
const config = loadConfig(process.env, { stateDir: join(root, 'state'), runDir: join(root, 'run') });
const runner = createExecaRunner();
const backend = createQemuBackend({ config, runner });
const ctx = { config, runner };

/** Copies stopped VM `from` to `to`, its record rewritten as if `to` had been created the same way. */
async function copyVm(from: string, to: string): Promise<void> {
  const src = vmPaths(config.stateDir, config.runDir, from);
  const dst = vmPaths(config.stateDir, config.runDir, to);
  await cp(src.dir, dst.dir, { recursive: true });
  const record = await readRecord(dst.record);
  if (!record) throw new Error(`${from} has no record`);
  const spec = { ...record.spec, name: to };
  await writeRecord({
    ...record,
    name: to,
    spec,
    fingerprint: specFingerprint(spec),
    paths: dst,
    disks: diskLayout(spec, dst.dir),
    stateDisk: record.stateDisk ? stateDiskFor(dst.dir) : undefined,
    seedDir: seedDirFor(spec, dst.dir),
  });
}

try {
  const started = performance.now();
  for (let i = 1; i <= RUNNING; i++) await backend.create(parseVmSpec({ name: `bench-r${i}`, memory: 128 }));
  await backend.create(parseVmSpec({ name: 'bench-s1', memory: 128 }));
  await backend.create(parseVmSpec({ name: 'bench-s2', memory: 128, disks: [{ name: 'data', size: '64M' }] }));
  await backend.stop('bench-s1', { force: true });
  await backend.stop('bench-s2', { force: true });
  for (let i = 1; i <= TOTAL - RUNNING - 2; i++) await copyVm(i % 2 ? 'bench-s1' : 'bench-s2', `bench-c${i}`);
  console.log(
    `home: ${TOTAL} VMs (${RUNNING} running, 2 created and stopped, ${TOTAL - RUNNING - 2} copies) in ${Math.round(performance.now() - started)} ms`,
  );

  const check = await doctor({}, ctx);
  const problems = check.findings.filter(isProblem);
  if (problems.length) throw new Error(`the bench home is not coherent: ${JSON.stringify(problems, null, 2)}`);
  if (check.findings.length)
    console.log(`(${check.findings.length} info finding(s): ${check.findings.map((f) => f.code).join(', ')})`);

  const lib: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await doctor({}, ctx);
    lib.push(performance.now() - t);
  }
  console.log(
    `doctor() (library, ${TOTAL} VMs): median ${median(lib).toFixed(1)} ms of ${runs} [${lib.map((x) => x.toFixed(0)).join(', ')}]`,
  );

  const main = resolve('dist/cli/main.js');
  if (existsSync(main)) {
    const env = { LOCALVM_HOME: config.stateDir, LOCALVM_RUN_DIR: config.runDir };
    const timeCli = async (argv: string[]) => {
      const times: number[] = [];
      for (let k = 0; k < runs; k++) {
        const r = await runner.run({ file: process.execPath, args: [main, ...argv] }, { env, timeoutMs: 30_000 });
        if (r.exitCode !== 0) throw new Error(`localvm ${argv.join(' ')} exited ${r.exitCode}: ${r.stdout}${r.stderr}`);
        times.push(r.durationMs);
      }
      return times;
    };
    // The same process doing nothing but print its help: node and module loading alone.
    const help = await timeCli(['--help']);
    console.log(`localvm --help (baseline: node + CLI modules): median ${median(help).toFixed(0)} ms of ${runs}`);
    const cli = await timeCli(['doctor', '--json']);
    console.log(
      `localvm doctor --json (a fresh node process): median ${median(cli).toFixed(0)} ms of ${runs} [${cli.map((x) => x.toFixed(0)).join(', ')}]`,
    );
  } else {
    console.log('dist/cli/main.js not built (npm run build): CLI timing skipped');
  }
} finally {
  for (const vm of await backend.list()) await backend.delete(vm.name).catch(() => undefined);
  await rm(root, { recursive: true, force: true });
}
