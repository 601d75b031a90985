/**
 * Exec round trip over the two QEMU transports of one VM: the guest agent and SSH (the
 * system OpenSSH client through a warm control master). The Debian agent image has both:
 * qemu-guest-agent, and sshd with the key localvm injects through cloud-init.
 *
 *   agent: backend.transport(name, 'agent').exec(['true'])
 *   ssh:   backend.transport(name, 'ssh').exec(['true'])   (root through sudo, as the agent runs)
 *   ssh, no sudo: the same ssh command line running `true` as the login user, to show what
 *          sudo costs (not what localvm runs: its exec is root, as over the agent).
 *
 * The two are alternated call by call, so load on a shared machine hits both alike. Prints
 * medians and p95 per transport and writes bench/results/transport.json.
 * Run: npx tsx bench/transport.ts [calls]   (needs: bash scripts/build-debian-image.sh agent)
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config.js';
import { getBackend, realClock, type OperationContext } from '../src/context.js';
import { ready } from '../src/operations/ready.js';
import { createVm, deleteVm, waitForVmReady } from '../src/operations/vm.js';
import { controlPathFor, sshExecCommand } from '../src/backends/qemu/ssh/argv.js';
import { readRecord, vmPaths } from '../src/backends/qemu/state.js';
import { createExecaRunner } from '../src/runner.js';

const calls = Number(process.argv[2] ?? 40);
const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
};
const ms = (x: number) => Math.round(x * 10) / 10;

const image = execFileSync('bash', ['scripts/build-debian-image.sh', '--print-path', 'agent'], {
  encoding: 'utf8',
}).trim();
const home = await mkdtemp(join(tmpdir(), 'lvm-bench-transport-'));
const ctx: OperationContext = {
  config: loadConfig({ ...process.env, LOCALVM_HOME: home }),
  runner: createExecaRunner(),
  clock: realClock,
};
const name = 'bench-transport';
try {
  const t0 = performance.now();
  await createVm({ name, image, memory: 1024, userData: '#cloud-config\n{}\n' }, ctx);
  await waitForVmReady(name, { timeoutMs: 900_000, strategies: [ready.agent(), ready.ssh()] }, ctx);
  const readyS = (performance.now() - t0) / 1000;
  const backend = await getBackend('qemu', ctx);
  const agent = backend.transport?.(name, 'agent');
  const ssh = backend.transport?.(name, 'ssh');
  if (!agent || !ssh) throw new Error('the QEMU backend has no agent or ssh transport');
  // Warm both: the agent session and the control master.
  for (let i = 0; i < 3; i++) {
    await agent.exec(['true']);
    await ssh.exec(['true']);
  }
  const paths = vmPaths(ctx.config.stateDir, ctx.config.runDir, name);
  const record = await readRecord(paths.record);
  if (!record?.ssh) throw new Error('the VM has no SSH access recorded');
  const target = { name, ...record.ssh, controlPath: controlPathFor(paths.dir, ctx.config.runDir) };
  const plain = sshExecCommand(target, ['true'], { pinned: true });
  const noSudo = { exec: async () => ctx.runner.run(plain, { input: '' }) };
  const times = { agent: [] as number[], ssh: [] as number[], sshNoSudo: [] as number[] };
  for (let i = 0; i < calls; i++) {
    for (const [kind, t] of [
      ['agent', agent],
      ['ssh', ssh],
      ['sshNoSudo', noSudo],
    ] as const) {
      const started = performance.now();
      const r = await t.exec(['true']);
      times[kind].push(performance.now() - started);
      if (r.exitCode !== 0) throw new Error(`${kind}: true exited ${r.exitCode}: ${r.stderr}`);
    }
  }
  const row = (xs: number[]) => ({ medianMs: ms(quantile(xs, 0.5)), p95Ms: ms(quantile(xs, 0.95)) });
  const result = {
    when: new Date().toISOString(),
    calls,
    loadavg: (await import('node:os')).loadavg().map((l) => Math.round(l * 100) / 100),
    createToReadyS: Math.round(readyS * 10) / 10,
    agent: row(times.agent),
    ssh: row(times.ssh),
    sshNoSudo: row(times.sshNoSudo),
  };
  console.log(`exec ['true'] round trip, ${calls} calls each, alternated (TCG Debian guest):`);
  console.log(`  agent: median ${result.agent.medianMs} ms, p95 ${result.agent.p95Ms} ms`);
  console.log(`  ssh:   median ${result.ssh.medianMs} ms, p95 ${result.ssh.p95Ms} ms (warm control master, sudo)`);
  console.log(
    `  ssh as the login user, no sudo: median ${result.sshNoSudo.medianMs} ms, p95 ${result.sshNoSudo.p95Ms} ms`,
  );
  console.log(`  load average ${result.loadavg.join(' ')}`);
  await mkdir('bench/results', { recursive: true });
  await writeFile('bench/results/transport.json', `${JSON.stringify(result, null, 2)}\n`);
} finally {
  await deleteVm(name, ctx).catch(() => undefined);
  await rm(home, { recursive: true, force: true });
}
