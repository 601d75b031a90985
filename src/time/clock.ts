/**
 * Time, injected: operations read the clock and sleep through this interface so polling,
 * retries and deadlines are testable without real sleeps.
 */

export interface Clock {
  /** Milliseconds on a monotonic scale (only differences mean anything). */
  now(): number;
  /**
   * Resolves after `ms`; rejects with `signal.reason` as soon as `signal` aborts. A clock
   * may ignore the signal (a fake that advances instantly): callers check it afterwards.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  /**
   * Calls `fire` once after `ms` and returns a cancel function. Optional: a clock without
   * it (a test's fake) makes deadlines expire only when they are asked, by `now()`.
   */
  schedule?(ms: number, fire: () => void): () => void;
}

export const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason);
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
  schedule: (ms, fire) => {
    const timer = setTimeout(fire, ms);
    // A deadline alone never keeps the process alive: the work it bounds does.
    timer.unref();
    return () => clearTimeout(timer);
  },
};
