/**
 * Durations in messages, for people. Measured times are floats (`performance.now()`), and
 * printed raw they read `no reply in 7364.4730389999895ms`: everything that prints a
 * duration goes through here and gets whole milliseconds or whole seconds.
 */
import { wholeMs } from './deadline.js';

/** `N ms` in whole milliseconds. */
export function formatMs(ms: number): string {
  return `${wholeMs(ms)} ms`;
}

/**
 * A duration without a decimal point: whole seconds when it is a whole number of them or
 * at least 10 s (`1 s`, `120 s`, `12 s` for 12.3 s), else whole milliseconds (`250 ms`,
 * `7364 ms`).
 */
export function formatDuration(ms: number): string {
  const whole = wholeMs(ms);
  if (whole >= 10_000 || (whole >= 1000 && whole % 1000 === 0)) return `${Math.round(whole / 1000)} s`;
  return `${whole} ms`;
}
