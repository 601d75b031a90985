#!/usr/bin/env node
/**
 * The session reaper (the role Ryuk plays for testcontainers): `node reaper.js <session file>`,
 * started detached by the first worker that records a VM. It polls the test runner process
 * every second; when the runner is gone (SIGKILL included) it deletes the VMs listed in the
 * session file, and only those, then exits. It exits at once when a clean teardown removes
 * the session file.
 */
import { appendFile, rm } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadConfig } from '../config.js';
import { createExecaRunner } from '../runner.js';
import { deleteVm } from '../operations/vm.js';
import { deleteEntry } from './record.js';
import type { OperationContext } from '../context.js';
import { poll } from '../time/poll.js';
import {
  deletionOrder,
  processAlive,
  readSession,
  reaperStep,
  updateSession,
  withoutVm,
  type SessionVm,
} from './session.js';

export interface ReaperOptions {
  intervalMs?: number;
  /** How long VMs of workers that outlive the runner are spared (they may be mid-create). */
  workerGraceMs?: number;
  ctx?: Partial<OperationContext>;
  log?: (line: string) => void;
}

/** Watches the session in `file` until it ends; resolves with why it stopped. */
export async function runReaper(file: string, options: ReaperOptions = {}): Promise<string> {
  const interval = options.intervalMs ?? 1_000;
  const grace = options.workerGraceMs ?? 3_000;
  const log = options.log ?? (() => {});
  const stateDir = dirname(dirname(file));
  const id = basename(file, '.json');
  let deathSeenAt: number | undefined;
  const alive = new Map<string, boolean>();
  const reaped: SessionVm[] = [];
  // Real time on purpose: the reaper watches real processes, whatever clock the context has.
  return poll(
    async (): Promise<string | undefined> => {
      const record = await readSession(file).catch(() => undefined);
      const runnerAlive = record ? await processAlive(record.pid, record.startTime) : false;
      if (record && !runnerAlive) deathSeenAt ??= performance.now();
      alive.clear();
      for (const vm of record?.vms ?? []) alive.set(vm.name, await processAlive(vm.pid, vm.startTime));
      const step = reaperStep({
        record,
        runnerAlive,
        workerAlive: (vm: SessionVm) => alive.get(vm.name) ?? false,
        sinceRunnerDeathMs: deathSeenAt === undefined ? 0 : performance.now() - deathSeenAt,
        workerGraceMs: grace,
      });
      if (step.action === 'exit') {
        if (record) await rm(file, { force: true });
        return step.why;
      }
      if (step.action === 'reap') {
        // VMs first, templates last: a template cannot go while a clone of it exists.
        const entries = deletionOrder((record?.vms ?? []).filter((vm) => step.vms.includes(vm.name)));
        let kept = 0;
        for (const entry of entries) {
          const what = entry.kind === 'template' ? 'template' : 'VM';
          let gone = true;
          try {
            gone = await deleteEntry(entry, options.ctx);
            log(`runner ${record?.pid} gone: ${gone ? 'deleted' : 'kept (clones remain)'} ${what} ${entry.name}`);
          } catch (error) {
            log(`runner ${record?.pid} gone: deleting ${what} ${entry.name} failed: ${(error as Error).message}`);
          }
          if (!gone) {
            kept++;
            continue;
          }
          await updateSession(stateDir, id, (r) => (r ? withoutVm(r, entry.name) : r));
          if (entry.kind !== 'template') reaped.push(entry);
        }
        // A template kept for its clones (a worker still alive in its grace period) is tried
        // again next tick, for 10 minutes at most: a reaper never outlives its session for good.
        const givenUp = deathSeenAt !== undefined && performance.now() - deathSeenAt > 600_000;
        if (step.then === 'exit' && (kept === 0 || givenUp)) {
          await rm(file, { force: true });
          await linger(reaped, options.ctx, interval, log);
          return `runner gone, reaped ${entries.map((v) => v.name).join(', ')}`;
        }
      }
      return undefined;
    },
    { what: `the reaper of ${file}`, initialMs: interval, factor: 1, maxMs: interval },
  );
}

/**
 * A worker that outlived its runner past the grace period may still be inside a create that
 * brings its VM back after the reaper deleted it: while such workers live (10 min at most),
 * keep deleting their VMs.
 */
async function linger(
  vms: SessionVm[],
  ctx: Partial<OperationContext> | undefined,
  interval: number,
  log: (line: string) => void,
) {
  let live = vms;
  const done = new Error('linger over');
  await poll(
    async (n) => {
      if (n > 1) {
        for (const vm of live) {
          const { deleted } = await deleteVm(vm.name, ctx).catch(() => ({ deleted: false }));
          if (deleted) log(`worker ${vm.pid} brought ${vm.name} back: deleted it again`);
        }
      }
      const next: SessionVm[] = [];
      for (const vm of live) if (await processAlive(vm.pid, vm.startTime)) next.push(vm);
      live = next;
      return live.length === 0 ? true : undefined;
    },
    {
      what: 'lingering workers',
      timeoutMs: 600_000,
      initialMs: interval,
      factor: 1,
      maxMs: interval,
      onTimeout: () => done,
    },
  ).catch((error: unknown) => {
    if (error !== done) throw error;
  });
}

async function main(): Promise<void> {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: reaper.js <session file>\n');
    process.exitCode = 2;
    return;
  }
  const logFile = `${file.replace(/\.json$/, '')}.reaper.log`;
  const log = (line: string) => void appendFile(logFile, `${new Date().toISOString()} ${line}\n`).catch(() => {});
  const ctx = { config: loadConfig(process.env), runner: createExecaRunner(), log: undefined };
  log(`watching ${file}`);
  const why = await runReaper(file, { ctx, log });
  log(`exit: ${why}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
