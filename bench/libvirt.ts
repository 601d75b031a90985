/**
 * The libvirt backend's costs against the QEMU backend, all in the same run:
 *
 *   create→ready  createVm + waitForVmReady of the tiny image: QEMU backend, libvirt on this
 *                 machine's system daemon, libvirt on a second daemon over SSH (another user's
 *                 session daemon behind an sshd on 127.0.0.1, tests/fixtures/libvirtRemote.ts).
 *   round trip    one `virsh -c URI version` and one `virsh -c URI domstate NAME`, local vs SSH.
 *   list          listVmsByHost across the two hosts (each holding one VM) vs each host alone.
 *
 * Runs alternate between the variants so load drifts hit them alike. Prints medians and writes
 * bench/results/libvirt.json. Needs root, libvirt running (scripts/setup-libvirt.sh) and the
 * tiny image. Run: npx tsx bench/libvirt.ts [runs]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config.js';
import { realClock, type OperationContext } from '../src/context.js';
import { listVmsByHost } from '../src/operations/hosts.js';
import { cleanupVms, createVm, deleteVm, waitForVmReady } from '../src/operations/vm.js';
import { createExecaRunner } from '../src/runner.js';
import { median } from './stats.js';
import { startRemoteHost } from '../tests/fixtures/libvirtRemote.js';

const runs = Number(process.argv[2] ?? 3);
const PREFIX = 'lvbench-';
const ms = (n: number) => `${Math.round(n)} ms`;

async function timed<T>(fn: () => Promise<T>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

const remote = await startRemoteHost();
const home = mkdtempSync(join(tmpdir(), 'localvm-lvbench-'));
writeFileSync(join(home, 'hosts.json'), JSON.stringify({ hosts: { local: 'qemu:///system', remote: remote.uri } }));
const env = { ...process.env, LOCALVM_HOME: home };
const ctx: OperationContext = { config: loadConfig(env), runner: createExecaRunner(), clock: realClock };
const only = (host: string): OperationContext => ({ ...ctx, config: { ...ctx.config, libvirtHost: host } });

const variants = {
  qemu: { backend: 'qemu' },
  'libvirt local': { backend: 'libvirt', host: 'local' },
  'libvirt ssh': { backend: 'libvirt', host: 'remote' },
} as const;
type Variant = keyof typeof variants;
const createReady: Record<Variant, number[]> = { qemu: [], 'libvirt local': [], 'libvirt ssh': [] };
const roundTrip = {
  'version local': [] as number[],
  'version ssh': [] as number[],
  'domstate local': [] as number[],
  'domstate ssh': [] as number[],
};
const list = { 'both hosts': [] as number[], 'local only': [] as number[], 'remote only': [] as number[] };

const virsh = (args: string[]) => timed(async () => execFileSync('virsh', args, { stdio: 'pipe' }));

try {
  for (let i = 0; i < runs; i++) {
    for (const [variant, spec] of Object.entries(variants) as [Variant, (typeof variants)[Variant]][]) {
      const name = `${PREFIX}${variant.replace(/ /g, '-')}-${i}`;
      createReady[variant].push(
        await timed(async () => {
          await createVm({ ...spec, name, image: 'tiny', memory: 192 }, ctx);
          await waitForVmReady(name, {}, ctx);
        }),
      );
      console.log(`run ${i + 1}/${runs} ${variant}: create→ready ${ms(createReady[variant].at(-1)!)}`);
      if (variant === 'qemu') await deleteVm(name, ctx);
    }
    // One libvirt VM on each host now exists for this run: time the round trips and lists.
    const local = `${PREFIX}libvirt-local-${i}`;
    const there = `${PREFIX}libvirt-ssh-${i}`;
    for (let k = 0; k < 5; k++) {
      roundTrip['version local'].push(await virsh(['-c', 'qemu:///system', 'version']));
      roundTrip['version ssh'].push(await virsh(['-c', remote.uri, 'version']));
      roundTrip['domstate local'].push(await virsh(['-c', 'qemu:///system', 'domstate', local]));
      roundTrip['domstate ssh'].push(await virsh(['-c', remote.uri, 'domstate', there]));
      list['both hosts'].push(await timed(() => listVmsByHost(ctx)));
      list['local only'].push(await timed(() => listVmsByHost(only('local'))));
      list['remote only'].push(await timed(() => listVmsByHost(only('remote'))));
    }
    await deleteVm(local, ctx);
    await deleteVm(there, ctx);
  }
} finally {
  await cleanupVms({ prefix: PREFIX }, ctx).catch((e: unknown) => console.error(`cleanup: ${String(e)}`));
  await remote.close(PREFIX);
  rmSync(home, { recursive: true, force: true });
}

const summary = {
  runs,
  createReadyMedianMs: Object.fromEntries(Object.entries(createReady).map(([k, v]) => [k, Math.round(median(v))])),
  virshRoundTripMedianMs: Object.fromEntries(Object.entries(roundTrip).map(([k, v]) => [k, Math.round(median(v))])),
  listMedianMs: Object.fromEntries(Object.entries(list).map(([k, v]) => [k, Math.round(median(v))])),
  raw: { createReady, roundTrip, list },
};
console.log('\ncreate→ready (median):');
for (const [k, v] of Object.entries(summary.createReadyMedianMs)) console.log(`  ${k.padEnd(14)} ${ms(v)}`);
console.log('one virsh round trip (median):');
for (const [k, v] of Object.entries(summary.virshRoundTripMedianMs)) console.log(`  ${k.padEnd(14)} ${ms(v)}`);
console.log('list (median):');
for (const [k, v] of Object.entries(summary.listMedianMs)) console.log(`  ${k.padEnd(14)} ${ms(v)}`);
await mkdir('bench/results', { recursive: true });
await writeFile('bench/results/libvirt.json', JSON.stringify(summary, null, 2) + '\n');
