/**
 * Snapshot operations, whatever the backend: names are validated here, at the boundary,
 * and a backend without snapshots (OrbStack) answers UNSUPPORTED through
 * `requireCapability`. On QEMU a snapshot holds RAM, devices and disks; creating and
 * restoring one needs the VM running, listing and deleting work either way.
 */
import { z } from 'zod';
import { requireCapability, type Backend, type Snapshot, type SnapshotCapable } from '../backend.js';
import type { OperationContext } from '../context.js';
import { isLocalVmError } from '../errors.js';
import { parseOrThrow, parseVmName } from '../schema.js';
import { backendOf } from './vm.js';

export type { Snapshot } from '../backend.js';

type Ctx = Partial<OperationContext> | undefined;

/** Snapshot names: short, lower-case, and nothing a monitor or shell could read as syntax. */
export const snapshotNameSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'must be 1-63 characters of a-z, 0-9, ".", "_", "-", starting with a-z or 0-9');

/** Validates a snapshot name; throws VALIDATION. */
export function parseSnapshotName(input: unknown): string {
  // Wrapped so the issue names its property (`snapshot`) rather than the root.
  return parseOrThrow(z.object({ snapshot: snapshotNameSchema }), { snapshot: input }, 'snapshot name').snapshot;
}

/** Both names validated before any backend is asked anything. */
async function snapshotBackend(
  name: string,
  snapshot: string | undefined,
  ctx: Ctx,
): Promise<Backend & SnapshotCapable> {
  parseVmName(name);
  if (snapshot !== undefined) parseSnapshotName(snapshot);
  return requireCapability(await backendOf(name, ctx), 'snapshots');
}

/**
 * Snapshots the running VM `name` as `snapshot` and returns it as listed. Throws
 * ALREADY_EXISTS for a taken name, CONFLICT when the VM is stopped, UNSUPPORTED on OrbStack.
 */
export async function snapshotVm(name: string, snapshot: string, ctx?: Ctx): Promise<Snapshot> {
  const backend = await snapshotBackend(name, snapshot, ctx);
  await backend.snapshotCreate(name, snapshot);
  const listed = (await backend.snapshotList(name)).find((s) => s.name === snapshot);
  return listed ?? { name: snapshot };
}

/** The VM's snapshots, oldest first. */
export async function listSnapshots(name: string, ctx?: Ctx): Promise<Snapshot[]> {
  return (await snapshotBackend(name, undefined, ctx)).snapshotList(name);
}

/**
 * Returns the running VM `name` to `snapshot` (RAM and disks). Throws NOT_FOUND for a
 * missing snapshot, CONFLICT when the VM is stopped.
 */
export async function restoreSnapshot(name: string, snapshot: string, ctx?: Ctx): Promise<void> {
  await (await snapshotBackend(name, snapshot, ctx)).snapshotRestore(name, snapshot);
}

/**
 * Deletes `snapshot` of VM `name`, running or stopped. Idempotent like deleteVm: a
 * missing snapshot is `deleted: false`; a missing VM is still NOT_FOUND.
 */
export async function deleteSnapshot(name: string, snapshot: string, ctx?: Ctx): Promise<{ deleted: boolean }> {
  const backend = await snapshotBackend(name, snapshot, ctx);
  try {
    await backend.snapshotDelete(name, snapshot);
    return { deleted: true };
  } catch (error) {
    if (isLocalVmError(error, 'NOT_FOUND') && error.details?.snapshot === snapshot) return { deleted: false };
    throw error;
  }
}
