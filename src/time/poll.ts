/**
 * The one polling loop: try, and while not done pause (short at first, growing by a
 * factor up to a cap) until the deadline passes or the signal aborts. Time comes from the
 * injected clock, so tests run it without real sleeps.
 */
import { realClock, type Clock } from './clock.js';
import { deadline as makeDeadline, type Deadline } from './deadline.js';

export interface PollOptions {
  /** What is waited for, named in the default TIMEOUT error. */
  what: string;
  /** The overall budget; ignored when `deadline` is given. */
  timeoutMs?: number | undefined;
  /** A deadline owned by the caller (not disposed here). */
  deadline?: Deadline | undefined;
  /** An outer signal: its abort ends the poll at once with its reason. */
  signal?: AbortSignal | undefined;
  clock?: Clock | undefined;
  /** First pause (default 10 ms). */
  initialMs?: number | undefined;
  /** Growth of the pause after each try (default 2). */
  factor?: number | undefined;
  /** Longest pause (default 500 ms). */
  maxMs?: number | undefined;
  /** The error thrown when the deadline passes (default: the deadline's TIMEOUT). */
  onTimeout?: (() => Error | Promise<Error>) | undefined;
}

/**
 * Calls `attempt` until it returns a value other than `undefined`, and resolves with it.
 * An attempt that throws ends the poll with that error. The first attempt always runs; no
 * pause reaches past the deadline, and none is followed by an attempt once it has passed.
 */
export async function poll<T>(
  attempt: (n: number, deadline: Deadline) => Promise<T | undefined> | T | undefined,
  options: PollOptions,
): Promise<T> {
  const clock = options.clock ?? options.deadline?.clock ?? realClock;
  const own = options.deadline
    ? undefined
    : makeDeadline(options.timeoutMs ?? Number.POSITIVE_INFINITY, {
        what: options.what,
        clock,
        parent: options.signal,
      });
  const d = (options.deadline ?? own) as Deadline;
  const factor = options.factor ?? 2;
  const maxMs = options.maxMs ?? 500;
  let interval = options.initialMs ?? 10;
  // Aborted from outside (not by the deadline itself): stop at once with that reason.
  const parentAborted = () => options.signal?.aborted === true || (d.signal.aborted && !d.timedOut());
  const sleepSignal = options.deadline && options.signal ? AbortSignal.any([d.signal, options.signal]) : d.signal;
  const parentReason = () => (options.signal?.aborted ? options.signal.reason : d.signal.reason);
  try {
    for (let n = 1; ; n++) {
      if (parentAborted()) throw parentReason();
      const value = await attempt(n, d);
      if (value !== undefined) return value;
      if (d.expired()) break;
      try {
        await clock.sleep(Math.min(interval, d.remainingMs()), sleepSignal);
      } catch (error) {
        if (!d.timedOut()) throw error;
      }
      if (parentAborted()) throw parentReason();
      // A pause that ended at the deadline ends the poll: an attempt now would have no time.
      if (d.expired()) break;
      interval = Math.min(Math.max(interval, 1) * factor, maxMs);
    }
    if (parentAborted()) throw parentReason();
    throw options.onTimeout ? await options.onTimeout() : d.signal.reason;
  } finally {
    own?.dispose();
  }
}
