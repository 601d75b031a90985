/**
 * The I/O half of the `Vm` resource: check, diff, create, read, update and delete, called
 * by the serialized provider (providers.ts) inside the provider host with no context (the
 * default: environment config, real runner); tests pass their own context.
 */
import type { VmInfo } from '../backend.js';
import { LocalVmError, isLocalVmError } from '../errors.js';
import {
  createVmWithRetry,
  deleteVm,
  findVm,
  startVm,
  stopVm,
  updateVm,
  vmInfo,
  waitForVmReady,
} from '../operations/vm.js';
import { specFingerprint, type VmSpec } from '../schema.js';
import {
  checkVm,
  diffVm,
  OWNER_LABEL,
  ownerConflict,
  plain,
  sameValue,
  vmControlOf,
  vmSpecOf,
  vmUpdateRestarts,
  type Props,
} from './logic.js';
import {
  GRACE_MS,
  bounded,
  guarded,
  providerError,
  toCheckReply,
  toDiffReply,
  warn,
  type CheckReply,
  type CreateReply,
  type Ctx,
  type DiffReply,
  type ReadReply,
  type UpdateReply,
} from './shared.js';

/** The state recorded for a VM that was created but never became ready (a partial create). */
const NOT_READY = 'starting';

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
    // A clone names none (it runs its template's guest).
    image: spec.template === undefined ? spec.image : undefined,
    fingerprint: info.fingerprint ?? specFingerprint(spec),
    createdAt: info.createdAt,
    bootedAt: info.startedAt,
  });
}

/** `check` for Vm: the spec schema; unknown values pass, and known ones get their defaults. */
export async function vmCheck(_olds: Props, news: Props): Promise<CheckReply> {
  return toCheckReply(checkVm(news));
}

/**
 * `diff` for Vm: identity fields replace (delete first, unless only the name changed),
 * cpus/memory/ports update in place. The host cannot carry a warning in a diff result, so
 * an update that restarts the VM says so on stderr, which the engine shows.
 */
export async function vmDiff(_id: string, olds: Props, news: Props): Promise<DiffReply> {
  const outcome = diffVm(olds, news);
  const restarts = vmUpdateRestarts(outcome.updates);
  if (outcome.replaces.length === 0 && restarts.length > 0) {
    warn(
      `changing ${restarts.join(', ')} of VM ${String(news.name ?? olds.name)} restarts it: whatever lives only ` +
        `in the guest is lost (with the tiny image, everything: its files are in RAM). Its VmFile and VmCommand ` +
        `resources see the new boot and are written and run again.`,
    );
  }
  return toDiffReply(outcome, ['name']);
}

/** Waits for the VM with the spec's readiness, bounded by its readyMs (plus grace for the last probe). */
function waitReady(name: string, spec: VmSpec, ctx: Ctx) {
  return bounded(spec.timeouts.readyMs + GRACE_MS, `readiness of VM ${name}`, name, ctx, (signal) =>
    waitForVmReady(name, { timeoutMs: spec.timeouts.readyMs, probes: spec.readiness, signal }, ctx),
  );
}

/**
 * Writes the spec's labels (the owner among them) to the VM's record. Labels never restart
 * a VM; a backend that keeps no labels (OrbStack) has nothing to write.
 */
async function relabel(spec: VmSpec, info: VmInfo, ctx: Ctx): Promise<VmInfo> {
  if (sameValue(info.labels, spec.labels)) return info;
  try {
    return await updateVm(spec, ctx);
  } catch (error) {
    if (isLocalVmError(error, 'UNSUPPORTED')) return info;
    throw error;
  }
}

/** CONFLICT when a VM of that name exists and belongs to another Pulumi resource. */
async function refuseForeignVm(spec: VmSpec, inputs: Props, ctx: Ctx): Promise<void> {
  const existing = await findVm(spec.name, ctx);
  const control = vmControlOf(inputs);
  const owner = existing && ownerConflict(existing.labels, control);
  if (!owner) return;
  throw new LocalVmError('CONFLICT', `VM ${spec.name} exists and is owned by ${owner}, not by ${control.owner}`, {
    vm: spec.name,
    hint:
      'two stacks, or a resource renamed without an alias, name the same VM: choose another name, add an alias, ' +
      "or set adopt: true to take it over (the other resource's delete would then destroy it)",
    details: { owner, wanted: control.owner },
  });
}

/**
 * `create` for Vm: refuses a VM of that name owned by another resource, then
 * createVmWithRetry (adopts an identical VM, whose labels are then ours), then
 * waitForVmReady. A VM that was created but never became ready is reported as a partial
 * create, so the engine keeps it in state and the next `up` retries readiness instead of
 * leaking it. `running: false` stops it once it is ready.
 */
export async function vmCreate(inputs: Props, ctx?: Ctx): Promise<CreateReply> {
  return guarded(async () => {
    const spec = vmSpecOf(inputs);
    await refuseForeignVm(spec, inputs, ctx);
    // A failed create removes what it made (createVmWithRetry); the deadline stops its retries.
    const created = await bounded(
      spec.timeouts.createMs + GRACE_MS,
      `create of VM ${spec.name}`,
      spec.name,
      ctx,
      (signal) => createVmWithRetry(spec, { retries: 2, signal }, ctx),
    );
    const info = created.adopted ? await relabel(spec, created.info, ctx) : created.info;
    try {
      const ready = await waitReady(spec.name, spec, ctx);
      const final = vmControlOf(inputs).running === false ? await stopVm(spec.name, {}, ctx) : ready.info;
      return { id: spec.name, outs: vmOuts(inputs, spec, final) };
    } catch (error) {
      const reason = providerError(error).message;
      throw Object.assign(new Error(reason), {
        id: spec.name,
        properties: { ...vmOuts(inputs, spec, info), state: NOT_READY },
        reasons: [reason],
      });
    }
  });
}

/**
 * `read` for Vm (refresh): a VM that no longer exists returns no id, so the engine drops
 * it; otherwise the observed state, cpus, memory, ports and boot replace the stored ones.
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
        createdAt: info.createdAt ?? props.createdAt,
        bootedAt: info.startedAt,
      }),
    };
  });
}

/**
 * `update` for Vm: cpus/memory/ports go through updateVm (stop, change, start) and the VM
 * must be ready again; labels and the owner are written to the VM without a restart;
 * timeouts, readiness and the provider version are stored only. `running` (default true)
 * starts a stopped VM or stops a running one. A VM left not ready by its create is waited for.
 */
export async function vmUpdate(id: string, olds: Props, news: Props, ctx?: Ctx): Promise<UpdateReply> {
  return guarded(async () => {
    const spec = vmSpecOf(news);
    const running = vmControlOf(news).running !== false;
    const { updates } = diffVm(olds, news);
    let info: VmInfo;
    // Bounded by the spec's stop and create timeouts, which the backend applies.
    if (vmUpdateRestarts(updates).length > 0) {
      info = await updateVm(spec, ctx);
    } else {
      info = await relabel(spec, await vmInfo(id, ctx), ctx);
      if (running && info.state === 'stopped') info = await startVm(id, ctx);
    }
    if (!running) {
      return { outs: vmOuts(news, spec, info.state === 'stopped' ? info : await stopVm(id, {}, ctx)) };
    }
    const touched = info.startedAt !== olds.bootedAt || olds.state === NOT_READY;
    // Started, restarted, or created without ever becoming ready (the engine retries such a
    // create as an update): it must answer before the update counts as done.
    if (!touched && info.state === 'running') return { outs: vmOuts(news, spec, info) };
    const ready = await waitReady(id, spec, ctx);
    return { outs: vmOuts(news, spec, ready.info) };
  });
}

/**
 * `delete` for Vm. Idempotent: a VM that is already gone is success. A VM another resource
 * has since adopted (its owner label names someone else) is left to that owner.
 */
export async function vmDelete(id: string, props: Props, ctx?: Ctx): Promise<void> {
  return guarded(async () => {
    const owner = vmControlOf(props).owner;
    const current = owner === undefined ? undefined : (await findVm(id, ctx))?.labels[OWNER_LABEL];
    if (current !== undefined && current !== owner) {
      warn(`left VM ${id} in place: it is owned by ${current} now, not by ${owner}`);
      return;
    }
    // Bounded by the VM's own stop timeout (then a forced stop), which the backend applies.
    await deleteVm(id, ctx);
  });
}
