/**
 * Extra-disk operations, whatever the backend: the VM name and the disk are validated
 * here, at the boundary, and a backend without extra disks (OrbStack) answers UNSUPPORTED
 * through `requireCapability`. On QEMU a disk is added or removed whether the VM runs
 * (hot-plug) or not, and the change survives a restart.
 */
import { requireCapability, type Backend, type DiskCapable, type DiskInfo } from '../backend.js';
import type { OperationContext } from '../context.js';
import { diskSchema, parseOrThrow, parseVmName, type DiskSpec } from '../schema.js';
import { backendOf } from './vm.js';
import { listStandaloneDisks, type StandaloneDiskInfo } from './standaloneDisk.js';

export type { DiskInfo } from '../backend.js';

type Ctx = Partial<OperationContext> | undefined;

/** What `addDisk` accepts: a name and a size in bytes or as `64M`, `10G`. */
export interface DiskInput {
  name: string;
  size: number | string;
}

/** Validates a disk (name, size); throws VALIDATION. */
export function parseDisk(input: unknown): DiskSpec {
  return parseOrThrow(diskSchema, input, 'disk');
}

/** Validates a disk name alone; throws VALIDATION. */
export function parseDiskName(input: unknown): string {
  return parseOrThrow(diskSchema.pick({ name: true }), { name: input }, 'disk name').name;
}

async function diskBackend(vm: string, ctx: Ctx): Promise<Backend & DiskCapable> {
  return requireCapability(await backendOf(vm, ctx), 'disks');
}

/**
 * Creates disk `disk.name` of `disk.size` and attaches it to VM `vm` (hot-plugged when it
 * runs, at the next start otherwise). Throws VALIDATION before anything runs,
 * ALREADY_EXISTS for a taken name, CONFLICT when the VM has snapshots, UNSUPPORTED on OrbStack.
 */
export async function addDisk(vm: string, disk: DiskInput, ctx?: Ctx): Promise<DiskInfo> {
  parseVmName(vm);
  const parsed = parseDisk(disk);
  return (await diskBackend(vm, ctx)).diskAdd(vm, parsed);
}

/**
 * Detaches (the guest releases it first when the VM runs) and deletes disk `diskName` of
 * VM `vm`. Idempotent: a disk the VM does not have is `removed: false`; a missing VM is
 * NOT_FOUND. CONFLICT when the VM has snapshots; TIMEOUT when the guest never lets go.
 */
export async function removeDisk(vm: string, diskName: string, ctx?: Ctx): Promise<{ removed: boolean }> {
  parseVmName(vm);
  const name = parseDiskName(diskName);
  return (await diskBackend(vm, ctx)).diskRemove(vm, name);
}

/** The VM's extra disks, with whether each is plugged into the running VM. */
export async function listDisks(vm: string, ctx?: Ctx): Promise<DiskInfo[]>;
/** Without a VM: every standalone disk (see standaloneDisk.ts). */
export async function listDisks(ctx?: Ctx): Promise<StandaloneDiskInfo[]>;
export async function listDisks(vmOrCtx?: string | Ctx, ctx?: Ctx): Promise<DiskInfo[] | StandaloneDiskInfo[]> {
  if (typeof vmOrCtx !== 'string') return listStandaloneDisks(vmOrCtx);
  parseVmName(vmOrCtx);
  return (await diskBackend(vmOrCtx, ctx)).diskList(vmOrCtx);
}
