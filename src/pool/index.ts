/** Warm pools of disposable VMs and the sandbox executor (see pool.ts, executor.ts). */
export { createPool, type AcquireOptions, type Pool } from './pool.js';
export { Lease } from './lease.js';
export type { JobResult } from './executor.js';
export type { JobInput, PoolOptions } from './options.js';
export type { LatencyHistogram, PoolStats } from './stats.js';
export { poolSessions, sweepDeadPools, type PoolSession } from './sweep.js';
