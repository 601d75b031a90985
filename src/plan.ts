/**
 * Plans: what a state-changing operation will do, computed by its backend from read-only
 * observations before anything changes. The same plan is printed by `--dry-run` and executed
 * by the real operation, so the two cannot drift. Every step says itself in one line
 * (`summary`); steps that start a process carry its exact argv (`command`). What a backend
 * needs to execute a step (records, QMP commands, secrets such as user-data) lives in the
 * backend's own step type, never in `summary`.
 */
import type { Command } from './runner.js';
import type { VmSpec } from './schema.js';

export interface PlanStep {
  /** One line for people: what this step does (no secrets). */
  summary: string;
  /** The process this step starts, exactly. */
  command?: Command | undefined;
  /** Steps taken only when this one finds it was not enough (a graceful stop that timed out). */
  otherwise?: readonly PlanStep[] | undefined;
}

export type PlanOperation = 'create' | 'start' | 'stop' | 'restart' | 'delete';

export interface Plan<S extends PlanStep = PlanStep> {
  backend: string;
  operation: PlanOperation;
  vm: string;
  steps: S[];
}

/** What a backend is asked to plan. */
export type PlanRequest =
  | { operation: 'create'; spec: VmSpec }
  | { operation: 'start' | 'restart' | 'delete'; name: string }
  | { operation: 'stop'; name: string; force?: boolean | undefined; timeoutMs?: number | undefined };

/** Every step of `plan` in execution order, fallbacks after the step they follow, with their depth. */
export function flattenPlan(steps: readonly PlanStep[], depth = 0): { step: PlanStep; depth: number }[] {
  return steps.flatMap((step) => [{ step, depth }, ...flattenPlan(step.otherwise ?? [], depth + 1)]);
}

/** The argv of every process the plan would start, in order (fallbacks included). */
export function planCommands(plan: Plan): Command[] {
  return flattenPlan(plan.steps).flatMap(({ step }) => (step.command ? [step.command] : []));
}
