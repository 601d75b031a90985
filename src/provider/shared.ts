/**
 * What the I/O halves of the provider resources share (vm.ts, vmCommand.ts, vmFile.ts):
 * the reply shapes the dynamic-provider host expects, deadlines, error reporting, and
 * running a command in a guest. Each function the host calls bounds its own run time (the
 * engine does not always honour customTimeouts): with a deadline whose signal is passed
 * down, so a timed-out step stops its work, and otherwise with the timeouts of the
 * operations it runs.
 */
import type { ExecResult, VmInfo } from '../backend.js';
import { connect } from '../connector.js';
import { realClock, type OperationContext } from '../context.js';
import { LocalVmError, isLocalVmError, tail } from '../errors.js';
import { findVm } from '../operations/vm.js';
import { withDeadline } from '../time/deadline.js';
import type { CheckOutcome, CommandInput, DiffOutcome, Props } from './logic.js';

export type Ctx = Partial<OperationContext> | undefined;

/** Shapes of what the dynamic-provider host expects back (pulumi.dynamic.*Result). */
export interface CheckReply {
  inputs: Props;
  failures: { property: string; reason: string }[];
}
export interface DiffReply {
  changes: boolean;
  replaces: string[];
  stables: string[];
  deleteBeforeReplace: boolean;
}
export interface CreateReply {
  id: string;
  outs: Props;
}
export interface ReadReply {
  id?: string;
  props?: Props;
}
export interface UpdateReply {
  outs: Props;
}

/** Extra time granted on top of the spec's own timeouts before the provider gives up. */
export const GRACE_MS = 15_000;

/**
 * Runs `work` under a deadline of `ms` and hands it the signal: when the deadline passes
 * the work is cancelled (and rejects with TIMEOUT), not left running behind our back.
 */
export function bounded<T>(ms: number, what: string, vm: string, ctx: Ctx, work: (signal: AbortSignal) => Promise<T>) {
  return withDeadline(ms, { what, vm, clock: ctx?.clock ?? realClock }, (d) => work(d.signal));
}

/**
 * The host reports only `error.message` to the engine; put the code and the hint in it so
 * `pulumi up` shows why and what to do.
 */
export function providerError(error: unknown): Error {
  if (isLocalVmError(error)) {
    const issues = error.issues?.map((i) => `${i.property || '(root)'}: ${i.reason}`).join('; ');
    const text = `${error.code}: ${error.message}${issues && !error.message.includes(issues) ? ` (${issues})` : ''}`;
    const out = new Error(error.hint ? `${text}\nhint: ${error.hint}` : text, { cause: error });
    return out;
  }
  return error instanceof Error ? error : new Error(String(error));
}

export async function guarded<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    // A partial-create report (an object with `id`) must reach the host unchanged.
    if (typeof error === 'object' && error !== null && 'id' in error && 'properties' in error) throw error;
    throw providerError(error);
  }
}

/**
 * A warning for the person running `pulumi`. The host has no way to return one from a
 * diff, and it is not connected to the engine (pulumi.log does not reach it); the engine
 * shows what a dynamic provider writes on stderr (pulumi/pulumi#18253), so it goes there.
 */
export function warn(message: string): void {
  process.stderr.write(`warning: localvm: ${message}\n`);
}

export function toCheckReply(outcome: CheckOutcome): CheckReply {
  return { inputs: outcome.inputs, failures: outcome.failures };
}

export function toDiffReply(outcome: DiffOutcome, stables: string[]): DiffReply {
  return {
    changes: outcome.changes,
    replaces: outcome.replaces,
    stables: outcome.replaces.length ? [] : stables,
    deleteBeforeReplace: outcome.deleteBeforeReplace,
  };
}

/**
 * The VM a dependent (VmFile, VmCommand) lives in, as it is now; undefined when it does
 * not exist. `quiet` makes a failed look an undefined answer, for diffs, which must not
 * fail a preview over a VM they only peek at.
 */
export async function observeVm(vm: string, ctx: Ctx, quiet = false): Promise<VmInfo | undefined> {
  try {
    return await findVm(vm, ctx);
  } catch (error) {
    if (quiet) return undefined;
    throw error;
  }
}

export async function runInVm(
  vm: string,
  command: CommandInput,
  options: { env?: Record<string, string> | undefined; stdin?: string | undefined; cwd?: string | undefined },
  timeoutMs: number,
  ctx: Ctx,
): Promise<ExecResult> {
  const conn = await connect(vm, ctx);
  return bounded(timeoutMs + GRACE_MS, `command in VM ${vm}`, vm, ctx, (signal) => {
    const execOptions = { env: options.env, stdin: options.stdin, cwd: options.cwd, timeoutMs, signal };
    return typeof command === 'string' ? conn.shell(command, execOptions) : conn.exec(command, execOptions);
  });
}

export function failIfNonZero(vm: string, command: CommandInput, result: ExecResult, allowFailure: boolean): void {
  if (result.exitCode === 0 || allowFailure) return;
  const shown = typeof command === 'string' ? ['/bin/sh', '-c', command] : command;
  throw new LocalVmError(
    'COMMAND_FAILED',
    `command ${JSON.stringify(shown)} in VM ${vm} exited with ${result.exitCode}` +
      (result.stderr ? `:\n${tail(result.stderr, 20, 2000)}` : ''),
    {
      vm,
      hint: 'set allowFailure: true to keep a non-zero exit',
      command: {
        file: shown[0] ?? '',
        args: shown.slice(1),
        exitCode: result.exitCode,
        stderrTail: tail(result.stderr),
      },
    },
  );
}
