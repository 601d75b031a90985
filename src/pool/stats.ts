/**
 * What a pool counts: VMs by state, what it made, lost and evicted, and how long acquire
 * took, as a histogram with fixed bucket bounds and exact percentiles of recent samples.
 */

/** Upper bounds (ms) of the acquire-latency buckets; the last bucket is everything above. */
export const LATENCY_BOUNDS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000] as const;
/** Samples kept for percentiles (the histogram counts them all). */
const SAMPLES = 1_000;

export interface LatencyHistogram {
  /** `le`: upper bound in ms (Infinity for the last), `count`: samples in (previous bound, le]. */
  buckets: { le: number; count: number }[];
  count: number;
  p50: number | undefined;
  p95: number | undefined;
  p99: number | undefined;
}

export interface PoolStats {
  /** Ready to hand out (held paused or warm). */
  idle: number;
  /** Of those, resumed and answered already. */
  warm: number;
  leased: number;
  /** Being made (restored, booted) or resumed for a waiter. */
  creating: number;
  /** Acquires waiting for a VM. */
  waiting: number;
  /** VMs made since the pool started. */
  created: number;
  /** VMs that failed to be made, resumed or to answer (each discarded and replaced). */
  failed: number;
  /** Idle VMs replaced because they passed idleTtlMs. */
  evicted: number;
  /** Leases handed out. */
  acquired: number;
  acquireLatencyMs: LatencyHistogram;
}

/** The value at quantile `q` of sorted `xs` (nearest rank). Pure. */
export function quantile(sorted: readonly number[], q: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(sorted.length * q) - 1))];
}

export class LatencyRecorder {
  private readonly counts = new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0);
  private readonly recent: number[] = [];
  private total = 0;

  record(ms: number): void {
    const i = LATENCY_BOUNDS_MS.findIndex((b) => ms <= b);
    this.counts[i === -1 ? LATENCY_BOUNDS_MS.length : i]! += 1;
    this.total++;
    this.recent.push(ms);
    if (this.recent.length > SAMPLES) this.recent.shift();
  }

  snapshot(): LatencyHistogram {
    const sorted = [...this.recent].sort((a, b) => a - b);
    return {
      buckets: this.counts.map((count, i) => ({ le: LATENCY_BOUNDS_MS[i] ?? Infinity, count })),
      count: this.total,
      p50: quantile(sorted, 0.5),
      p95: quantile(sorted, 0.95),
      p99: quantile(sorted, 0.99),
    };
  }
}
