/**
 * Real-VM timings of the QEMU backend against a bare baseline measured in the same run.
 *
 *   baseline: launch the identical QEMU command line, then ping the guest agent in a tight
 *             loop over a raw socket: the earliest moment anyone could know the VM is up.
 *   localvm:  createVm + waitForVmReady from the library.
 *   stop:     graceful stopVm of a VM that just became ready (ACPI power button), and how
 *             many of those stops the backend had to force.
 *
 * Prints medians and ratios and writes bench/results/vm-lifecycle.json.
 * Run: npx tsx bench/vm-lifecycle.ts [runs] [--stop-only]   (needs the tiny image: localvm image build)
 * --stop-only measures only the graceful stop and prints it without writing the results file.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildQemuCommand } from '../src/backends/qemu/cmdline.js';
import { loadConfig } from '../src/config.js';
import { connect } from '../src/connector.js';
import { findTinyImage } from '../src/backends/qemu/image/index.js';
import { createVm, deleteVm, startVm, stopVm, vmInfo, waitForVmReady } from '../src/operations/vm.js';
import { createExecaRunner } from '../src/runner.js';
import { getBackend, realClock, type OperationContext } from '../src/context.js';
import type { GuestTransport } from '../src/transport.js';

const args = process.argv.slice(2);
const runs = Number(args.find((a) => !a.startsWith('--')) ?? 5);
const stopOnly = args.includes('--stop-only');
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Connects to a unix socket, retrying every 2 ms until it accepts. */
async function connectRetry(path: string): Promise<Socket> {
  while (true) {
    const sock = await new Promise<Socket | undefined>((resolve) => {
      const s = netConnect(path);
      s.once('connect', () => resolve(s));
      s.once('error', () => resolve(undefined));
    });
    if (sock) return sock;
    await sleep(2);
  }
}

/** Sends guest-sync and resolves on its reply: the agent answers the queued sync as soon as it is up. */
function firstAgentAnswer(sock: Socket): Promise<void> {
  const id = Math.floor(Math.random() * 2 ** 31);
  return new Promise((resolve) => {
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      for (const line of buf.split('\n')) {
        try {
          if (JSON.parse(line).return === id) resolve();
        } catch {
          // partial line
        }
      }
    });
    sock.write(JSON.stringify({ execute: 'guest-sync', arguments: { id } }) + '\n');
  });
}

async function baselineOnce(runner: ReturnType<typeof createExecaRunner>, accel: 'tcg' | 'kvm'): Promise<number> {
  const image = await findTinyImage(loadConfig());
  if (!image) throw new Error('tiny image missing: run `localvm image build`');
  const dir = await mkdtemp(join(tmpdir(), 'lvb-'));
  const paths = {
    dir,
    qmpSocket: join(dir, 'qmp.sock'),
    qgaSocket: join(dir, 'qga.sock'),
    consoleLog: join(dir, 'console.log'),
    pidFile: join(dir, 'qemu.pid'),
  };
  const cmd = buildQemuCommand({
    name: `bench-baseline-${randomBytes(3).toString('hex')}`,
    arch: 'x86_64',
    accel,
    cpus: 1,
    memory: 256,
    boot: { kind: 'kernel', kernel: image.kernel, initrd: image.initrd, append: image.append },
    ports: [],
    isolated: false,
    disks: [],
    paths,
  });
  const started = performance.now();
  const r = await runner.run(cmd);
  if (r.exitCode !== 0) throw new Error(`baseline launch failed: ${r.stderr}`);
  const sock = await connectRetry(paths.qgaSocket);
  await firstAgentAnswer(sock);
  const ms = performance.now() - started;
  sock.destroy();
  const pid = Number((await readFile(paths.pidFile, 'utf8')).trim());
  process.kill(pid, 'SIGKILL');
  await sleep(50);
  await rm(dir, { recursive: true, force: true });
  return ms;
}

/**
 * Graceful stops of one VM, each right after it became ready: the moment a create-then-stop
 * presses the power button. `forced` counts the stops where the backend gave up waiting.
 */
async function measureStops(ctx: OperationContext, backendLog: string[]): Promise<{ stops: number[]; forced: number }> {
  const name = `bench-stop-${randomBytes(2).toString('hex')}`;
  const stops: number[] = [];
  let forced = 0;
  await createVm({ name, image: 'tiny', backend: 'qemu', memory: 256 }, ctx);
  for (let i = 0; i < runs; i++) {
    if (i > 0) await startVm(name, ctx);
    await waitForVmReady(name, {}, ctx);
    backendLog.length = 0;
    const t = performance.now();
    await stopVm(name, {}, ctx);
    stops.push(performance.now() - t);
    if (backendLog.some((l) => l.includes('forcing'))) forced++;
    console.log(`stop ${i + 1}/${runs}: ${Math.round(stops.at(-1)!)} ms${forced ? ` (${forced} forced so far)` : ''}`);
  }
  await deleteVm(name, ctx);
  return { stops, forced };
}

async function main() {
  const stateDir = await mkdtemp(join(tmpdir(), 'lvbench-'));
  const config = loadConfig({ ...process.env, LOCALVM_HOME: stateDir });
  const runner = createExecaRunner();
  const backendLog: string[] = [];
  const ctx = { config, runner, clock: realClock, log: (line: string) => backendLog.push(line) };

  if (stopOnly) {
    const { stops, forced } = await measureStops(ctx, backendLog);
    await rm(stateDir, { recursive: true, force: true });
    console.log(`graceful stop right after ready: ${median(stops).toFixed(0)} ms median of ${runs}, ${forced} forced`);
    return;
  }

  // Detection latency: from the moment the agent's answer reached us (the backend probe
  // resolving ready) to waitForVmReady returning. The answering probe is connected before the
  // agent starts (it waits on a queued guest-sync), so that moment is the agent's first answer.
  const backend = await getBackend('qemu', ctx);
  const guest = backend.guest.bind(backend);
  let answeredAt = 0;
  let answerWait = 0;
  const timedProbe = (transport: GuestTransport) => async (t: number) => {
    const s = performance.now();
    const r = await transport.probe(t);
    if (r.ready) {
      answeredAt = performance.now();
      answerWait = answeredAt - s;
    }
    return r;
  };
  backend.guest = (name) => {
    const transport = guest(name);
    return { ...transport, probe: timedProbe(transport) };
  };
  const detection: number[] = [];
  const answeringProbeWaited: number[] = [];
  const baseline: number[] = [];
  const create: number[] = [];
  const ready: number[] = [];
  const total: number[] = [];
  let accel: 'tcg' | 'kvm' = 'tcg';
  for (let i = 0; i < runs; i++) {
    // Alternate so that machine noise hits both sides alike.
    const name = `bench-${i}-${randomBytes(2).toString('hex')}`;
    const t0 = performance.now();
    const info = await createVm({ name, image: 'tiny', backend: 'qemu', memory: 256 }, ctx);
    const t1 = performance.now();
    await waitForVmReady(name, {}, ctx);
    const t2 = performance.now();
    detection.push(t2 - answeredAt);
    answeringProbeWaited.push(answerWait);
    accel = info.accel === 'kvm' ? 'kvm' : 'tcg';
    create.push(t1 - t0);
    ready.push(t2 - t1);
    total.push(t2 - t0);
    await deleteVm(name, ctx);
    baseline.push(await baselineOnce(runner, accel));
    console.log(`run ${i + 1}/${runs}: localvm ${Math.round(t2 - t0)} ms, baseline ${Math.round(baseline.at(-1)!)} ms`);
  }

  // Steady-state costs on one VM.
  const name = `bench-steady-${randomBytes(2).toString('hex')}`;
  await createVm({ name, image: 'tiny', backend: 'qemu', memory: 256 }, ctx);
  await waitForVmReady(name, {}, ctx);
  const vm = await connect(name, ctx);
  const execTimes: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t = performance.now();
    await vm.exec(['true']);
    execTimes.push(performance.now() - t);
  }
  const payload = randomBytes(1024 * 1024);
  const puts: number[] = [];
  const gets: number[] = [];
  for (let i = 0; i < 3; i++) {
    let t = performance.now();
    await vm.putFile('/tmp/bench.bin', payload);
    puts.push(performance.now() - t);
    t = performance.now();
    const back = await vm.getFile('/tmp/bench.bin');
    gets.push(performance.now() - t);
    const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
    if (sha(back) !== sha(payload)) throw new Error('1 MiB round trip differs');
  }
  await sleep(2000);
  const pid = (await vmInfo(name, ctx)).pid;
  const status = pid ? await readFile(`/proc/${pid}/status`, 'utf8') : '';
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  await deleteVm(name, ctx);
  const { stops, forced } = await measureStops(ctx, backendLog);
  await rm(stateDir, { recursive: true, force: true });

  const results = {
    date: new Date().toISOString(),
    accel,
    runs,
    baselineLaunchToAgentMs: median(baseline),
    localvmCreateToReadyMs: median(total),
    localvmCreateMs: median(create),
    localvmWaitReadyMs: median(ready),
    overheadRatio: median(total) / median(baseline),
    detectionLatencyMs: median(detection),
    answeringProbeWaitedMs: median(answeringProbeWaited),
    pairedDifferenceMs: median(total.map((t, i) => t - baseline[i]!)),
    execTrueMs: median(execTimes),
    put1MiBMs: median(puts),
    get1MiBMs: median(gets),
    idleRssMiB: Math.round(rssKiB / 1024),
    gracefulStopMs: median(stops),
    forcedStops: forced,
  };
  console.table(
    Object.entries(results).map(([k, v]) => ({
      metric: k,
      value: typeof v === 'number' ? Math.round(v * 100) / 100 : v,
    })),
  );
  console.log(
    `localvm create→ready is ${(results.overheadRatio * 100 - 100).toFixed(1)}% over the bare baseline (target ≤ 10%); ` +
      `detection latency ${results.detectionLatencyMs.toFixed(0)} ms median (target ≤ 100 ms)`,
  );
  await mkdir(new URL('./results/', import.meta.url), { recursive: true });
  await writeFile(new URL('./results/vm-lifecycle.json', import.meta.url), JSON.stringify(results, null, 2) + '\n');
}

await main();
