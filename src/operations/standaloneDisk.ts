/**
 * Standalone disks as their own resources: created, resized and deleted on their own and
 * attached to one VM after another (`localvm disk create|attach|detach|resize|delete`).
 * Input is validated here, before anything is written; the backend that keeps them is the
 * registered one with the `volumes` capability (QEMU), so no backend name is spelled here.
 */
import { requireCapability, type Backend, type StandaloneDiskInfo, type VolumeCapable } from '../backend.js';
import { backendDrivers } from '../backends/registry.js';
import { getBackend, withDefaults, type OperationContext } from '../context.js';
import { LocalVmError } from '../errors.js';
import { diskSchema, parseOrThrow, parseVmName } from '../schema.js';

export type { StandaloneDiskInfo } from '../backend.js';

type Ctx = Partial<OperationContext> | undefined;

export interface CreateDiskOptions {
  /** A disk image on the host (qcow2, raw, ...) copied into the new disk; it must fit in `size`. */
  from?: string | undefined;
}

/** Validates a standalone disk's name and size (bytes or `512M`, `10G`); throws VALIDATION. */
export function parseStandaloneDisk(name: unknown, size: unknown): { name: string; size: number } {
  return parseOrThrow(diskSchema, { name, size }, 'disk');
}

function parseName(name: unknown): string {
  return parseOrThrow(diskSchema.pick({ name: true }), { name }, 'disk name').name;
}

async function volumes(ctx: Ctx): Promise<Backend & VolumeCapable> {
  const c = withDefaults(ctx);
  const driver = backendDrivers().find((d) => d.capabilities.includes('volumes'));
  if (!driver) throw new LocalVmError('UNSUPPORTED', 'no registered backend keeps standalone disks');
  return requireCapability(await getBackend(driver.name, c), 'volumes');
}

/** Creates standalone disk `name` of `size` (empty, or a copy of `options.from`). ALREADY_EXISTS when taken. */
export async function createDisk(
  name: string,
  size: number | string,
  options: CreateDiskOptions = {},
  ctx?: Ctx,
): Promise<StandaloneDiskInfo> {
  const disk = parseStandaloneDisk(name, size);
  if (options.from !== undefined && (typeof options.from !== 'string' || options.from.length === 0)) {
    throw new LocalVmError('VALIDATION', 'from must be the path of an image', {
      issues: [{ property: 'from', reason: 'must be a non-empty path' }],
    });
  }
  return (await volumes(ctx)).volumeCreate(disk.name, disk.size, { from: options.from });
}

/** Every standalone disk: size, allocated bytes, format and the VMs it is attached to. */
export async function listStandaloneDisks(ctx?: Ctx): Promise<StandaloneDiskInfo[]> {
  return (await volumes(ctx)).volumeList();
}

/** One standalone disk; NOT_FOUND when there is none of that name. */
export async function diskInfo(name: string, ctx?: Ctx): Promise<StandaloneDiskInfo> {
  return (await volumes(ctx)).volumeInfo(parseName(name));
}

/**
 * Attaches standalone disk `disk` to VM `vm` (hot-plugged when it runs, at every start
 * after). Idempotent for the same mode. CONFLICT when another VM holds it read-write, when
 * it would be read-write beside other VMs, or when the VM has snapshots; NOT_FOUND for an
 * unknown disk or VM.
 */
export async function attachDisk(
  vm: string,
  disk: string,
  options: { readonly?: boolean | undefined } = {},
  ctx?: Ctx,
): Promise<StandaloneDiskInfo> {
  const vmName = parseVmName(vm);
  return (await volumes(ctx)).volumeAttach(vmName, parseName(disk), { readonly: Boolean(options.readonly) });
}

/**
 * Detaches `disk` from `vm`; on a running VM it waits until the guest lets go of the device
 * (TIMEOUT after `timeoutMs`, default 10 s). `detached: false` when it was not attached.
 */
export async function detachDisk(
  vm: string,
  disk: string,
  options: { timeoutMs?: number | undefined } = {},
  ctx?: Ctx,
): Promise<{ detached: boolean }> {
  const vmName = parseVmName(vm);
  return (await volumes(ctx)).volumeDetach(vmName, parseName(disk), options);
}

/** Grows `disk` to `size` (online through QMP when attached to a running VM); VALIDATION on a shrink. */
export async function resizeDisk(disk: string, size: number | string, ctx?: Ctx): Promise<StandaloneDiskInfo> {
  const parsed = parseStandaloneDisk(disk, size);
  return (await volumes(ctx)).volumeResize(parsed.name, parsed.size);
}

/** Deletes `disk`; CONFLICT while it is attached; `deleted: false` when there is none (idempotent). */
export async function deleteDisk(disk: string, ctx?: Ctx): Promise<{ deleted: boolean }> {
  return (await volumes(ctx)).volumeDelete(parseName(disk));
}
