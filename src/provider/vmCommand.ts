/**
 * The I/O half of the `VmCommand` resource. A command is bound to the VM instance and the
 * boot it ran in (recorded as `vmCreatedAt`/`vmBootedAt`): what it did in the guest may be
 * gone once the VM restarts (with the tiny image it is), so a new boot runs it again.
 */
import { randomUUID } from 'node:crypto';
import type { ExecResult } from '../backend.js';
import { isLocalVmError } from '../errors.js';
import {
  checkVmCommand,
  commandUpdateReruns,
  diffVmCommand,
  plain,
  vmCommandOf,
  vmInstanceDrift,
  vmInstanceOuts,
  type Props,
} from './logic.js';
import {
  failIfNonZero,
  guarded,
  observeVm,
  runInVm,
  toCheckReply,
  toDiffReply,
  type CheckReply,
  type CreateReply,
  type Ctx,
  type DiffReply,
  type ReadReply,
  type UpdateReply,
} from './shared.js';

/** Outputs: the inputs, what the command printed, and the VM instance and boot it ran in. */
async function commandOuts(inputs: Props, vm: string, result: ExecResult, ctx: Ctx): Promise<Props> {
  const info = await observeVm(vm, ctx, true);
  return plain({
    ...inputs,
    stdout: result.stdout,
    stderr: result.stderr,
    exitCode: result.exitCode,
    ...(info ? vmInstanceOuts(info) : {}),
  });
}

export async function vmCommandCheck(_olds: Props, news: Props): Promise<CheckReply> {
  return toCheckReply(checkVmCommand(news));
}

/**
 * `diff` for VmCommand: vm and triggers replace (`deleteBeforeReplace: true` runs the old
 * `delete` first); command, env, stdin and cwd re-run on update; so does a VM that was
 * recreated or restarted since the command ran (looked up now: in an `up` this diff runs
 * after the VM's own update).
 */
export async function vmCommandDiff(_id: string, olds: Props, news: Props, ctx?: Ctx): Promise<DiffReply> {
  const drift = typeof news.vm === 'string' ? vmInstanceDrift(olds, await observeVm(news.vm, ctx, true)) : undefined;
  return toDiffReply(diffVmCommand(olds, news, drift), ['vm']);
}

/** `create` for VmCommand: runs `create`; a non-zero exit fails with the stderr tail unless allowFailure. */
export async function vmCommandCreate(inputs: Props, ctx?: Ctx): Promise<CreateReply> {
  return guarded(async () => {
    const c = vmCommandOf(inputs);
    const result = await runInVm(c.vm, c.create, c, c.timeoutMs, ctx);
    failIfNonZero(c.vm, c.create, result, c.allowFailure);
    return { id: `${c.vm}/${randomUUID()}`, outs: await commandOuts(inputs, c.vm, result, ctx) };
  });
}

/**
 * `read` for VmCommand (refresh): the command's effect cannot be observed, its VM can: a
 * VM that is gone, another instance under the same name, or a new boot drops the command,
 * so the next `up` runs it again.
 */
export async function vmCommandRead(id: string, props: Props, ctx?: Ctx): Promise<ReadReply> {
  return guarded(async () => {
    if (typeof props.vm !== 'string') return { id, props };
    if (vmInstanceDrift(props, await observeVm(props.vm, ctx))) return {};
    return { id, props };
  });
}

/**
 * `update` for VmCommand: in a new instance or boot of the VM it runs `create` again (what
 * it did is gone); otherwise `update` (else `create`) when what it runs changed; otherwise
 * it stores the new inputs.
 */
export async function vmCommandUpdate(_id: string, olds: Props, news: Props, ctx?: Ctx): Promise<UpdateReply> {
  return guarded(async () => {
    const c = vmCommandOf(news);
    const drift = vmInstanceDrift(olds, await observeVm(c.vm, ctx));
    const { updates } = diffVmCommand(olds, news, drift);
    if (!commandUpdateReruns(updates)) {
      const kept = { stdout: olds.stdout, stderr: olds.stderr, exitCode: olds.exitCode };
      return { outs: plain({ ...news, ...kept, vmCreatedAt: olds.vmCreatedAt, vmBootedAt: olds.vmBootedAt }) };
    }
    const command = drift === 'recreated' || drift === 'rebooted' ? c.create : (c.update ?? c.create);
    const result = await runInVm(c.vm, command, c, c.timeoutMs, ctx);
    failIfNonZero(c.vm, command, result, c.allowFailure);
    return { outs: await commandOuts(news, c.vm, result, ctx) };
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
