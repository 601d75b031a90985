/**
 * Locks that die with their holder. A lock is a file created with O_EXCL holding the
 * holder's pid and process start time; its existence is the lock, so release unlinks
 * it and nothing accumulates. A waiter that finds the holder dead (or its pid reused by
 * another process) steals the lock. In front of the file sits an in-process mutex, so
 * callers in one process queue on a promise instead of polling the file system.
 */
import { link, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { LocalVmError } from '../errors.js';
import { hostFsError, randomSuffix } from './fs.js';
import { mkdirPrivate } from './privateDir.js';
import { processStartTime } from './proc.js';

export interface LockHolder {
  pid: number;
  /** Start time of `pid` (ticks since boot, /proc/PID/stat field 22). */
  startTime: number;
  token: string;
  acquiredAt: string;
  what?: string | undefined;
}

export interface LockOptions {
  /** How long to wait for a live holder before TIMEOUT. */
  timeoutMs: number;
  /** Longest poll interval; polling starts at 2 ms and doubles up to this. */
  maxPollMs?: number;
  /** What the lock is for, written into the lock file (diagnostics). */
  what?: string;
}

/** True when the process that wrote `holder` still runs (same pid, same start time). */
export async function holderAlive(holder: LockHolder): Promise<boolean> {
  const start = await processStartTime(holder.pid);
  return start !== undefined && start === holder.startTime;
}

/** The holder recorded in lock file `path`, or undefined (no lock, or a torn write). */
export async function readLockHolder(path: string): Promise<LockHolder | undefined> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as LockHolder;
    return typeof parsed.pid === 'number' ? parsed : undefined;
  } catch {
    return undefined;
  }
}

let selfStartTime: number | undefined;

/**
 * Creates the lock file holding `holder`; false when it exists. A file that was created but
 * could not be written (a full disk) is removed again: nobody could ever read its holder,
 * so it would only be stolen a second later, or outlive every process.
 */
async function tryCreate(path: string, holder: LockHolder): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'wx', 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw hostFsError(error, `take the lock ${path}`, path);
  }
  try {
    await fh.writeFile(JSON.stringify(holder));
    await fh.close();
  } catch (error) {
    await fh.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw hostFsError(error, `take the lock ${path}`, path);
  }
  return true;
}

/**
 * Removes a dead holder's lock. Two waiters may both see the same dead holder; renaming
 * (atomic) and re-checking what was renamed makes sure only a dead lock is ever taken
 * away, never one a concurrent waiter just created.
 */
async function steal(path: string, dead: LockHolder): Promise<void> {
  const aside = `${path}.stale-${process.pid}-${randomSuffix()}`;
  try {
    await rename(path, aside);
  } catch {
    return; // someone else stole or released it first
  }
  const moved = await readLockHolder(aside);
  if (moved && moved.token !== dead.token) {
    // We moved a live lock: put it back (link fails if yet another holder appeared,
    // which cannot happen without the file being absent, and then it is theirs).
    await link(aside, path).catch(() => undefined);
  }
  await unlink(aside).catch(() => undefined);
}

/**
 * Takes the lock file at `path`, waiting while a live process holds it. Resolves with
 * a release function. TIMEOUT names the holder pid when it is still held after `timeoutMs`.
 */
export async function acquireFileLock(path: string, options: LockOptions): Promise<() => Promise<void>> {
  await mkdirPrivate(dirname(path));
  selfStartTime ??= await processStartTime(process.pid);
  const holder: LockHolder = {
    pid: process.pid,
    startTime: selfStartTime ?? 0,
    token: randomSuffix(),
    acquiredAt: new Date().toISOString(),
    what: options.what,
  };
  const deadline = performance.now() + options.timeoutMs;
  const maxPoll = options.maxPollMs ?? 50;
  let interval = 2;
  let last: LockHolder | undefined;
  let unreadableSince: number | undefined;
  while (true) {
    if (await tryCreate(path, holder)) {
      return async () => {
        const current = await readLockHolder(path);
        if (current?.token === holder.token) await unlink(path).catch(() => undefined);
      };
    }
    last = await readLockHolder(path);
    if (last && !(await holderAlive(last))) {
      await steal(path, last);
      continue;
    }
    if (!last) {
      // Released between our attempts, or the holder is between open and write. A file
      // that stays unreadable for a second was left by a holder killed mid-write.
      unreadableSince ??= performance.now();
      if (performance.now() - unreadableSince > 1_000) await unlink(path).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 2));
      continue;
    }
    unreadableSince = undefined;
    const remaining = deadline - performance.now();
    if (remaining <= 0) {
      throw new LocalVmError('TIMEOUT', `lock ${path} is held by pid ${last.pid} (${last.what ?? 'unknown'})`, {
        details: { lock: path, holderPid: last.pid, since: last.acquiredAt },
        hint: `wait for process ${last.pid} to finish`,
      });
    }
    await new Promise((r) => setTimeout(r, Math.min(interval, remaining)));
    interval = Math.min(interval * 2, maxPoll);
  }
}

/** Serializes async work per key within this process. */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tailPromise = previous.then(() => mine);
    this.tails.set(key, tailPromise);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tailPromise) this.tails.delete(key);
    }
  }
}

const processMutex = new KeyedMutex();

/**
 * Runs `fn` holding both the in-process mutex and the cross-process lock file `path`.
 * The time spent queueing in-process counts against `timeoutMs` too.
 */
export async function withLock<T>(path: string, options: LockOptions, fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  return processMutex.run(path, async () => {
    const remaining = Math.max(1, options.timeoutMs - (performance.now() - started));
    const release = await acquireFileLock(path, { ...options, timeoutMs: remaining });
    try {
      return await fn();
    } finally {
      await release();
    }
  });
}
