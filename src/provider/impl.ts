/**
 * The I/O half of the Pulumi provider. The serialized provider objects (providers.ts) load
 * this module at call time inside the provider host and call these functions with no
 * context (the default: environment config, real runner); tests pass their own context.
 * Every function bounds its own run time (the engine does not always honour
 * customTimeouts): with a deadline whose signal is passed down, so a timed-out step stops
 * its work, and otherwise with the timeouts of the operations it runs.
 */
import { readFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import type { ExecResult, VmInfo } from '../backend.js';
import { connect } from '../connector.js';
import { realClock, type OperationContext } from '../context.js';
import { LocalVmError, isLocalVmError, tail } from '../errors.js';
import { createVmWithRetry, deleteVm, findVm, updateVm, vmInfo, waitForVmReady } from '../operations/vm.js';
import { specFingerprint, type VmSpec } from '../schema.js';
import { withDeadline } from '../time/deadline.js';
import {
  checkVm,
  checkVmCommand,
  checkVmFile,
  commandUpdateReruns,
  diffVm,
  diffVmCommand,
  diffVmFile,
  plain,
  sha256,
  vmCommandOf,
  vmFileOf,
  vmSpecOf,
  vmUpdateTouchesMachine,
  type CheckOutcome,
  type CommandInput,
  type DiffOutcome,
  type Props,
} from './logic.js';

type Ctx = Partial<OperationContext> | undefined;

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

/** The state recorded for a VM that was created but never became ready (a partial create). */
const NOT_READY = 'starting';

/** Extra time granted on top of the spec's own timeouts before the provider gives up. */
const GRACE_MS = 15_000;

/**
 * Runs `work` under a deadline of `ms` and hands it the signal: when the deadline passes
 * the work is cancelled (and rejects with TIMEOUT), not left running behind our back.
 */
function bounded<T>(ms: number, what: string, vm: string, ctx: Ctx, work: (signal: AbortSignal) => Promise<T>) {
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

async function guarded<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    // A partial-create report (an object with `id`) must reach the host unchanged.
    if (typeof error === 'object' && error !== null && 'id' in error && 'properties' in error) throw error;
    throw providerError(error);
  }
}

function toCheckReply(outcome: CheckOutcome): CheckReply {
  return { inputs: outcome.inputs, failures: outcome.failures };
}

function toDiffReply(outcome: DiffOutcome, stables: string[]): DiffReply {
  return {
    changes: outcome.changes,
    replaces: outcome.replaces,
    stables: outcome.replaces.length ? [] : stables,
    deleteBeforeReplace: outcome.deleteBeforeReplace,
  };
}

// --- Vm -------------------------------------------------------------------------------

/** Outputs of a Vm: its checked inputs, with what the VM actually is laid over them. */
function vmOuts(inputs: Props, spec: VmSpec, info: VmInfo): Props {
  return plain({
    ...inputs,
    name: spec.name,
    backend: info.backend,
    accel: info.accel ?? spec.accel,
    state: info.state,
    ip4: info.ip4,
    ports: info.ports,
    cpus: info.cpus,
    memory: info.memory,
    // The user's image reference, not the backend's resolved path: that would diff forever.
    image: spec.image,
    fingerprint: info.fingerprint ?? specFingerprint(spec),
  });
}

/** `check` for Vm: the spec schema; unknown values pass. */
export async function vmCheck(_olds: Props, news: Props): Promise<CheckReply> {
  return toCheckReply(checkVm(news));
}

/** `diff` for Vm: identity fields replace (delete first), cpus/memory/ports update in place. */
export async function vmDiff(_id: string, olds: Props, news: Props): Promise<DiffReply> {
  return toDiffReply(diffVm(olds, news), ['name']);
}

/**
 * `create` for Vm: createVmWithRetry (adopts an identical VM), then waitForVmReady. A VM
 * that was created but never became ready is reported as a partial create, so the engine
 * keeps it in state and the next `up` retries readiness instead of leaking it.
 */
/** Waits for the VM with the spec's readiness, bounded by its readyMs (plus grace for the last probe). */
function waitReady(name: string, spec: VmSpec, ctx: Ctx) {
  return bounded(spec.timeouts.readyMs + GRACE_MS, `readiness of VM ${name}`, name, ctx, (signal) =>
    waitForVmReady(name, { timeoutMs: spec.timeouts.readyMs, probes: spec.readiness, signal }, ctx),
  );
}

export async function vmCreate(inputs: Props, ctx?: Ctx): Promise<CreateReply> {
  return guarded(async () => {
    const spec = vmSpecOf(inputs);
    // A failed create removes what it made (createVmWithRetry); the deadline stops its retries.
    const created = await bounded(
      spec.timeouts.createMs + GRACE_MS,
      `create of VM ${spec.name}`,
      spec.name,
      ctx,
      (signal) => createVmWithRetry(spec, { retries: 2, signal }, ctx),
    );
    try {
      const ready = await waitReady(spec.name, spec, ctx);
      return { id: spec.name, outs: vmOuts(inputs, spec, ready.info) };
    } catch (error) {
      const reason = providerError(error).message;
      throw Object.assign(new Error(reason), {
        id: spec.name,
        properties: { ...vmOuts(inputs, spec, created.info), state: NOT_READY },
        reasons: [reason],
      });
    }
  });
}

/**
 * `read` for Vm (refresh): a VM that no longer exists returns no id, so the engine drops
 * it; otherwise the observed state, cpus, memory and ports replace the stored ones.
 */
export async function vmRead(id: string, props: Props, ctx?: Ctx): Promise<ReadReply> {
  return guarded(async () => {
    // Bounded by the backend's own query timeouts.
    const info = await findVm(id, ctx);
    if (!info) return {};
    return {
      id,
      props: plain({
        ...props,
        name: info.name,
        backend: info.backend,
        state: info.state,
        ip4: info.ip4,
        accel: info.accel ?? props.accel,
        ports: info.ports,
        cpus: info.cpus,
        memory: info.memory,
        fingerprint: info.fingerprint ?? props.fingerprint,
      }),
    };
  });
}

/**
 * `update` for Vm: cpus/memory/ports go through updateVm (stop, change, start) and the VM
 * must be ready again; labels, timeouts, readiness and the provider version are stored
 * only, without touching the VM. A VM left not ready by its create is waited for.
 */
export async function vmUpdate(id: string, olds: Props, news: Props, ctx?: Ctx): Promise<UpdateReply> {
  return guarded(async () => {
    const spec = vmSpecOf(news);
    const { updates } = diffVm(olds, news);
    const touches = vmUpdateTouchesMachine(updates);
    // Bounded by the spec's stop and create timeouts, which the backend applies.
    if (touches) {
      await updateVm(spec, ctx);
    } else if (olds.state !== NOT_READY) {
      // Metadata only: the VM is left exactly as it is, even stopped.
      const info = await vmInfo(id, ctx);
      return { outs: vmOuts(news, spec, info) };
    }
    // Changed, or created without ever becoming ready (the engine retries such a create
    // as an update): it must answer before the update counts as done.
    const ready = await waitReady(id, spec, ctx);
    return { outs: vmOuts(news, spec, ready.info) };
  });
}

/** `delete` for Vm. Idempotent: a VM that is already gone is success. */
export async function vmDelete(id: string, _props: Props, ctx?: Ctx): Promise<void> {
  return guarded(async () => {
    // Bounded by the VM's own stop timeout (then a forced stop), which the backend applies.
    await deleteVm(id, ctx);
  });
}

// --- VmCommand ------------------------------------------------------------------------

async function runInVm(
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

function failIfNonZero(vm: string, command: CommandInput, result: ExecResult, allowFailure: boolean): void {
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

function commandOuts(inputs: Props, result: ExecResult): Props {
  return plain({ ...inputs, stdout: result.stdout, stderr: result.stderr, exitCode: result.exitCode });
}

export async function vmCommandCheck(_olds: Props, news: Props): Promise<CheckReply> {
  return toCheckReply(checkVmCommand(news));
}

/** `diff` for VmCommand: vm and triggers replace; command, env, stdin and cwd re-run on update. */
export async function vmCommandDiff(_id: string, olds: Props, news: Props): Promise<DiffReply> {
  return toDiffReply(diffVmCommand(olds, news), ['vm']);
}

/** `create` for VmCommand: runs `create`; a non-zero exit fails with the stderr tail unless allowFailure. */
export async function vmCommandCreate(inputs: Props, ctx?: Ctx): Promise<CreateReply> {
  return guarded(async () => {
    const c = vmCommandOf(inputs);
    const result = await runInVm(c.vm, c.create, c, c.timeoutMs, ctx);
    failIfNonZero(c.vm, c.create, result, c.allowFailure);
    return { id: `${c.vm}/${randomUUID()}`, outs: commandOuts(inputs, result) };
  });
}

/** `update` for VmCommand: runs `update` (else `create`) when what it runs changed; otherwise stores. */
export async function vmCommandUpdate(_id: string, olds: Props, news: Props, ctx?: Ctx): Promise<UpdateReply> {
  return guarded(async () => {
    const c = vmCommandOf(news);
    const { updates } = diffVmCommand(olds, news);
    if (!commandUpdateReruns(updates)) {
      return { outs: plain({ ...news, stdout: olds.stdout, stderr: olds.stderr, exitCode: olds.exitCode }) };
    }
    const command = c.update ?? c.create;
    const result = await runInVm(c.vm, command, c, c.timeoutMs, ctx);
    failIfNonZero(c.vm, command, result, c.allowFailure);
    return { outs: commandOuts(news, result) };
  });
}

/** `delete` for VmCommand: runs `delete` when given. A VM that is already gone is success. */
export async function vmCommandDelete(_id: string, props: Props, ctx?: Ctx): Promise<void> {
  return guarded(async () => {
    const c = vmCommandOf(props);
    if (c.delete === undefined) return;
    let result: ExecResult;
    try {
      result = await runInVm(c.vm, c.delete, c, c.timeoutMs, ctx);
    } catch (error) {
      if (isLocalVmError(error, 'NOT_FOUND')) return;
      throw error;
    }
    failIfNonZero(c.vm, c.delete, result, c.allowFailure);
  });
}

// --- VmFile ---------------------------------------------------------------------------

async function fileContent(f: { content?: string | undefined; source?: string | undefined }): Promise<Uint8Array> {
  if (f.content !== undefined) return new TextEncoder().encode(f.content);
  if (f.source === undefined) throw new LocalVmError('VALIDATION', 'a VmFile needs content or source');
  try {
    return await readFile(f.source);
  } catch (error) {
    throw new LocalVmError('NOT_FOUND', `cannot read source file ${f.source}: ${(error as Error).message}`, {
      issues: [{ property: 'source', reason: 'cannot be read' }],
      cause: error,
    });
  }
}

export async function vmFileCheck(_olds: Props, news: Props): Promise<CheckReply> {
  return toCheckReply(checkVmFile(news));
}

/** `diff` for VmFile: vm, path, content, source (or the source file's bytes) replace; mode updates. */
export async function vmFileDiff(_id: string, olds: Props, news: Props): Promise<DiffReply> {
  let sourceHash: string | undefined;
  if (typeof news.source === 'string') {
    // Unreadable now: let create report it; the diff only needs to see a change.
    sourceHash = await readFile(news.source).then(sha256, () => 'unreadable');
  }
  return toDiffReply(diffVmFile(olds, news, sourceHash), ['vm', 'path']);
}

/** `create` for VmFile: writes the bytes with the mode; outputs their sha256. */
export async function vmFileCreate(inputs: Props, ctx?: Ctx): Promise<CreateReply> {
  return guarded(async () => {
    const f = vmFileOf(inputs);
    const bytes = await fileContent(f);
    const conn = await connect(f.vm, ctx);
    await bounded(f.timeoutMs, `write of ${f.path} in VM ${f.vm}`, f.vm, ctx, (signal) =>
      conn.putFile(f.path, bytes, { mode: f.mode, signal }),
    );
    return { id: `${f.vm}:${f.path}`, outs: plain({ ...inputs, sha256: sha256(bytes) }) };
  });
}

/** `update` for VmFile: only the mode changes in place (`chmod`). */
export async function vmFileUpdate(_id: string, olds: Props, news: Props, ctx?: Ctx): Promise<UpdateReply> {
  return guarded(async () => {
    const f = vmFileOf(news);
    if (olds.mode !== f.mode) {
      const result = await runInVm(f.vm, ['chmod', f.mode.toString(8), '--', f.path], {}, f.timeoutMs, ctx);
      failIfNonZero(f.vm, ['chmod', f.mode.toString(8), '--', f.path], result, false);
    }
    return { outs: plain({ ...news, sha256: olds.sha256 }) };
  });
}

/** `delete` for VmFile: `rm -f` in the guest. A VM that is already gone is success. */
export async function vmFileDelete(_id: string, props: Props, ctx?: Ctx): Promise<void> {
  return guarded(async () => {
    const f = vmFileOf(props);
    const argv = ['rm', '-f', '--', f.path];
    let result: ExecResult;
    try {
      result = await runInVm(f.vm, argv, {}, f.timeoutMs, ctx);
    } catch (error) {
      if (isLocalVmError(error, 'NOT_FOUND')) return;
      throw error;
    }
    failIfNonZero(f.vm, argv, result, false);
  });
}
