/**
 * Standalone disks on disk: `<stateDir>/disks/<name>/disk.qcow2` and its record `disk.json`
 * (size, format, when created, what it was made from, which VMs it is attached to). The
 * pure parts (paths, the attach decision, record edits) do no I/O; the readers and the
 * atomic writer below them are thin.
 *
 * A disk's attachments are recorded twice: in `disk.json` (`attachments`) and in each VM's
 * `vm.json` (`attachedDisks`), which is what the launch reads. Attach writes the disk record
 * first and the VM record second, detach the VM record first and the disk record second, so
 * a crash in between always leaves the same kind of mismatch: a claim in `disk.json` that
 * the VM does not list. Claims are therefore checked against the VM records whenever a
 * decision depends on them (`liveAttachments`), and `doctor` reports and drops stale ones.
 *
 * Lock order: a disk's lock (`locks/disk.<name>.lock`), then the VM's lifecycle lock. A VM
 * delete holds only the VM's lock while it runs and takes each disk's lock after releasing
 * it, so the order is never reversed.
 */
import { join } from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { hostFsError, listDirNames } from '../../host/fs.js';
import type { QmpCall } from './disks.js';
import { locksDir, readRecord, readVersionedJson, vmPaths, type VmRecord } from './state.js';

export const DISK_RECORD_VERSION = 1;

/** One VM a standalone disk is attached to. */
export interface DiskAttachment {
  vm: string;
  readonly: boolean;
  /** The VM's `createdAt`: a VM deleted and created again under the same name is another VM. */
  instance: string;
  attachedAt: string;
}

/** What `disk.json` holds. */
export interface DiskRecord {
  version: number;
  name: string;
  /** Virtual size in bytes (kept current by resize). */
  sizeBytes: number;
  format: 'qcow2';
  createdAt: string;
  /** The image the disk was copied from, when it was. */
  from?: string | undefined;
  path: string;
  /** Several only when all are read-only. */
  attachments: DiskAttachment[];
}

/** How a VM record lists a standalone disk it has attached. */
export interface VmDiskAttachment {
  disk: string;
  path: string;
  readonly: boolean;
}

export const disksDir = (stateDir: string) => join(stateDir, 'disks');
export const diskDir = (stateDir: string, name: string) => join(disksDir(stateDir), name);
export const diskRecordPath = (stateDir: string, name: string) => join(diskDir(stateDir, name), 'disk.json');
export const diskImagePath = (stateDir: string, name: string) => join(diskDir(stateDir, name), 'disk.qcow2');
/** VM names cannot hold a ".", so this never collides with a VM's lock files. */
export const diskLockPath = (stateDir: string, name: string) => join(locksDir(stateDir), `disk.${name}.lock`);

/** The `-drive` id / block node name of a standalone disk in a VM (extra disks use `disk-`). Pure. */
export const volumeId = (name: string) => `vol-${name}`;
/** The guest device id of a hot-plugged standalone disk. Pure. */
export const volumeDeviceId = (name: string) => `dev-${volumeId(name)}`;

/**
 * Why `vm` may not attach a disk that already has `current` (live) attachments, or
 * undefined when it may: a read-write attachment shares with nobody, read-only ones share
 * with each other. QEMU's image locks say the same (a reader needs no writer). Pure.
 */
export function attachRefusal(current: readonly DiskAttachment[], vm: string, readonly: boolean): string | undefined {
  const others = current.filter((a) => a.vm !== vm);
  const writer = others.find((a) => !a.readonly);
  if (writer) return `it is attached read-write to VM ${writer.vm}`;
  if (!readonly && others.length > 0) return `it is attached read-only to ${others.map((a) => a.vm).join(', ')}`;
  return undefined;
}

/** True when VM record `record` is the instance `a` names and lists the disk `disk`. Pure. */
export function claimHolds(a: DiskAttachment, record: VmRecord | undefined, disk: string): boolean {
  return (
    record !== undefined && record.createdAt === a.instance && (record.attachedDisks ?? []).some((d) => d.disk === disk)
  );
}

/** The QMP commands that plug standalone disk `name` (file `path`) into a running VM. Pure. */
export function volumePlugCommands(name: string, path: string, readonly: boolean): QmpCall[] {
  const id = volumeId(name);
  return [
    {
      command: 'blockdev-add',
      args: {
        driver: 'qcow2',
        'node-name': id,
        'read-only': readonly,
        file: { driver: 'file', filename: path, 'read-only': readonly },
      },
    },
    { command: 'device_add', args: { driver: 'virtio-blk-pci', drive: id, id: volumeDeviceId(name) } },
  ];
}

/** `record` with `disk` attached (`readonly`) or, with `readonly` undefined, detached. Pure. */
export function withVolume(record: VmRecord, disk: string, path: string, readonly: boolean | undefined): VmRecord {
  const others = (record.attachedDisks ?? []).filter((d) => d.disk !== disk);
  return { ...record, attachedDisks: readonly === undefined ? others : [...others, { disk, path, readonly }] };
}

/** Reads `disk.json`; undefined when there is none. */
export async function readDiskRecord(stateDir: string, name: string): Promise<DiskRecord | undefined> {
  const record = await readVersionedJson<DiskRecord>(diskRecordPath(stateDir, name), DISK_RECORD_VERSION);
  return record && { ...record, attachments: record.attachments ?? [] };
}

/** Writes `disk.json` atomically (mode 0600); HOST_FS when the host refuses. */
export async function writeDiskRecord(stateDir: string, record: DiskRecord): Promise<void> {
  const path = diskRecordPath(stateDir, record.name);
  try {
    await writeFileAtomic(path, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
  } catch (error) {
    throw hostFsError(error, `write ${path}`, path);
  }
}

/** Names of the standalone disk directories. */
export function listDiskNames(stateDir: string): Promise<string[]> {
  return listDirNames(disksDir(stateDir));
}

/** The record of VM `vm` in this home, or undefined (missing or unreadable). */
export async function vmRecordOf(stateDir: string, runDir: string, vm: string): Promise<VmRecord | undefined> {
  return readRecord(vmPaths(stateDir, runDir, vm).record).catch(() => undefined);
}

/** The attachments of `record` that the VM records confirm (see the header on why claims are checked). */
export async function liveAttachments(stateDir: string, runDir: string, record: DiskRecord): Promise<DiskAttachment[]> {
  const checked = await Promise.all(
    record.attachments.map(async (a) => ({
      a,
      holds: claimHolds(a, await vmRecordOf(stateDir, runDir, a.vm), record.name),
    })),
  );
  return checked.filter((c) => c.holds).map((c) => c.a);
}
