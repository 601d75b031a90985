/**
 * VM operations, whatever the backend: the library's main entry points, used by the CLI,
 * the Pulumi provider and the vitest fixtures. Input is validated here, at the boundary.
 */
import pRetry, { AbortError } from 'p-retry';
import type { Backend, StopOptions, VmInfo } from '../backend.js';
import { availableBackends, resolveBackend, withDefaults, type OperationContext } from '../context.js';
import { LocalVmError, isLocalVmError, isTransient, unlessNotFound } from '../errors.js';
import { backendFor, listBackend, type UnreachableHost } from './hosts.js';
import { locate, notFound } from './locate.js';
import { parseOrThrow, parseVmName, parseVmSpec, specFingerprint, type VmSpec, type VmSpecInput } from '../schema.js';
import { z } from 'zod';

export { defaultContext, resolveBackend, realClock, type Clock, type OperationContext } from '../context.js';
export {
  ready,
  waitForVmReady,
  type ReadinessStrategy,
  type ReadyCheck,
  type ReadyOptions,
  type ReadyResult,
} from './ready.js';

type Ctx = Partial<OperationContext> | undefined;

/** The backend that owns an existing VM. Throws NOT_FOUND when none does. */
export async function backendOf(name: string, ctx?: Ctx): Promise<Backend> {
  const c = withDefaults(ctx);
  const found = await locate(parseVmName(name), c);
  if (!found) throw notFound(name);
  return found.backend;
}

/**
 * Creates and starts a VM. Validates first, so a bad spec throws VALIDATION before anything
 * touches disk. Throws ALREADY_EXISTS when the name is taken (see createVmWithRetry for adoption).
 */
export async function createVm(input: VmSpecInput, ctx?: Ctx): Promise<VmInfo> {
  const spec = parseVmSpec(input);
  const c = withDefaults(ctx);
  const { backend, reason } = await resolveBackend(spec.backend, c, spec.image, spec);
  c.log?.(`create ${spec.name}: ${reason}`);
  return backend.create(spec);
}

export interface RetryOptions {
  /** Retries after the first attempt (default 3). */
  retries?: number;
  minTimeoutMs?: number;
  maxTimeoutMs?: number;
  onRetry?: (error: LocalVmError, attempt: number) => void;
  /**
   * Stops retrying when it aborts: no new attempt starts, and the call rejects with the
   * reason. The attempt under way ends on its own timeouts; if it succeeds, that stands.
   */
  signal?: AbortSignal | undefined;
}

export interface CreateResult {
  info: VmInfo;
  /** Attempts made, 1 when the first one worked. */
  attempts: number;
  /** True when an existing VM with the same spec was taken over instead of created. */
  adopted: boolean;
}

function matches(backend: Backend, info: VmInfo, spec: VmSpec): boolean {
  if (info.fingerprint) return info.fingerprint === specFingerprint(spec);
  return backend.matchesSpec?.(info, spec) ?? false;
}

/**
 * Creates a VM, retrying only errors classified transient. A VM of the same name and spec
 * is adopted (started if stopped); one with a different spec is a CONFLICT. A half-created
 * VM left by a failed attempt is removed before the next one, and a permanent failure
 * removes it too, so a failed create leaves nothing behind. Idempotent, and safe to run
 * from several processes at once on a backend with `createOrAdopt` (QEMU): there every
 * decision to adopt, remove or create is taken under the VM's lock.
 */
export async function createVmWithRetry(
  input: VmSpecInput,
  options: RetryOptions = {},
  ctx?: Ctx,
): Promise<CreateResult> {
  const spec = parseVmSpec(input);
  const c = withDefaults(ctx);
  const { backend, reason } = await resolveBackend(spec.backend, c, spec.image, spec);
  c.log?.(`create ${spec.name}: ${reason}`);
  let attempts = 0;

  const adoptOrConflict = async (info: VmInfo): Promise<CreateResult> => {
    if (!matches(backend, info, spec)) {
      throw new AbortError(
        new LocalVmError('CONFLICT', `a VM named ${spec.name} already exists with a different spec`, {
          vm: spec.name,
          hint: `delete it first (localvm delete ${spec.name}) or choose another name`,
          details: { existing: info.fingerprint, wanted: specFingerprint(spec) },
        }),
      );
    }
    const started = info.state === 'running' ? info : await backend.start(spec.name);
    return { info: started, attempts, adopted: true };
  };

  const attempt = async (n: number): Promise<CreateResult> => {
    if (options.signal?.aborted) throw new AbortError(options.signal.reason as Error);
    attempts = n;
    if (backend.createOrAdopt) {
      try {
        return { ...(await backend.createOrAdopt(spec, (info) => matches(backend, info, spec))), attempts };
      } catch (error) {
        // The backend removed what a failed create left, under its lock: nothing to clean here.
        if (!isTransient(error)) throw new AbortError(error as Error);
        throw error;
      }
    }
    const existing = await unlessNotFound(backend.info(spec.name));
    if (existing?.reason === 'create-failed') {
      // Left by an earlier attempt (ours or a crashed process): nobody uses it, so replace it.
      c.log?.(`create ${spec.name}: removing a half-created VM`);
      await backend.delete(spec.name);
    } else if (existing) {
      return adoptOrConflict(existing);
    }
    try {
      return { info: await backend.create(spec), attempts, adopted: false };
    } catch (error) {
      if (isLocalVmError(error, 'ALREADY_EXISTS')) {
        // A racing creator made it between our look and our create: look again.
        const now = await backend.info(spec.name).catch(() => undefined);
        if (now) return adoptOrConflict(now);
      }
      if (isTransient(error)) {
        // A create that hung or failed may still have made a good machine (OrbStack does):
        // adopt it when it matches and starts; otherwise it is removed below and retried.
        const left = await backend.info(spec.name).catch(() => undefined);
        if (left && left.reason !== 'create-failed' && matches(backend, left, spec)) {
          try {
            const info = left.state === 'running' ? left : await backend.start(spec.name);
            c.log?.(`create ${spec.name}: adopted the machine a failed create left behind`);
            return { info, attempts, adopted: true };
          } catch (startError) {
            c.log?.(`create ${spec.name}: the machine left behind does not start: ${(startError as Error).message}`);
          }
        }
      }
      // Whatever this attempt left behind goes, so the next attempt (or the caller) starts clean.
      await backend.delete(spec.name).catch((cleanupError: unknown) => {
        c.log?.(`create ${spec.name}: cleanup after failure failed: ${(cleanupError as Error).message}`);
      });
      if (!isTransient(error)) throw new AbortError(error as Error);
      throw error;
    }
  };

  try {
    return await pRetry(attempt, {
      retries: options.retries ?? 3,
      minTimeout: options.minTimeoutMs ?? 500,
      maxTimeout: options.maxTimeoutMs ?? 5_000,
      factor: 2,
      randomize: true,
      shouldRetry: ({ error }) => isTransient(error),
      onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
        if (retriesLeft > 0 && isTransient(error)) {
          c.log?.(`create ${spec.name}: attempt ${attemptNumber} failed (${(error as Error).message}), retrying`);
          options.onRetry?.(error as LocalVmError, attemptNumber);
        }
      },
    });
  } catch (error) {
    if (isLocalVmError(error)) throw error;
    throw new LocalVmError('INTERNAL', `create ${spec.name} failed: ${(error as Error).message}`, { cause: error });
  }
}

/** Starts a VM; a running VM is left alone. */
export async function startVm(name: string, ctx?: Ctx): Promise<VmInfo> {
  return (await backendOf(name, ctx)).start(name);
}

/** Stops a VM (graceful, then forced after the timeout); a stopped VM is left alone. */
export async function stopVm(name: string, options: StopOptions = {}, ctx?: Ctx): Promise<VmInfo> {
  return (await backendOf(name, ctx)).stop(name, options);
}

export async function restartVm(name: string, ctx?: Ctx): Promise<VmInfo> {
  return (await backendOf(name, ctx)).restart(name);
}

/** Applies a changed spec's cpus, memory and port forwards to an existing VM (stop, change, start). */
export async function updateVm(input: VmSpecInput, ctx?: Ctx): Promise<VmInfo> {
  const spec = parseVmSpec(input);
  const backend = await backendOf(spec.name, ctx);
  if (!backend.update) {
    throw new LocalVmError('UNSUPPORTED', `the ${backend.name} backend cannot change a VM in place`, { vm: spec.name });
  }
  return backend.update(spec.name, spec);
}

/** Deletes a VM and everything it owns. Idempotent: a missing VM is success with `deleted: false`. */
export async function deleteVm(name: string, ctx?: Ctx): Promise<{ deleted: boolean }> {
  const c = withDefaults(ctx);
  const found = await locate(parseVmName(name), c);
  if (!found) return { deleted: false };
  await found.backend.delete(name);
  return { deleted: true };
}

/** Every VM of every available backend. */
export async function listVms(ctx?: Ctx): Promise<VmInfo[]> {
  const c = withDefaults(ctx);
  const lists = await Promise.all((await availableBackends(c)).map((b) => b.list()));
  return lists.flat().sort((a, b) => a.name.localeCompare(b.name));
}

/** The VM's reconciled state. Throws NOT_FOUND. */
export async function vmInfo(name: string, ctx?: Ctx): Promise<VmInfo> {
  const found = await findVm(name, ctx);
  if (!found) throw notFound(name);
  return found;
}

/** The VM's reconciled state, or undefined when it does not exist. */
export async function findVm(name: string, ctx?: Ctx): Promise<VmInfo | undefined> {
  const found = await locate(parseVmName(name), withDefaults(ctx));
  return found?.info;
}

const prefixSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be a non-empty VM name prefix (a-z, 0-9, "-")');

/**
 * Deletes every VM whose name starts with `prefix`, and only those, then the templates whose
 * names start with it (test fixtures name theirs so). The prefix must be
 * non-empty: an empty one would match every VM on the machine.
 */
export async function cleanupVms(
  options: { prefix: string; dryRun?: boolean },
  ctx?: Ctx,
): Promise<{
  matched: string[];
  deleted: string[];
  templates: { matched: string[]; deleted: string[]; kept: string[] };
  /** Hosts that did not answer (libvirt): their VMs were not looked at, the others' were cleaned. */
  unreachable: UnreachableHost[];
}> {
  const prefix = parseOrThrow(prefixSchema, options.prefix, 'cleanup prefix');
  const c = withDefaults(ctx);
  const matched: { name: string; backend: Backend }[] = [];
  const templates: { name: string; backend: TemplateLister }[] = [];
  const unreachable: UnreachableHost[] = [];
  for (const backend of await availableBackends(c)) {
    const listing = await listBackend(backend);
    unreachable.push(...listing.unreachable);
    for (const vm of listing.vms)
      if (vm.name.startsWith(prefix)) matched.push({ name: vm.name, backend: await backendFor(vm, backend, c) });
    const lister = backend as Backend & Partial<TemplateLister>;
    if (typeof lister.templateList === 'function' && typeof lister.templateDelete === 'function') {
      for (const t of await lister.templateList()) {
        if (t.name.startsWith(prefix)) templates.push({ name: t.name, backend: lister as TemplateLister });
      }
    }
  }
  const deleted: string[] = [];
  const templatesDeleted: string[] = [];
  const kept: string[] = [];
  if (!options.dryRun) {
    for (const { name, backend } of matched) {
      await backend.delete(name);
      deleted.push(name);
    }
    // Templates after the VMs: a clone maps its template's RAM file. One still used by a
    // clone outside the prefix is kept (CONFLICT), never deleted under it.
    for (const { name, backend } of templates) {
      try {
        await backend.templateDelete(name);
        templatesDeleted.push(name);
      } catch (error) {
        if (!isLocalVmError(error, 'CONFLICT')) throw error;
        kept.push(name);
      }
    }
  }
  return {
    matched: matched.map((m) => m.name),
    deleted,
    templates: { matched: templates.map((t) => t.name), deleted: templatesDeleted, kept },
    unreachable,
  };
}

/** What cleanup needs of a backend with templates. */
interface TemplateLister {
  templateList(): Promise<{ name: string }[]>;
  templateDelete(name: string): Promise<{ deleted: boolean }>;
}
