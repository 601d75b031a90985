/**
 * One deadline, as an AbortSignal. The signal is what gets passed down (to the runner, the
 * socket clients, the poll helper), so a timeout stops the work it bounds: the process is
 * killed, the connection closed. Nothing races a timer against a promise and walks away.
 */
import { LocalVmError } from '../errors.js';
import { realClock, type Clock } from './clock.js';

export interface DeadlineOptions {
  /** What is bounded, for the error: "<what> took longer than N ms". */
  what: string;
  clock?: Clock | undefined;
  /** An outer signal: when it aborts first, this deadline aborts with its reason. */
  parent?: AbortSignal | undefined;
  /** Extra facts for the TIMEOUT error (socket path, VM name ...). */
  details?: Record<string, unknown> | undefined;
  vm?: string | undefined;
}

export interface Deadline {
  /** Aborts at the deadline (reason: a TIMEOUT LocalVmError) or when the parent aborts (its reason). */
  readonly signal: AbortSignal;
  /** The budget, whole milliseconds. */
  readonly ms: number;
  readonly clock: Clock;
  /** Whole milliseconds left, 0 once expired. */
  remainingMs(): number;
  /** True once the deadline passed or the parent aborted. */
  expired(): boolean;
  /** True when the deadline itself passed (not the parent). */
  timedOut(): boolean;
  /** Throws the abort reason once expired. */
  check(): void;
  /** Stops the timer and lets go of the parent. The signal keeps its state. */
  dispose(): void;
}

/** Whole milliseconds for messages: never `7364.4730389999895 ms`. */
export function wholeMs(ms: number): number {
  return Math.max(0, Math.round(ms));
}

/** The TIMEOUT error of a deadline. */
export function timeoutError(
  what: string,
  ms: number,
  extra: Pick<DeadlineOptions, 'details' | 'vm'> = {},
): LocalVmError {
  return new LocalVmError('TIMEOUT', `${what} took longer than ${wholeMs(ms)} ms`, {
    vm: extra.vm,
    details: { timeoutMs: wholeMs(ms), ...extra.details },
  });
}

export function deadline(ms: number, options: DeadlineOptions): Deadline {
  const clock = options.clock ?? realClock;
  const budget = wholeMs(ms);
  const end = clock.now() + budget;
  const controller = new AbortController();
  const { parent } = options;
  let cancelTimer: (() => void) | undefined;
  let timedOut = false;

  const fire = () => {
    if (controller.signal.aborted) return;
    timedOut = true;
    controller.abort(timeoutError(options.what, budget, options));
  };
  const onParent = () => {
    if (!controller.signal.aborted) controller.abort(parent?.reason);
  };
  const dispose = () => {
    cancelTimer?.();
    cancelTimer = undefined;
    parent?.removeEventListener('abort', onParent);
  };
  controller.signal.addEventListener('abort', dispose, { once: true });

  if (parent?.aborted) onParent();
  else if (budget <= 0) fire();
  else {
    parent?.addEventListener('abort', onParent, { once: true });
    // An unbounded deadline (only the parent ends it) needs no timer; setTimeout would
    // also take anything past 2^31 ms as 1 ms.
    if (Number.isFinite(budget)) cancelTimer = clock.schedule?.(Math.min(budget, 2 ** 31 - 1), fire);
  }

  const expired = () => {
    // Clocks without a timer (test fakes) expire the deadline when it is asked.
    if (!controller.signal.aborted && clock.now() >= end) fire();
    return controller.signal.aborted;
  };
  return {
    signal: controller.signal,
    ms: budget,
    clock,
    remainingMs: () => (expired() ? 0 : Math.max(1, Math.ceil(end - clock.now()))),
    expired,
    timedOut: () => expired() && timedOut,
    check: () => {
      if (expired()) throw controller.signal.reason;
    },
    dispose,
  };
}

/** Runs `fn` under a deadline that is disposed however `fn` ends. */
export async function withDeadline<T>(
  ms: number,
  options: DeadlineOptions,
  fn: (deadline: Deadline) => Promise<T>,
): Promise<T> {
  const d = deadline(ms, options);
  try {
    return await fn(d);
  } finally {
    d.dispose();
  }
}

/**
 * Calls `stop(reason)` when `signal` aborts (at once when it already has); returns the
 * function that detaches it. For the primitive waits (a socket event, a timer) that own
 * their cleanup: `stop` ends the work and rejects, it never leaves the work running.
 */
export function onAbort(signal: AbortSignal | undefined, stop: (reason: unknown) => void): () => void {
  if (!signal) return () => undefined;
  if (signal.aborted) {
    stop(signal.reason);
    return () => undefined;
  }
  const handler = () => stop(signal.reason);
  signal.addEventListener('abort', handler, { once: true });
  return () => signal.removeEventListener('abort', handler);
}
