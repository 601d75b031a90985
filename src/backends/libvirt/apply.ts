/**
 * Executes libvirt plan steps. A create records what each step made; when a later step
 * fails, `undoCreate` removes exactly that (the domain, then the VM's own volumes), so a
 * failed define or start leaves nothing half-defined. Base images stay: they are a cache.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isLocalVmError } from '../../errors.js';
import { withLock } from '../../host/lock.js';
import { mkdirPrivate } from '../../host/privateDir.js';
import { runChecked, type Command, type CommandRunner } from '../../runner.js';
import { seedIsoCommand } from '../qemu/seed.js';
import type { LibvirtHost } from './host.js';
import { observePool } from './observe.js';
import { INPUT_FILE, SEED_FILE, type Created, type LvStep } from './plan.js';
import { POOL } from './target.js';
import { volumeXml } from './volumes.js';

const UPLOAD_TIMEOUT_MS = 600_000;
/** How often a graceful stop looks at the state, and asks again (a booting guest may miss the first press). */
const STOP_POLL_MS = 250;
const REPRESS_MS = 1_000;

const swap = (cmd: Command, placeholder: string, file: string): Command => ({
  ...cmd,
  args: cmd.args.map((a) => (a === placeholder ? file : a)),
});

export interface ApplyContext {
  host: LibvirtHost;
  runner: CommandRunner;
  vm: string;
  /** Filled with what the steps made, in order. */
  created: Created[];
}

/** Runs `steps` in order; fallbacks (`otherwise`) run when a step reports it was not enough. */
export async function applySteps(ctx: ApplyContext, steps: readonly LvStep[]): Promise<void> {
  for (const step of steps) {
    const enough = await applyStep(ctx, step);
    if (!enough) await applySteps(ctx, step.otherwise ?? []);
  }
}

async function applyStep(ctx: ApplyContext, step: LvStep): Promise<boolean> {
  const { host, vm } = ctx;
  const a = step.action;
  const cmd = step.command;
  switch (a.kind) {
    case 'none':
      return true;
    case 'virsh': {
      if (!cmd) return true;
      const opts = { vm, timeoutMs: a.timeoutMs };
      if (a.input !== undefined) {
        await host.withFile(a.input, (file) => host.virshOut(swap(cmd, INPUT_FILE, file), opts));
      } else {
        await host.virshOut(cmd, opts);
      }
      if (a.creates) ctx.created.push(a.creates);
      return true;
    }
    case 'base':
      await uploadBase(host, a.volume, a.source, a.sizeBytes);
      return true;
    case 'seed':
      await uploadSeed(ctx, a);
      return true;
    case 'graceful-stop':
      return gracefulStop(host, vm, a.timeoutMs);
  }
}

/** Uploads a base volume unless another creator did: one lock per host and volume, across processes. */
async function uploadBase(host: LibvirtHost, volume: string, source: string, sizeBytes: number): Promise<void> {
  const key = createHash('sha256').update(`${host.target.uri}\0${volume}`).digest('hex').slice(0, 16);
  const locks = join(host.config.stateDir, 'locks');
  await mkdirPrivate(locks);
  await withLock(
    join(locks, `libvirt-base-${key}.lock`),
    { timeoutMs: UPLOAD_TIMEOUT_MS, what: `upload ${volume}` },
    async () => {
      if ((await observePool(host, false)).volumes.includes(volume)) return;
      const xml = volumeXml({ name: volume, capacityBytes: sizeBytes, format: 'raw' });
      await host.withFile(xml, (file) => host.virshOut(host.virsh.volCreate(POOL, file)));
      try {
        await host.virshOut(host.virsh.volUpload(POOL, volume, source), { timeoutMs: UPLOAD_TIMEOUT_MS });
      } catch (error) {
        // A half-uploaded base would be taken as complete by the next create.
        await host.run(host.virsh.volDelete(POOL, volume));
        throw error;
      }
    },
  );
}

async function uploadSeed(ctx: ApplyContext, a: Extract<LvStep['action'], { kind: 'seed' }>): Promise<void> {
  const { host } = ctx;
  const dir = await mkdtemp(join(tmpdir(), 'localvm-seed-'));
  try {
    // user-data often carries keys and passwords: only the owner may read it.
    await writeFile(join(dir, 'user-data'), a.userData, { mode: 0o600 });
    await writeFile(join(dir, 'meta-data'), a.metaData, { mode: 0o600 });
    const iso = join(dir, 'seed.iso');
    await runChecked(ctx.runner, seedIsoCommand(a.isoTool, dir, iso), { timeoutMs: 60_000 });
    const size = (await stat(iso)).size;
    const xml = volumeXml({ name: a.volume, capacityBytes: size, format: 'raw' });
    await host.withFile(xml, (file) => host.virshOut(host.virsh.volCreate(POOL, file), { vm: ctx.vm }));
    ctx.created.push({ volume: a.volume });
    await host.virshOut(swap(host.virsh.volUpload(POOL, a.volume, SEED_FILE), SEED_FILE, iso), { vm: ctx.vm });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** ACPI power button, pressed again each second, until libvirt says `shut off` or time is up. */
async function gracefulStop(host: LibvirtHost, vm: string, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  let pressed = -Infinity;
  while (performance.now() < deadline) {
    if (performance.now() - pressed >= REPRESS_MS) {
      const r = await host.run(host.virsh.shutdown(vm), { vm });
      pressed = performance.now();
      // Not running any more (it went down between two looks) is what we wanted.
      if (r.exitCode !== 0 && !/not running/i.test(r.stderr)) host.log(`${vm}: shutdown: ${r.stderr.trim()}`);
    }
    const state = await host.domstate(vm);
    if (state.state === 'stopped') return true;
    await new Promise((resolve) => setTimeout(resolve, STOP_POLL_MS));
  }
  host.log(`${vm}: did not power off within ${timeoutMs} ms, forcing`);
  return false;
}

/** Removes what a failed create made, newest first; each removal is best effort. */
export async function undoCreate(host: LibvirtHost, vm: string, created: readonly Created[]): Promise<void> {
  for (const c of [...created].reverse()) {
    if ('domain' in c) {
      await host.run(host.virsh.destroy(c.domain), { vm });
      await host.run(host.virsh.undefine(c.domain), { vm });
    } else {
      await host.run(host.virsh.volDelete(POOL, c.volume), { vm });
    }
  }
  // The console log appears when QEMU starts; it is the VM's too.
  await observePool(host, true)
    .then(async (p) => {
      for (const v of p.volumes.filter((n) => n === `${vm}.console.log`)) await host.run(host.virsh.volDelete(POOL, v));
    })
    .catch((error: unknown) => {
      if (!isLocalVmError(error)) throw error;
    });
}
