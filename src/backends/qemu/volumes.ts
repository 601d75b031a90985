/**
 * Standalone disks of the QEMU backend: qcow2 files under `<stateDir>/disks/<name>/` that
 * outlive the VMs they are attached to. Records and the lock order are described in
 * volumeStore.ts; hot-plug and hot-unplug reuse the extra disks' QMP steps (disks.ts), and
 * a VM's record lists its standalone disks so every launch attaches them (layout.ts).
 *
 * Snapshots: `savevm` writes every read-write disk, so attaching or detaching a disk of a
 * VM with snapshots is CONFLICT, as for extra disks.
 */
import { rm, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { StandaloneDiskInfo, VolumeCapable } from '../../backend.js';
import { isLocalVmError, LocalVmError } from '../../errors.js';
import { exists } from '../../host/fs.js';
import { withLock } from '../../host/lock.js';
import { mkdirPrivate } from '../../host/privateDir.js';
import { parseQemuImgInfo } from '../../parsers.js';
import { runChecked } from '../../runner.js';
import { attachedDisk, liveSnapshots, offlineSnapshots, refuseWithSnapshots, unplug } from './disks.js';
import type { QemuHost } from './host.js';
import type { QmpClient } from './qmp.js';
import { qemuImg } from './qemuImg.js';
import { writeRecord } from './state.js';
import type { VmAccess } from './vmAccess.js';
import {
  attachRefusal,
  diskDir,
  diskImagePath,
  diskLockPath,
  listDiskNames,
  liveAttachments,
  readDiskRecord,
  volumeId,
  volumePlugCommands,
  withVolume,
  writeDiskRecord,
  claimHolds,
  vmRecordOf,
  type DiskRecord,
} from './volumeStore.js';

const QUICK_TIMEOUT_MS = 30_000;
const IMG_TIMEOUT_MS = 120_000;

export interface VolumeOps extends VolumeCapable {
  /**
   * Drops the claims a deleted VM left on standalone disks. Never deletes a disk. Called
   * after the VM's lock is released (lock order: a disk's lock is never taken under it).
   */
  releaseVm(vm: string): Promise<void>;
}

export function createVolumeOps(host: QemuHost, access: VmAccess, unplugTimeoutMs = 10_000): VolumeOps {
  const { config, runner } = host;
  const stateDir = config.stateDir;
  const withDiskLock = <T>(name: string, what: string, fn: () => Promise<T>) =>
    withLock(diskLockPath(stateDir, name), { timeoutMs: 120_000, what }, fn);

  const notFound = (name: string) =>
    new LocalVmError('NOT_FOUND', `no standalone disk named ${name}`, {
      hint: 'list them with localvm disk list, or create it (localvm disk create NAME SIZE)',
      details: { disk: name },
    });

  async function requireDisk(name: string): Promise<DiskRecord> {
    const record = await readDiskRecord(stateDir, name);
    if (!record) throw notFound(name);
    return record;
  }

  async function toInfo(record: DiskRecord): Promise<StandaloneDiskInfo> {
    const live = await liveAttachments(stateDir, config.runDir, record);
    const allocatedBytes = await stat(record.path).then(
      (s) => s.blocks * 512,
      () => 0,
    );
    return {
      name: record.name,
      sizeBytes: record.sizeBytes,
      allocatedBytes,
      format: record.format,
      path: record.path,
      createdAt: record.createdAt,
      ...(record.from ? { from: record.from } : {}),
      attachedTo: live.map((a) => ({ vm: a.vm, readonly: a.readonly })),
    };
  }

  async function imageInfo(path: string) {
    const r = await runChecked(runner, qemuImg.info(path), { timeoutMs: QUICK_TIMEOUT_MS });
    return parseQemuImgInfo(r.stdout);
  }

  async function plug(qmp: QmpClient, vm: string, disk: string, path: string, readonly: boolean): Promise<void> {
    if (attachedDisk(await qmp.execute('query-block', undefined, QUICK_TIMEOUT_MS), path)) return;
    let added = false;
    try {
      for (const call of volumePlugCommands(disk, path, readonly)) {
        await qmp.execute(call.command, call.args, QUICK_TIMEOUT_MS);
        if (call.command === 'blockdev-add') added = true;
      }
    } catch (error) {
      if (added) {
        await qmp
          .execute('blockdev-del', { 'node-name': volumeId(disk) }, QUICK_TIMEOUT_MS)
          .catch((e: unknown) => host.log(`${vm}: rollback blockdev-del failed: ${(e as Error).message}`));
      }
      throw error;
    }
  }

  return {
    async volumeCreate(name, size, options = {}) {
      return withDiskLock(name, 'disk create', async () => {
        if ((await readDiskRecord(stateDir, name)) || (await exists(diskDir(stateDir, name)))) {
          throw new LocalVmError('ALREADY_EXISTS', `a standalone disk named ${name} exists`, {
            hint: `delete it first (localvm disk delete ${name}) or choose another name`,
            details: { disk: name },
          });
        }
        const from = options.from === undefined ? undefined : resolve(options.from);
        const source = from === undefined ? undefined : await imageInfo(from);
        if (source?.virtualSize !== undefined && source.virtualSize > size) {
          throw new LocalVmError('VALIDATION', `image ${from} (${source.virtualSize} bytes) is larger than ${size}`, {
            issues: [{ property: 'size', reason: `must be at least ${source.virtualSize} (the image's size)` }],
          });
        }
        const path = diskImagePath(stateDir, name);
        await mkdirPrivate(diskDir(stateDir, name));
        try {
          if (from !== undefined && source) {
            const convert = qemuImg.convert({ src: from, dst: path, srcFormat: source.format, dstFormat: 'qcow2' });
            await runChecked(runner, convert, { timeoutMs: IMG_TIMEOUT_MS });
            if ((source.virtualSize ?? 0) < size) {
              await runChecked(runner, qemuImg.resize({ path, size, format: 'qcow2' }), { timeoutMs: IMG_TIMEOUT_MS });
            }
          } else {
            await runChecked(runner, qemuImg.create({ path, format: 'qcow2', size }), { timeoutMs: IMG_TIMEOUT_MS });
          }
          // The record last: a directory without one is a create that did not finish.
          const record: DiskRecord = {
            version: 1,
            name,
            sizeBytes: size,
            format: 'qcow2',
            createdAt: new Date().toISOString(),
            ...(from ? { from } : {}),
            path,
            attachments: [],
          };
          await writeDiskRecord(stateDir, record);
          return await toInfo(record);
        } catch (error) {
          await rm(diskDir(stateDir, name), { recursive: true, force: true });
          throw error;
        }
      });
    },

    async volumeList() {
      const names = await listDiskNames(stateDir);
      const records = await Promise.all(names.map((n) => readDiskRecord(stateDir, n).catch(() => undefined)));
      return Promise.all(records.filter((r): r is DiskRecord => r !== undefined).map(toInfo));
    },

    async volumeInfo(name) {
      return toInfo(await requireDisk(name));
    },

    async volumeAttach(vm, disk, options = {}) {
      const readonly = Boolean(options.readonly);
      return withDiskLock(disk, 'disk attach', async () => {
        const rec = await requireDisk(disk);
        const live = await liveAttachments(stateDir, config.runDir, rec);
        await access.lifecycle(vm, 'disk attach', async () => {
          const { record, running } = await access.load(vm);
          const mine = (record.attachedDisks ?? []).find((d) => d.disk === disk);
          if (mine && live.some((a) => a.vm === vm)) {
            if (mine.readonly === readonly) return;
            throw new LocalVmError(
              'CONFLICT',
              `disk ${disk} is attached to VM ${vm} ${mine.readonly ? 'read-only' : 'read-write'}`,
              { vm, hint: `detach it first (localvm disk detach ${vm} ${disk})`, details: { disk } },
            );
          }
          const refusal = attachRefusal(live, vm, readonly);
          if (refusal) {
            throw new LocalVmError('CONFLICT', `disk ${disk} cannot be attached to VM ${vm}: ${refusal}`, {
              vm,
              hint: 'a disk is attached read-write to one VM at a time; read-only attachments (--readonly) share',
              details: { disk, attachedTo: live.map((a) => a.vm) },
            });
          }
          const claim = { vm, readonly, instance: record.createdAt, attachedAt: new Date().toISOString() };
          const nextDisk: DiskRecord = { ...rec, attachments: [...live.filter((a) => a.vm !== vm), claim] };
          const nextVm = withVolume(record, disk, rec.path, readonly);
          // The disk's claim first, then the VM's record: see volumeStore.ts on crash order.
          const write = async () => {
            await writeDiskRecord(stateDir, nextDisk);
            await writeRecord(nextVm);
          };
          try {
            if (running) {
              await access.qmpSession(vm, record.paths, QUICK_TIMEOUT_MS, async (qmp) => {
                refuseWithSnapshots(vm, 'add', await liveSnapshots(qmp, record));
                await write();
                await plug(qmp, vm, disk, rec.path, readonly);
              });
            } else {
              refuseWithSnapshots(vm, 'add', await offlineSnapshots(runner, record));
              await write();
            }
          } catch (error) {
            if (!(isLocalVmError(error, 'CONFLICT') && error.details?.snapshots)) {
              await writeRecord(record).catch(() => undefined);
              await writeDiskRecord(stateDir, rec).catch(() => undefined);
            }
            throw error;
          }
        });
        return toInfo(await requireDisk(disk));
      });
    },

    async volumeDetach(vm, disk, options = {}) {
      const timeoutMs = options.timeoutMs ?? unplugTimeoutMs;
      return withDiskLock(disk, 'disk detach', async () => {
        const rec = await requireDisk(disk);
        const claimed = rec.attachments.some((a) => a.vm === vm);
        const dropClaim = () =>
          writeDiskRecord(stateDir, { ...rec, attachments: rec.attachments.filter((a) => a.vm !== vm) });
        return access.lifecycle(vm, 'disk detach', async () => {
          const { record, running } = await access.load(vm);
          const mine = (record.attachedDisks ?? []).find((d) => d.disk === disk);
          if (!mine) {
            if (claimed) await dropClaim();
            return { detached: false };
          }
          if (running) {
            await access.qmpSession(vm, record.paths, QUICK_TIMEOUT_MS + timeoutMs, async (qmp) => {
              if (!mine.readonly) refuseWithSnapshots(vm, 'remove', await liveSnapshots(qmp, record));
              await unplug(qmp, { vm, diskName: disk, path: mine.path, nodeId: volumeId(disk), timeoutMs });
            });
          } else if (!mine.readonly) {
            refuseWithSnapshots(vm, 'remove', await offlineSnapshots(runner, record));
          }
          // The VM's record first, then the disk's claim: see volumeStore.ts on crash order.
          await writeRecord(withVolume(record, disk, mine.path, undefined));
          await dropClaim();
          return { detached: true };
        });
      });
    },

    async volumeResize(disk, size) {
      return withDiskLock(disk, 'disk resize', async () => {
        const rec = await requireDisk(disk);
        if (size < rec.sizeBytes) {
          throw new LocalVmError('VALIDATION', `disk ${disk} is ${rec.sizeBytes} bytes: it can only grow`, {
            issues: [{ property: 'size', reason: `must be at least ${rec.sizeBytes} (disks are never shrunk)` }],
          });
        }
        if (size === rec.sizeBytes) return toInfo(rec);
        const live = await liveAttachments(stateDir, config.runDir, rec);
        const offline = () =>
          runChecked(runner, qemuImg.resize({ path: rec.path, size, format: 'qcow2' }), { timeoutMs: IMG_TIMEOUT_MS });
        const shared = live.filter((a) => a.readonly);
        if (shared.length > 0) {
          throw new LocalVmError(
            'CONFLICT',
            `disk ${disk} is attached read-only to ${shared.map((a) => a.vm).join(', ')}`,
            {
              hint: `a read-only disk is not resized under its readers; detach it first (localvm disk detach VM ${disk})`,
              details: { disk },
            },
          );
        }
        const writer = live[0];
        if (!writer) await offline();
        else {
          await access.lifecycle(writer.vm, 'disk resize', async () => {
            const { record, running } = await access.load(writer.vm);
            if (!running) return offline();
            await access.qmpSession(writer.vm, record.paths, QUICK_TIMEOUT_MS, async (qmp) => {
              const found = attachedDisk(await qmp.execute('query-block', undefined, QUICK_TIMEOUT_MS), rec.path);
              if (!found) throw new LocalVmError('CONFLICT', `disk ${disk} is not plugged into VM ${writer.vm}`);
              const target = found.backend ? { device: found.backend } : { 'node-name': found.nodeName };
              await qmp.execute('block_resize', { ...target, size }, QUICK_TIMEOUT_MS);
            });
          });
        }
        const next = { ...rec, sizeBytes: size };
        await writeDiskRecord(stateDir, next);
        return toInfo(next);
      });
    },

    async volumeDelete(disk) {
      return withDiskLock(disk, 'disk delete', async () => {
        const rec = await readDiskRecord(stateDir, disk);
        if (!rec) {
          // A directory without a record is a create that never finished: nothing anyone attached.
          const half = await exists(diskDir(stateDir, disk));
          if (half) await rm(diskDir(stateDir, disk), { recursive: true, force: true });
          return { deleted: half };
        }
        const live = await liveAttachments(stateDir, config.runDir, rec);
        if (live.length > 0) {
          const vms = live.map((a) => a.vm);
          throw new LocalVmError('CONFLICT', `disk ${disk} is attached to ${vms.join(', ')}`, {
            hint: `detach it first (localvm disk detach ${vms[0]} ${disk})`,
            details: { disk, attachedTo: vms },
          });
        }
        await rm(diskDir(stateDir, disk), { recursive: true, force: true });
        return { deleted: true };
      });
    },

    async releaseVm(vm) {
      // Every disk claiming the VM, not only those its last record listed: an attach may have
      // finished while the delete waited for the VM's lock.
      for (const name of await listDiskNames(stateDir)) {
        const first = await readDiskRecord(stateDir, name).catch(() => undefined);
        if (!first?.attachments.some((a) => a.vm === vm)) continue;
        await withDiskLock(name, 'release deleted VM', async () => {
          const rec = await readDiskRecord(stateDir, name);
          if (!rec) return;
          const now = await vmRecordOf(stateDir, config.runDir, vm);
          // A VM created again under the name since holds its own claims: those stay.
          const keep = rec.attachments.filter((a) => a.vm !== vm || claimHolds(a, now, name));
          if (keep.length !== rec.attachments.length) await writeDiskRecord(stateDir, { ...rec, attachments: keep });
        }).catch((e: unknown) => host.log(`${vm}: could not release disk ${name}: ${(e as Error).message}`));
      }
    },
  };
}
