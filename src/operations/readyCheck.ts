/** The contract between the readiness wait and its strategies (ready.ts, readyPort.ts). */
import type { Backend, ProbeResult, VmInfo } from '../backend.js';
import type { Clock } from '../time/clock.js';
import type { Deadline } from '../time/deadline.js';

/** What a strategy gets for one check. */
export interface ReadyCheck {
  name: string;
  backend: Backend;
  /** The VM as it was when the wait began (its port forwards, its spec). */
  info: VmInfo;
  clock: Clock;
  /** The wait's overall deadline; a check never runs past it. */
  deadline: Deadline;
  /** How long one probe may take unless the strategy says otherwise. */
  probeTimeoutMs: number;
  /** Counts one probe (the total is reported in the result and in a TIMEOUT). */
  countProbe(): void;
}

/** One readiness condition. `check` says ready or not and what it saw; it throws only for misuse. */
export interface ReadinessStrategy {
  /** For logs and errors: `agent`, `command ["test","-d","/proc/1"]`, `port 80`. */
  readonly description: string;
  check(ctx: ReadyCheck): Promise<ProbeResult>;
}

/** The time one probe gets: its own timeout, never past the overall deadline; whole ms. */
export function probeLimit(ctx: ReadyCheck, own: number | undefined): number {
  return Math.max(1, Math.min(own ?? ctx.probeTimeoutMs, ctx.deadline.remainingMs()));
}
