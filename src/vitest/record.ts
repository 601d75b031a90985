/**
 * Recording a fixture's VM (or template) in the session of the test runner before it is
 * created, and starting the session's reaper with the first record: the one path every
 * fixture resource takes, so that a runner killed at any moment leaves nothing behind.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { isMainThread } from 'node:worker_threads';
import type { OperationContext } from '../context.js';
import { isLocalVmError, LocalVmError } from '../errors.js';
import { deleteTemplate } from '../operations/template.js';
import { deleteVm } from '../operations/vm.js';
import type { Command } from '../runner.js';
import {
  newSession,
  processStart,
  sessionFile,
  sessionIdFor,
  updateSession,
  withVm,
  withoutVm,
  type SessionVm,
} from './session.js';

/** The vitest runner process as seen from here: this process in a thread worker, the parent in a fork. */
export function runnerPid(): number {
  return isMainThread ? process.ppid : process.pid;
}

/** The session id of the runner this worker belongs to. */
export async function currentSessionId(): Promise<string> {
  const pid = runnerPid();
  return sessionIdFor(pid, await processStart(pid));
}

/** The command starting the reaper for `file`: the built `reaper.js`, else the TypeScript source via tsx. */
export function reaperCommand(file: string): Command {
  const here = (name: string) => fileURLToPath(new URL(name, import.meta.url));
  for (const candidate of [here('./reaper.js'), here('../../dist/vitest/reaper.js')]) {
    if (existsSync(candidate)) return { file: process.execPath, args: [candidate, file] };
  }
  return { file: process.execPath, args: ['--import', import.meta.resolve('tsx'), here('./reaper.ts'), file] };
}

/**
 * Records `name` in the session of the runner before it is created, creating the session
 * file and starting its reaper when this is the session's first entry. `kind: 'template'`
 * entries are deleted (after the session's VMs) with deleteTemplate. `owner`: the process
 * whose death reaps the entry (default the vitest runner; a warm pool passes its own pid).
 */
export async function recordBeforeCreate(
  name: string,
  ctx: OperationContext,
  kind?: 'template',
  owner?: number,
): Promise<{ id: string; release: () => Promise<void> }> {
  const pid = owner ?? runnerPid();
  const startTime = await processStart(pid);
  const id = sessionIdFor(pid, startTime);
  const self = { name, pid: process.pid, startTime: await processStart(process.pid), ...(kind ? { kind } : {}) };
  const { before } = await updateSession(ctx.config.stateDir, id, (r) =>
    withVm(r ?? newSession(id, pid, startTime), self),
  );
  if (!before) {
    if (!ctx.runner.spawnDetached) {
      throw new LocalVmError('UNSUPPORTED', 'the runner cannot start the reaper (no spawnDetached)');
    }
    const reaper = await ctx.runner.spawnDetached(reaperCommand(sessionFile(ctx.config.stateDir, id)), {
      env: {
        LOCALVM_HOME: ctx.config.stateDir,
        LOCALVM_CACHE: ctx.config.cacheDir,
        LOCALVM_RUN_DIR: ctx.config.runDir,
      },
    });
    ctx.log?.(`session ${id}: reaper pid ${reaper} watches runner ${pid}`);
  }
  return {
    id,
    // The last entry out removes the file, which tells the reaper to exit.
    release: async () => {
      await updateSession(ctx.config.stateDir, id, (r) => {
        if (!r) return undefined;
        const rest = withoutVm(r, name);
        return rest.vms.length ? rest : undefined;
      });
    },
  };
}

/**
 * Deletes one session entry: a VM, or a template (`kind: 'template'`). True when it is gone
 * (or was never made); false when a template still has clones (CONFLICT: delete them first,
 * then try again). Other failures are thrown.
 */
export async function deleteEntry(entry: SessionVm, ctx?: Partial<OperationContext>): Promise<boolean> {
  if (entry.kind !== 'template') {
    await deleteVm(entry.name, ctx);
    return true;
  }
  try {
    await deleteTemplate(entry.name, ctx);
    return true;
  } catch (error) {
    if (isLocalVmError(error, 'CONFLICT')) return false;
    // A backend without templates has none to leave behind.
    if (isLocalVmError(error, 'UNSUPPORTED')) return true;
    throw error;
  }
}
