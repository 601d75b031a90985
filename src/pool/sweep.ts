/**
 * Crash safety of pools, on the fixtures' session records (src/vitest/session.ts): every
 * pool VM is recorded in its owner process's session before it is created, and the
 * session's reaper deletes it when the owner dies (SIGKILL included). A new pool also
 * sweeps what dead pools left (a reaper that was killed too): VMs named
 * `<prefix><session id>-<n>` whose session's owner is gone.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { OperationContext } from '../context.js';
import { cleanupVms, deleteVm } from '../operations/vm.js';
import { recordBeforeCreate } from '../vitest/record.js';
import {
  processAlive,
  processStart,
  readSession,
  sessionFile,
  sessionIdFor,
  sessionsDir,
  updateSession,
  withoutVm,
  type SessionRecord,
} from '../vitest/session.js';

/** The session id of this process as a pool owner. */
export async function ownSessionId(): Promise<string> {
  return sessionIdFor(process.pid, await processStart(process.pid));
}

/** The name of a pool's `n`th VM: `<prefix><session id>-<n>`. Pure. */
export function poolVmName(prefix: string, sessionId: string, n: number): string {
  return `${prefix}${sessionId}-${n}`;
}

/** The session id in a pool VM's name, or undefined when the name is not one a pool makes. Pure. */
export function sessionOfPoolVm(prefix: string, name: string): string | undefined {
  if (!name.startsWith(prefix)) return undefined;
  return /^(s[0-9a-z]+(?:-[0-9a-z]+)?)-\d+$/.exec(name.slice(prefix.length))?.[1];
}

/** Records `name` in this process's session (starting its reaper with the first entry); returns the release. */
export async function recordPoolVm(name: string, ctx: OperationContext): Promise<() => Promise<void>> {
  return (await recordBeforeCreate(name, ctx, undefined, process.pid)).release;
}

export interface PoolSession {
  id: string;
  pid: number;
  alive: boolean;
  vms: string[];
}

/** The sessions owning VMs named with `prefix`, alive or not (for `localvm pool list`). */
export async function poolSessions(prefix: string, ctx: OperationContext): Promise<PoolSession[]> {
  const dir = sessionsDir(ctx.config.stateDir);
  const out: PoolSession[] = [];
  for (const entry of await readdir(dir).catch(() => [] as string[])) {
    if (!entry.endsWith('.json')) continue;
    const r = await readSession(join(dir, entry)).catch(() => undefined);
    const vms = (r?.vms ?? []).map((v) => v.name).filter((n) => sessionOfPoolVm(prefix, n) !== undefined);
    if (r && vms.length) out.push({ id: r.id, pid: r.pid, alive: await processAlive(r.pid, r.startTime), vms });
  }
  return out;
}

/**
 * Deletes the VMs of dead pools: names `<prefix><session id>-<n>` whose session's owner is
 * not alive (or whose session file is gone), and drops them from their session records.
 * A live pool's VMs are never touched: each is recorded before it is created. Returns the
 * names deleted. `dryRun`: only says which.
 */
export async function sweepDeadPools(prefix: string, ctx: OperationContext, dryRun = false): Promise<string[]> {
  // VMs first, sessions second (as the fixture sweep does): a VM listed here is already in
  // the session read below, so a pool starting in between is not mistaken for a dead one.
  const { matched } = await cleanupVms({ prefix, dryRun: true }, ctx);
  const sessions = new Map<string, SessionRecord | undefined>();
  const alive = new Map<string, boolean>();
  const deleted: string[] = [];
  for (const name of matched) {
    const id = sessionOfPoolVm(prefix, name);
    if (id === undefined) continue;
    if (!sessions.has(id)) {
      const r = await readSession(sessionFile(ctx.config.stateDir, id)).catch(() => undefined);
      sessions.set(id, r);
      alive.set(id, r !== undefined && (await processAlive(r.pid, r.startTime)));
    }
    if (alive.get(id)) continue;
    if (!dryRun) {
      await deleteVm(name, ctx);
      if (sessions.get(id)) {
        await updateSession(ctx.config.stateDir, id, (r) => {
          const rest = r ? withoutVm(r, name) : r;
          return rest && rest.vms.length ? rest : undefined;
        });
      }
    }
    deleted.push(name);
  }
  return deleted;
}
