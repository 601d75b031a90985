/**
 * Session records for the vitest fixtures. A test session (one vitest run) is identified by
 * its runner process (pid + start time); every VM a worker is about to create is written to
 * `<stateDir>/sessions/<session id>.json` BEFORE the create, so the reaper can delete it
 * whatever happens to the run. The decisions (what to reap, when) are pure functions.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { LocalVmError } from '../errors.js';
import { mkdirPrivate } from '../host/privateDir.js';
import { withLock } from '../host/lock.js';
import { processStartTime } from '../host/proc.js';
import { onHostFs } from '../host/fs.js';

export const SESSION_VERSION = 1;

/** One VM of a session, with the worker process that owns it. */
export interface SessionVm {
  name: string;
  /** The worker process that creates and uses the VM. */
  pid: number;
  startTime?: number | undefined;
  /** A template (of `fresh: 'test'` fixtures) rather than a VM: deleted after the session's VMs, its clones. */
  kind?: 'template' | undefined;
}

export interface SessionRecord {
  version: number;
  id: string;
  /** The test runner process (vitest's main process) the reaper watches. */
  pid: number;
  /** Its start time (Linux, ticks since boot), so a reused pid is not mistaken for it. */
  startTime?: number | undefined;
  createdAt: string;
  vms: SessionVm[];
}

export const sessionsDir = (stateDir: string) => join(stateDir, 'sessions');
export const sessionFile = (stateDir: string, id: string) => join(sessionsDir(stateDir), `${id}.json`);

/** A session id for a runner process: `s` + base-36 pid and start time. Pure. */
export function sessionIdFor(pid: number, startTime: number | undefined): string {
  return `s${pid.toString(36)}${startTime !== undefined ? `-${startTime.toString(36)}` : ''}`;
}

/** The name of worker `worker`'s VM in session `id`: `<prefix><id>-w<worker>`. Pure. */
export function sessionVmName(prefix: string, id: string, worker: string): string {
  return `${prefix}${id}-w${worker}`;
}

/** The record with `vm` added (replacing an entry of the same name). Pure. */
export function withVm(record: SessionRecord, vm: SessionVm): SessionRecord {
  return { ...record, vms: [...record.vms.filter((v) => v.name !== vm.name), vm] };
}

/** The record without the VM `name`. Pure. */
export function withoutVm(record: SessionRecord, name: string): SessionRecord {
  return { ...record, vms: record.vms.filter((v) => v.name !== name) };
}

/**
 * The order a session's entries are deleted in: VMs first, templates last, since a template
 * cannot be deleted while a clone of it exists. Pure.
 */
export function deletionOrder<T extends { kind?: 'template' | undefined }>(entries: T[]): T[] {
  return [...entries.filter((e) => e.kind !== 'template'), ...entries.filter((e) => e.kind === 'template')];
}

/** Parses a session file's text; undefined when it is not a session record. Pure. */
export function parseSession(text: string): SessionRecord | undefined {
  try {
    const r = JSON.parse(text) as Partial<SessionRecord>;
    if (
      r.version !== SESSION_VERSION ||
      typeof r.id !== 'string' ||
      !Number.isInteger(r.pid) ||
      !Array.isArray(r.vms)
    ) {
      return undefined;
    }
    const vms = r.vms.filter((v): v is SessionVm => typeof v?.name === 'string' && Number.isInteger(v.pid));
    return { ...(r as SessionRecord), vms };
  } catch {
    return undefined;
  }
}

export type ReaperStep =
  { action: 'exit'; why: string } | { action: 'wait' } | { action: 'reap'; vms: string[]; then: 'exit' | 'wait' };

export interface ReaperView {
  /** The session file's record; undefined once a clean teardown removed it. */
  record: SessionRecord | undefined;
  runnerAlive: boolean;
  /** Which worker processes (by pid) are still alive. */
  workerAlive: (vm: SessionVm) => boolean;
  /** Milliseconds since the reaper first saw the runner dead (0 on that tick). */
  sinceRunnerDeathMs: number;
  /** How long to wait for workers that outlive the runner before deleting their VMs anyway. */
  workerGraceMs: number;
}

/**
 * What the reaper does on one tick. A removed session file means a clean teardown: exit.
 * A live runner: wait. A dead runner: delete the VMs whose worker is gone too (a worker
 * still alive may be in the middle of creating its VM, which would come back as an orphan)
 * or whose grace period is over; exit when none is left.
 */
export function reaperStep(view: ReaperView): ReaperStep {
  if (!view.record) return { action: 'exit', why: 'session file removed (clean teardown)' };
  if (view.runnerAlive) return { action: 'wait' };
  if (view.record.vms.length === 0) return { action: 'exit', why: 'runner gone, no VMs left' };
  const graceOver = view.sinceRunnerDeathMs >= view.workerGraceMs;
  const vms = view.record.vms.filter((vm) => graceOver || !view.workerAlive(vm)).map((vm) => vm.name);
  if (vms.length === 0) return { action: 'wait' };
  return { action: 'reap', vms, then: vms.length === view.record.vms.length ? 'exit' : 'wait' };
}

/** Start time of `pid` from /proc (undefined when gone, a zombie, or no /proc). */
export const processStart = processStartTime;

/** True when `pid` runs and (where /proc tells) is the process that started at `startTime`. */
export async function processAlive(pid: number, startTime: number | undefined): Promise<boolean> {
  if (startTime !== undefined) return (await processStart(pid)) === startTime;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function readSession(file: string): Promise<SessionRecord | undefined> {
  try {
    return parseSession(await readFile(file, 'utf8'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

async function writeSession(file: string, record: SessionRecord): Promise<void> {
  await onHostFs(`write ${file}`, file, () =>
    writeFileAtomic(file, JSON.stringify(record, null, 2) + '\n', { mode: 0o600 }),
  );
}

/** Changes a session record under its lock file; `change` returns undefined to delete the file. */
export async function updateSession(
  stateDir: string,
  id: string,
  change: (current: SessionRecord | undefined) => SessionRecord | undefined,
): Promise<{ before: SessionRecord | undefined; after: SessionRecord | undefined }> {
  const file = sessionFile(stateDir, id);
  await mkdirPrivate(sessionsDir(stateDir));
  return withLock(`${file}.lock`, { timeoutMs: 30_000, what: `session ${id}` }, async () => {
    const before = await readSession(file);
    const after = change(before);
    if (after) await writeSession(file, after);
    else await rm(file, { force: true });
    return { before, after };
  });
}

/** A new, empty record for the runner `pid`. */
export function newSession(id: string, pid: number, startTime: number | undefined): SessionRecord {
  if (!Number.isInteger(pid) || pid <= 0) throw new LocalVmError('INTERNAL', `invalid runner pid ${pid}`);
  return { version: SESSION_VERSION, id, pid, startTime, createdAt: new Date().toISOString(), vms: [] };
}
