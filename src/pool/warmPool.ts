/**
 * The pool's state machine (see pool.ts for the contract): idle VMs (held or warm), leases,
 * waiting acquires, VMs being made, and the refill that keeps idle + being made at `min`
 * plus the waiters, within `max` and `refillConcurrency`, with a back-off after failures.
 */
import type { OperationContext } from '../context.js';
import { LocalVmError } from '../errors.js';
import type { Clock } from '../time/clock.js';
import { deadline } from '../time/deadline.js';
import type { PoolDriver } from './driver.js';
import { runJob, type JobResult } from './executor.js';
import { Lease } from './lease.js';
import type { JobInput, PoolOptionsParsed } from './options.js';
import type { AcquireOptions, Pool } from './pool.js';
import { LatencyRecorder, type PoolStats } from './stats.js';
import { poolVmName } from './sweep.js';

interface IdleVm {
  name: string;
  warm: boolean;
  cancelTtl: () => void;
}

interface Waiter {
  grant: (vm: IdleVm) => void;
  fail: (error: unknown) => void;
}

/** Back-off after consecutive failures: 200 ms, doubling, at most 10 s. Pure. */
export function backoffMs(failures: number): number {
  return failures <= 0 ? 0 : Math.min(10_000, 200 * 2 ** (failures - 1));
}

/**
 * An acquire's deadline when the caller gives none: at least 60 s, and never shorter than
 * making one VM may take (the driver's makeMs). An empty pool hands out the VM it is making,
 * and a booted guest on a loaded machine can take longer than 60 s to answer: a flat 60 s
 * failed acquires whose VM was on its way. Pure.
 */
export function defaultAcquireMs(makeMs: number): number {
  return Math.max(60_000, makeMs);
}

let vmCounter = 0;

export class WarmPool implements Pool {
  readonly prefix: string;
  private readonly clock: Clock;
  private readonly idle: IdleVm[] = [];
  private readonly leased = new Map<string, Lease>();
  private readonly waiters: Waiter[] = [];
  private alive: NodeJS.Timeout | undefined;
  private readonly releases = new Map<string, () => Promise<void>>();
  private readonly latency = new LatencyRecorder();
  private creating = 0;
  private handing = 0;
  private warming = 0;
  private created = 0;
  private failed = 0;
  private evicted = 0;
  private acquired = 0;
  private failures = 0;
  private retryAt = 0;
  private retryTimer: (() => void) | undefined;
  private state: 'open' | 'draining' | 'closed' = 'open';
  private readonly settled: { done: () => boolean; resolve: () => void }[] = [];
  private readonly destroying = new Set<Promise<void>>();

  constructor(
    private readonly o: PoolOptionsParsed,
    private readonly ctx: OperationContext,
    private readonly driver: PoolDriver,
    private readonly sessionId: string,
    private readonly record: (name: string) => Promise<() => Promise<void>>,
  ) {
    this.prefix = o.prefix;
    this.clock = ctx.clock;
  }

  async acquire(options: AcquireOptions = {}): Promise<Lease> {
    this.ensureOpen();
    const started = this.clock.now();
    const limit = deadline(options.timeoutMs ?? defaultAcquireMs(this.driver.makeMs), {
      what: `acquiring a VM from pool ${this.prefix}`,
      clock: this.clock,
      parent: options.signal,
    });
    try {
      for (;;) {
        // Counted in `handing` from the moment it is taken until it is leased or discarded.
        const vm = await this.take(limit.signal);
        try {
          if (!vm.warm) await this.driver.resume(vm.name);
        } catch (error) {
          // A clone that does not come back to life is discarded and replaced, never handed out.
          this.ctx.log?.(`pool ${this.prefix}: ${vm.name} failed to resume: ${(error as Error).message}`);
          this.failed++;
          this.handing--;
          this.notify();
          this.destroy(vm.name);
          this.refill();
          if (limit.expired()) throw limit.signal.reason;
          continue;
        }
        this.handing--;
        this.notify();
        if (this.state !== 'open') {
          this.destroy(vm.name);
          this.ensureOpen();
        }
        const lease = new Lease(vm.name, this.driver.connector(vm.name), this.clock.now() - started, (name) =>
          this.releaseLease(name),
        );
        this.leased.set(vm.name, lease);
        this.acquired++;
        this.latency.record(lease.acquireMs);
        this.refill();
        return lease;
      }
    } finally {
      limit.dispose();
    }
  }

  run(job: JobInput): Promise<JobResult> {
    return runJob(this, job);
  }

  stats(): PoolStats {
    return {
      idle: this.idle.length,
      warm: this.idle.filter((v) => v.warm).length,
      leased: this.leased.size,
      creating: this.creating,
      waiting: this.waiters.length,
      created: this.created,
      failed: this.failed,
      evicted: this.evicted,
      acquired: this.acquired,
      acquireLatencyMs: this.latency.snapshot(),
    };
  }

  async drain(): Promise<void> {
    if (this.state === 'open') this.state = 'draining';
    this.stopWaiting(new LocalVmError('CONFLICT', `pool ${this.prefix} is draining`));
    await this.until(() => this.leased.size === 0 && this.creating === 0 && this.handing === 0);
    await this.close();
  }

  async close(): Promise<void> {
    this.state = 'closed';
    this.retryTimer?.();
    this.stopWaiting(new LocalVmError('CONFLICT', `pool ${this.prefix} is closed`));
    for (const vm of this.idle.splice(0)) {
      vm.cancelTtl();
      this.destroy(vm.name);
    }
    for (const name of [...this.leased.keys()]) {
      this.leased.delete(name);
      this.destroy(name);
    }
    // VMs still being made are destroyed by makeOne when they come up.
    await this.until(() => this.creating === 0 && this.handing === 0);
    while (this.destroying.size) await Promise.all([...this.destroying]);
  }

  /** Starts making VMs until idle + being made covers `min` plus the waiting acquires, within the limits. */
  refill(): void {
    if (this.state !== 'open') return;
    for (;;) {
      const wanted = this.o.min + this.waiters.length;
      const total = this.idle.length + this.creating + this.handing + this.leased.size;
      if (this.idle.length + this.creating >= wanted) break;
      if (this.creating >= this.o.refillConcurrency || total >= this.o.max) break;
      const wait = this.retryAt - this.clock.now();
      if (wait > 0) {
        const retry = () => {
          this.retryTimer = undefined;
          this.refill();
        };
        // A clock without timers (a test's fake) sleeps instead.
        this.retryTimer ??=
          this.clock.schedule?.(wait, retry) ??
          (void this.clock.sleep(wait).then(() => this.state === 'open' && retry()), () => undefined);
        break;
      }
      this.creating++;
      void this.makeOne();
    }
  }

  private async makeOne(): Promise<void> {
    const name = poolVmName(this.prefix, this.sessionId, ++vmCounter);
    let warm = false;
    try {
      this.releases.set(name, await this.record(name));
      await this.driver.create(name);
      this.created++;
      if (this.state === 'open' && this.warmCount() + this.warming < this.o.warm) {
        this.warming++;
        try {
          await this.driver.resume(name);
          warm = true;
        } finally {
          this.warming--;
        }
      }
      this.failures = 0;
    } catch (error) {
      this.failed++;
      this.failures++;
      this.retryAt = this.clock.now() + backoffMs(this.failures);
      this.ctx.log?.(`pool ${this.prefix}: making ${name} failed: ${(error as Error).message}`);
      this.creating--;
      this.destroy(name);
      this.refill();
      this.notify();
      return;
    }
    this.creating--;
    this.offer(name, warm);
    this.refill();
    this.notify();
  }

  /** A VM that has just become available: to the first waiter, else idle (with its TTL). */
  private offer(name: string, warm: boolean): void {
    if (this.state !== 'open') {
      this.destroy(name);
      return;
    }
    const vm: IdleVm = { name, warm, cancelTtl: () => undefined };
    const waiter = this.waiters.shift();
    this.keepAlive();
    if (waiter) {
      this.handing++;
      waiter.grant(vm);
      return;
    }
    vm.cancelTtl = this.clock.schedule?.(this.o.idleTtlMs, () => this.evict(vm)) ?? (() => undefined);
    this.idle.push(vm);
  }

  private evict(vm: IdleVm): void {
    const i = this.idle.indexOf(vm);
    if (i === -1) return;
    this.idle.splice(i, 1);
    this.evicted++;
    this.destroy(vm.name);
    this.refill();
  }

  /** The next idle VM (a warm one first), or one made for this acquire; rejects with the signal's reason. */
  private take(signal: AbortSignal): Promise<IdleVm> {
    signal.throwIfAborted();
    const i = this.idle.findIndex((v) => v.warm);
    const vm = this.idle.splice(i === -1 ? 0 : i, 1)[0];
    if (vm) {
      vm.cancelTtl();
      this.handing++;
      return Promise.resolve(vm);
    }
    return new Promise<IdleVm>((resolve, reject) => {
      const waiter: Waiter = {
        grant: (v) => {
          signal.removeEventListener('abort', onAbort);
          resolve(v);
        },
        fail: (error) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      const onAbort = () => {
        const at = this.waiters.indexOf(waiter);
        if (at !== -1) this.waiters.splice(at, 1);
        this.keepAlive();
        reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
      this.keepAlive();
      this.refill();
    });
  }

  private async releaseLease(name: string): Promise<void> {
    if (!this.leased.delete(name)) return;
    this.destroy(name);
    this.refill();
    this.notify();
    await Promise.all([...this.destroying]);
  }

  /** Deletes `name` and drops it from the session record; never throws (a failure is logged). */
  private destroy(name: string): void {
    const p = (async () => {
      try {
        await this.driver.destroy(name);
        await this.releases.get(name)?.();
        this.releases.delete(name);
      } catch (error) {
        // Left in the session record: the reaper or the next pool's sweep removes it.
        this.ctx.log?.(`pool ${this.prefix}: deleting ${name} failed: ${(error as Error).message}`);
      }
    })();
    this.destroying.add(p);
    void p.finally(() => {
      this.destroying.delete(p);
      this.notify();
    });
  }

  /**
   * While an acquire waits, the process must not exit under it: the timers a wait depends on
   * (its deadline, a refill's back-off) are unref'd, and a pending promise holds nothing. A
   * ref'd handle that does no work, held only while someone waits.
   */
  private keepAlive(): void {
    if (this.waiters.length > 0) this.alive ??= setInterval(() => undefined, 60_000);
    else if (this.alive) {
      clearInterval(this.alive);
      this.alive = undefined;
    }
  }

  private warmCount(): number {
    return this.idle.filter((v) => v.warm).length;
  }

  private ensureOpen(): void {
    if (this.state !== 'open') {
      throw new LocalVmError('CONFLICT', `pool ${this.prefix} is ${this.state}: it hands out no more VMs`);
    }
  }

  private stopWaiting(error: LocalVmError): void {
    for (const w of this.waiters.splice(0)) w.fail(error);
    this.keepAlive();
  }

  private until(done: () => boolean): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve) => this.settled.push({ done, resolve }));
  }

  /** Something changed (a VM made, released, destroyed): wake the drains and closes it satisfies. */
  private notify(): void {
    for (const s of [...this.settled]) {
      if (!s.done()) continue;
      this.settled.splice(this.settled.indexOf(s), 1);
      s.resolve();
    }
  }
}
