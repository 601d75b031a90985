/**
 * Asking every host the same question at once. One host's failure (a daemon that is down, an
 * SSH key that is refused, a host that hangs) is that host's answer, never the others': each
 * result says which host and either its value or its error.
 */
import { LocalVmError, isLocalVmError } from '../errors.js';
import type { Clock } from '../time/clock.js';
import { withDeadline } from '../time/deadline.js';

export interface HostRef {
  host: string;
  uri: string;
}

export type HostResult<T> = (HostRef & { ok: true; value: T }) | (HostRef & { ok: false; error: LocalVmError });

export interface FanOutOptions {
  /** Each host's budget: `ask` gets a signal that aborts with TIMEOUT after it (pass it to the runner). */
  timeoutMs: number;
  clock?: Clock | undefined;
}

/**
 * Runs `ask` on every host concurrently and returns one result per host, in the hosts' order.
 * A rejection becomes that host's error (wrapped in a LocalVmError naming the host when it was
 * not one); a host that hangs is cut off by its deadline's signal. Nothing here throws.
 */
export async function fanOut<H extends HostRef, T>(
  hosts: readonly H[],
  ask: (host: H, signal: AbortSignal) => Promise<T>,
  options: FanOutOptions,
): Promise<HostResult<T>[]> {
  return Promise.all(
    hosts.map(async (h): Promise<HostResult<T>> => {
      try {
        const what = `asking host ${h.host} (${h.uri})`;
        const value = await withDeadline(options.timeoutMs, { what, clock: options.clock }, (d) => ask(h, d.signal));
        return { host: h.host, uri: h.uri, ok: true, value };
      } catch (error) {
        return { host: h.host, uri: h.uri, ok: false, error: asHostError(h, error) };
      }
    }),
  );
}

/** `error` as a LocalVmError whose message names the host (kept as is when it already does). */
export function asHostError(h: HostRef, error: unknown): LocalVmError {
  if (isLocalVmError(error) && error.message.includes(h.host)) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new LocalVmError(isLocalVmError(error) ? error.code : 'INTERNAL', `host ${h.host} (${h.uri}): ${message}`, {
    cause: error,
    hint: isLocalVmError(error) ? error.hint : undefined,
    command: isLocalVmError(error) ? error.command : undefined,
    details: { host: h.host, uri: h.uri },
  });
}

/** The values of the hosts that answered, flattened (for callers that report failures separately). */
export function answered<T>(results: readonly HostResult<T[]>[]): T[] {
  return results.flatMap((r) => (r.ok ? r.value : []));
}

/** The hosts that did not answer, each with its error. */
export function unanswered<T>(results: readonly HostResult<T>[]): (HostRef & { error: LocalVmError })[] {
  return results.flatMap((r) => (r.ok ? [] : [{ host: r.host, uri: r.uri, error: r.error }]));
}
