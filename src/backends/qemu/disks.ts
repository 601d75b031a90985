/**
 * Extra disks of QEMU VMs, added and removed while the VM runs (hot-plug) or not. The
 * record (`vm.json`) is the truth: `launchFor` attaches `record.disks` at every start, so a
 * stopped VM only needs its record and file changed. A running one also gets the change
 * over QMP: `blockdev-add` + `device_add virtio-blk-pci` to plug, and `device_del`, the
 * guest's DEVICE_DELETED, then `blockdev-del` to unplug, so the file goes only after the
 * guest let go of the device.
 *
 * Disks and snapshots do not mix: `savevm` snapshots every writable qcow2, and QEMU 7.2's
 * `loadvm` refuses a snapshot that any attached disk lacks ("Snapshot 'x' does not exist in
 * one or more devices", and the guest is left paused). A disk added after a snapshot would
 * make that snapshot unrestorable, and removing a disk a snapshot holds loses part of it,
 * so both are CONFLICT while the VM has snapshots.
 *
 * The builders and parsers at the top are pure; `createDiskOps` does the I/O.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { DiskCapable, DiskInfo, Snapshot } from '../../backend.js';
import { qemuImg } from './qemuImg.js';
import { isLocalVmError, LocalVmError } from '../../errors.js';
import { runChecked, type CommandRunner } from '../../runner.js';
import { diskSchema, parseOrThrow, specFingerprint, type DiskSpec, type VmSpec } from '../../schema.js';
import type { QmpClient } from './qmp.js';
import { mergeSnapshots, readDiskSnapshots, snapshotDisks, snapshotsFromBlockNodes } from './snapshot.js';
import type { VmRecord } from './state.js';
import type { VmAccess } from './vmAccess.js';

/** The block node id / `-drive` id of disk `name`, as `diskLayout` names it. Pure. */
export const diskId = (diskName: string) => `disk-${diskName}`;

/** The guest device id of a hot-plugged disk. Pure. */
export const deviceId = (diskName: string) => `dev-${diskId(diskName)}`;

/** The image file of disk `name` in the VM directory `dir`, as `diskLayout` places it. Pure. */
export const diskPath = (dir: string, diskName: string) => join(dir, `${diskId(diskName)}.qcow2`);

export interface QmpCall {
  command: string;
  args: Record<string, unknown>;
}

/** The QMP commands that plug the qcow2 `path` into a running VM as disk `diskName`. Pure. */
export function hotplugCommands(diskName: string, path: string): QmpCall[] {
  const id = diskId(diskName);
  return [
    { command: 'blockdev-add', args: { driver: 'qcow2', 'node-name': id, file: { driver: 'file', filename: path } } },
    { command: 'device_add', args: { driver: 'virtio-blk-pci', drive: id, id: deviceId(diskName) } },
  ];
}

const queryBlockSchema = z.array(
  z.looseObject({
    device: z.string(),
    qdev: z.string().optional(),
    inserted: z.looseObject({ file: z.string(), 'node-name': z.string().optional() }).optional(),
  }),
);

/** Where a disk is plugged in: the guest device to `device_del` and the block node below it. */
export interface AttachedDisk {
  /**
   * The device's QOM path (`/machine/peripheral/dev-disk-x` when hot-plugged,
   * `/machine/peripheral-anon/device[N]` when attached at launch, which gives it no id).
   */
  qomPath: string;
  /** The block backend name: `disk-x` for a `-drive`, empty for a `blockdev-add` node. */
  backend: string;
  nodeName?: string | undefined;
}

/**
 * The devices holding `path` in a QMP `query-block` reply. virtio-blk reports its inner
 * `virtio-backend`; the hot-pluggable device is its parent PCI proxy. Throws PROTOCOL on an
 * unexpected shape. Pure.
 */
export function attachedDisk(reply: unknown, path: string): AttachedDisk | undefined {
  const parsed = queryBlockSchema.safeParse(reply);
  if (!parsed.success) {
    throw new LocalVmError('PROTOCOL', `unexpected query-block reply: ${parsed.error.message}`, {
      cause: parsed.error,
    });
  }
  const entry = parsed.data.find((b) => b.inserted?.file === path && b.qdev);
  if (!entry?.qdev) return undefined;
  return {
    qomPath: entry.qdev.replace(/\/virtio-backend$/, ''),
    backend: entry.device,
    nodeName: entry.inserted?.['node-name'],
  };
}

/** True when a DEVICE_DELETED event is about the device at `qomPath`. Pure. */
export function isDeviceDeleted(event: { event: string; data?: unknown }, qomPath: string): boolean {
  if (event.event !== 'DEVICE_DELETED') return false;
  const data = (event.data ?? {}) as { path?: unknown; device?: unknown };
  return data.path === qomPath || data.device === qomPath;
}

/** The VM's extra disks from its record, sized from its spec. Pure. */
export function recordedDisks(record: VmRecord): { name: string; path: string; sizeBytes: number }[] {
  return record.disks
    .filter((d) => d.id.startsWith('disk-'))
    .map((d) => {
      const name = d.id.slice('disk-'.length);
      return { name, path: d.path, sizeBytes: record.spec.disks.find((s) => s.name === name)?.size ?? 0 };
    });
}

/**
 * `record` with `disks` as its extra disks, in both `disks` and `spec.disks`, and the
 * fingerprint of the new spec, so re-declaring the VM with this disk list adopts it. Pure.
 */
export function withDisks(record: VmRecord, specDisks: DiskSpec[], dir: string): VmRecord {
  const spec: VmSpec = { ...record.spec, disks: specDisks };
  const keep = record.disks.filter((d) => !d.id.startsWith('disk-'));
  const disks = [
    ...keep,
    ...specDisks.map((d) => ({ id: diskId(d.name), path: diskPath(dir, d.name), format: 'qcow2' as const })),
  ];
  return { ...record, spec, disks, fingerprint: specFingerprint(spec) };
}

const QUICK_TIMEOUT_MS = 30_000;

export interface DiskDeps extends VmAccess {
  /** Writes `vm.json` atomically (default: state.writeRecord). */
  writeRecord(record: VmRecord): Promise<void>;
  /** Removes a disk file; missing is fine (default: fs.rm with force). */
  removeFile?: ((path: string) => Promise<void>) | undefined;
  /** How long the guest gets to release an unplugged disk (default 10 s). */
  unplugTimeoutMs?: number | undefined;
}

/** The snapshots of a stopped VM, read from its disk files. */
export const offlineSnapshots = async (runner: CommandRunner, record: VmRecord): Promise<Snapshot[]> =>
  mergeSnapshots(await readDiskSnapshots(runner, record));

/** The snapshots of a running VM, from its block nodes. */
export async function liveSnapshots(qmp: QmpClient, record: VmRecord): Promise<Snapshot[]> {
  const nodes = await qmp.execute('query-named-block-nodes', undefined, QUICK_TIMEOUT_MS);
  return mergeSnapshots(snapshotsFromBlockNodes(nodes, snapshotDisks(record)));
}

/** CONFLICT when the VM has snapshots: a disk added or removed would make them unrestorable. */
export function refuseWithSnapshots(name: string, what: 'add' | 'remove', snapshots: Snapshot[]): void {
  if (snapshots.length === 0) return;
  const names = snapshots.map((s) => s.name);
  throw new LocalVmError(
    'CONFLICT',
    `VM ${name} has snapshots (${names.join(', ')}); a disk cannot be ${what === 'add' ? 'added' : 'removed'} while it has any`,
    {
      vm: name,
      hint:
        what === 'add'
          ? `QEMU cannot restore a snapshot that a newly added disk lacks; delete them first (localvm snapshot delete ${name} <snapshot>)`
          : `the snapshots hold this disk's contents too; delete them first (localvm snapshot delete ${name} <snapshot>)`,
      details: { snapshots: names },
    },
  );
}

async function guestRunning(qmp: QmpClient, name: string): Promise<void> {
  const status = (await qmp.execute('query-status', undefined, QUICK_TIMEOUT_MS)) as {
    running?: unknown;
    status?: unknown;
  };
  if (status.running === false) {
    // A paused guest never answers the ACPI unplug request.
    throw new LocalVmError(
      'CONFLICT',
      `VM ${name} is paused (${String(status.status)}); its disks cannot be unplugged`,
      {
        vm: name,
        hint: `resume it (localvm qmp ${name} cont) or stop it first`,
      },
    );
  }
}

/**
 * Unplugs the device holding `path`, waits (up to `timeoutMs`) for the guest to release it
 * (TIMEOUT otherwise), then drops the block node `nodeId` if `blockdev-add` made it.
 */
export async function unplug(
  qmp: QmpClient,
  o: { vm: string; diskName: string; path: string; nodeId: string; timeoutMs: number },
): Promise<void> {
  const { vm: name, diskName, path } = o;
  const attached = attachedDisk(await qmp.execute('query-block', undefined, QUICK_TIMEOUT_MS), path);
  if (attached) {
    await guestRunning(qmp, name);
    let gone = false;
    try {
      await qmp.execute('device_del', { id: attached.qomPath }, QUICK_TIMEOUT_MS);
    } catch (error) {
      if (!isLocalVmError(error, 'COMMAND_FAILED')) throw error;
      // An earlier remove cut short by its deadline left the unplug running. Either the guest
      // is still releasing the device (keep waiting), or it finished between our query-block
      // and this device_del (DeviceNotFound: already released, nothing to wait for).
      gone = error.details?.class === 'DeviceNotFound';
      if (!gone && !/in the process of unplug/i.test(error.message)) throw error;
    }
    try {
      if (!gone) await qmp.waitEvent('DEVICE_DELETED', o.timeoutMs, (e) => isDeviceDeleted(e, attached.qomPath));
    } catch (error) {
      if (!isLocalVmError(error, 'TIMEOUT')) throw error;
      throw new LocalVmError('TIMEOUT', `VM ${name}: the guest did not release disk ${diskName} in ${o.timeoutMs} ms`, {
        vm: name,
        cause: error,
        hint: 'the guest must support ACPI PCI hot-unplug (and not be booted with pci=noacpi); retry, or stop the VM and retry then',
        details: { disk: diskName, device: attached.qomPath },
      });
    }
  }
  // A `-drive` disk (attached at launch) goes with its device; a `blockdev-add` node stays until deleted.
  const nodes = (await qmp.execute('query-named-block-nodes', undefined, QUICK_TIMEOUT_MS)) as {
    'node-name'?: unknown;
  }[];
  if (Array.isArray(nodes) && nodes.some((n) => n['node-name'] === o.nodeId)) {
    await qmp.execute('blockdev-del', { 'node-name': o.nodeId }, QUICK_TIMEOUT_MS);
  }
}

/** The disk methods of the QEMU backend. */
export function createDiskOps(deps: DiskDeps): DiskCapable {
  const { runner } = deps;
  const removeFile = deps.removeFile ?? ((path: string) => rm(path, { force: true }));
  const unplugTimeoutMs = deps.unplugTimeoutMs ?? 10_000;

  return {
    async diskAdd(name, input) {
      const disk = parseOrThrow(diskSchema, input, 'disk');
      return deps.lifecycle(name, 'disk add', async () => {
        const { record, running } = await deps.load(name);
        const dir = record.paths.dir;
        if (
          recordedDisks(record).some((d) => d.name === disk.name) ||
          record.spec.disks.some((d) => d.name === disk.name)
        ) {
          throw new LocalVmError('ALREADY_EXISTS', `VM ${name} already has a disk named ${disk.name}`, {
            vm: name,
            hint: `remove it first (localvm disk remove ${name} ${disk.name}) or choose another name`,
            details: { disk: disk.name },
          });
        }
        const path = diskPath(dir, disk.name);
        const next = withDisks(record, [...record.spec.disks, disk], dir);
        const plug = async (qmp: QmpClient) => {
          refuseWithSnapshots(name, 'add', await liveSnapshots(qmp, record));
          // Created under the QMP session, after the snapshot check, so a refused add writes nothing.
          await runChecked(runner, qemuImg.create({ path, format: 'qcow2', size: disk.size }), { timeoutMs: 60_000 });
          await deps.writeRecord(next);
          let added = false;
          try {
            const started = performance.now();
            for (const call of hotplugCommands(disk.name, path)) {
              await qmp.execute(call.command, call.args, QUICK_TIMEOUT_MS);
              if (call.command === 'blockdev-add') added = true;
            }
            deps.log?.(`${name}: hot-plugged disk ${disk.name} in ${Math.round(performance.now() - started)} ms`);
          } catch (error) {
            if (added) {
              await qmp
                .execute('blockdev-del', { 'node-name': diskId(disk.name) }, QUICK_TIMEOUT_MS)
                .catch((e: unknown) => deps.log?.(`${name}: rollback blockdev-del failed: ${(e as Error).message}`));
            }
            throw error;
          }
        };
        try {
          if (running) {
            await deps.qmpSession(name, record.paths, QUICK_TIMEOUT_MS, plug);
          } else {
            refuseWithSnapshots(name, 'add', await offlineSnapshots(runner, record));
            await runChecked(runner, qemuImg.create({ path, format: 'qcow2', size: disk.size }), { timeoutMs: 60_000 });
            await deps.writeRecord(next);
          }
        } catch (error) {
          // A failed add leaves nothing: the old record back, the new file gone.
          if (!(isLocalVmError(error, 'CONFLICT') && error.details?.snapshots)) {
            await deps.writeRecord(record).catch(() => undefined);
            await removeFile(path).catch(() => undefined);
          }
          throw error;
        }
        return { name: disk.name, sizeBytes: disk.size, path, attached: running };
      });
    },

    async diskRemove(name, diskName) {
      const { name: checked } = parseOrThrow(diskSchema.pick({ name: true }), { name: diskName }, 'disk name');
      return deps.lifecycle(name, 'disk remove', async () => {
        const { record, running } = await deps.load(name);
        const found = recordedDisks(record).find((d) => d.name === checked);
        if (!found && !record.spec.disks.some((d) => d.name === checked)) return { removed: false };
        const path = found?.path ?? diskPath(record.paths.dir, checked);
        if (running) {
          await deps.qmpSession(name, record.paths, QUICK_TIMEOUT_MS + unplugTimeoutMs, async (qmp) => {
            refuseWithSnapshots(name, 'remove', await liveSnapshots(qmp, record));
            await unplug(qmp, {
              vm: name,
              diskName: checked,
              path,
              nodeId: diskId(checked),
              timeoutMs: unplugTimeoutMs,
            });
          });
        } else {
          refuseWithSnapshots(name, 'remove', await offlineSnapshots(runner, record));
        }
        // The record first: a crash in between leaves a stray file, never a record naming a missing one.
        await deps.writeRecord(
          withDisks(
            record,
            record.spec.disks.filter((d) => d.name !== checked),
            record.paths.dir,
          ),
        );
        await removeFile(path);
        return { removed: true };
      });
    },

    async diskList(name) {
      const { record, running } = await deps.load(name);
      const disks = recordedDisks(record);
      if (!running || disks.length === 0) return disks.map((d) => ({ ...d, attached: false }));
      const reply = await deps.qmpSession(name, record.paths, QUICK_TIMEOUT_MS, (qmp) =>
        qmp.execute('query-block', undefined, QUICK_TIMEOUT_MS),
      );
      return disks.map((d): DiskInfo => ({ ...d, attached: attachedDisk(reply, d.path) !== undefined }));
    },
  };
}
