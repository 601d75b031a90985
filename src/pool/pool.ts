/**
 * A warm pool of disposable VMs (the sandbox use case): idle VMs are template clones held
 * paused (memory, no CPU), so acquire is a dequeue, a resume and one agent answer. A
 * released VM is destroyed, never reused; replacements are made in the background, at most
 * `refillConcurrency` at a time and `max` VMs in all. A VM that fails to be made, to resume
 * or to answer is discarded, counted and replaced after a back-off; no VM is handed out
 * before it has answered. Idle VMs older than `idleTtlMs` are replaced. Every VM is
 * recorded in this process's session before it is made (sweep.ts), so a killed owner
 * leaves nothing behind.
 */
import { withDefaults } from '../context.js';
import { poolDriver, type PoolDriver } from './driver.js';
import type { JobResult } from './executor.js';
import type { Lease } from './lease.js';
import { parsePoolOptions, type JobInput, type PoolOptions } from './options.js';
import type { PoolStats } from './stats.js';
import { ownSessionId, recordPoolVm, sweepDeadPools } from './sweep.js';
import { WarmPool } from './warmPool.js';

export { backoffMs } from './warmPool.js';

export interface AcquireOptions {
  /** TIMEOUT when no VM could be handed out in this long (default: the longest making one may take, the spec's createMs + readyMs, at least 60 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface Pool {
  /** The first part of every pool VM's name. */
  readonly prefix: string;
  /** A VM that has answered, for one job; `release()` destroys it. CONFLICT once draining or closed. */
  acquire(options?: AcquireOptions): Promise<Lease>;
  /** acquire, put files, run, collect, destroy (see executor.ts). */
  run(job: JobInput): Promise<JobResult>;
  stats(): PoolStats;
  /** No new leases; waits for the current ones to be released, then deletes every VM. */
  drain(): Promise<void>;
  /** Deletes every VM now, leased ones included (their release becomes a no-op), and stops. */
  close(): Promise<void>;
}

/** Internal seams for tests of the pool logic: the driver and the session record. */
export interface PoolInternals {
  driver?: PoolDriver;
  record?: (name: string) => Promise<() => Promise<void>>;
  sweep?: boolean;
}

/**
 * Creates a pool and starts filling it to `min`. VALIDATION on bad options (min > max, max
 * past 64, neither or both of template and spec); NOT_FOUND for an unknown template.
 * Leftovers of dead pools with the same prefix are swept first.
 */
export async function createPool(options: PoolOptions, internals: PoolInternals = {}): Promise<Pool> {
  const o = parsePoolOptions(options);
  const ctx = withDefaults({ ...options.context, ...(options.clock ? { clock: options.clock } : {}) });
  const driver = internals.driver ?? (await poolDriver(o, ctx));
  if (internals.sweep ?? true) {
    const swept = await sweepDeadPools(o.prefix, ctx);
    if (swept.length) ctx.log?.(`pool ${o.prefix}: swept VMs of dead pools: ${swept.join(', ')}`);
  }
  const sessionId = await ownSessionId();
  const pool = new WarmPool(o, ctx, driver, sessionId, internals.record ?? ((name) => recordPoolVm(name, ctx)));
  pool.refill();
  return pool;
}
