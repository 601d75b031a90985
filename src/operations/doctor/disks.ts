/**
 * What doctor checks about standalone disks: that `disk.json` and the VM records agree on
 * who has which disk attached (see volumeStore.ts for why a crash can only leave a stale
 * claim behind, and the other mismatches mean a hand edit or a disk removed out of band),
 * and that no disk directory is left without its record by an interrupted create.
 *
 * Facts (read-only), findings (pure) and fixes live together here because the fixes take
 * the disk's lock before the VM's lifecycle lock, the order every disk operation uses, and
 * so run apart from the per-VM fixes of fix.ts.
 */
import { rm } from 'node:fs/promises';
import { withLock } from '../../host/lock.js';
import { exists } from '../../host/fs.js';
import type { LocalVmConfig } from '../../config.js';
import { listVmNames, readRecord, vmPaths, writeRecord, type VmRecord } from '../../backends/qemu/state.js';
import {
  attachRefusal,
  claimHolds,
  diskDir,
  diskLockPath,
  listDiskNames,
  readDiskRecord,
  writeDiskRecord,
  type DiskRecord,
} from '../../backends/qemu/volumeStore.js';
import type { DoctorAction, DoctorFinding, Finding } from './types.js';

export interface DiskFacts {
  /** Each disk directory and its record (undefined: none, or unreadable). */
  disks: { name: string; dir: string; record?: DiskRecord | undefined }[];
  /** The VM records (VMs without a readable record are doctor's other findings). */
  vms: { name: string; record: VmRecord }[];
}

/**
 * Reads every disk record and (unless the caller has them, as doctor's other facts do) every
 * VM record; never writes.
 */
export async function gatherDisks(
  config: LocalVmConfig,
  known?: readonly { name: string; record?: VmRecord | undefined }[],
): Promise<DiskFacts> {
  const [diskNames, vmNames] = await Promise.all([
    listDiskNames(config.stateDir),
    known ? [] : listVmNames(config.stateDir),
  ]);
  const disks = await Promise.all(
    diskNames.map(async (name) => ({
      name,
      dir: diskDir(config.stateDir, name),
      record: await readDiskRecord(config.stateDir, name).catch(() => undefined),
    })),
  );
  const vms =
    known ??
    (await Promise.all(
      vmNames.map(async (name) => ({
        name,
        record: await readRecord(vmPaths(config.stateDir, config.runDir, name).record).catch(() => undefined),
      })),
    ));
  return {
    disks,
    vms: vms.flatMap((v) => (v.record ? [{ name: v.name, record: v.record }] : [])),
  };
}

const base = { severity: 'warning' as const, fixable: true, needsForce: false };

/** The findings about standalone disks in `facts`. Pure. */
export function classifyDisks(facts: DiskFacts): Finding[] {
  const out: Finding[] = [];
  const vms = new Map(facts.vms.map((v) => [v.name, v.record]));
  const disks = new Map(facts.disks.map((d) => [d.name, d]));
  for (const d of facts.disks) {
    if (!d.record) {
      out.push({
        ...base,
        code: 'DISK_HALF_CREATED',
        path: d.dir,
        seen: `disk directory ${d.dir} has no readable disk.json (a create that did not finish)`,
        fix: 'remove the directory (no VM can have attached a disk that was never created)',
        action: { kind: 'remove-disk-dir', disk: d.name },
      });
      continue;
    }
    for (const a of d.record.attachments) {
      if (claimHolds(a, vms.get(a.vm), d.name)) continue;
      out.push({
        ...base,
        code: 'DISK_CLAIM_STALE',
        vm: a.vm,
        path: d.record.path,
        seen: `disk ${d.name} records an attachment to VM ${a.vm} that ${vms.has(a.vm) ? 'does not list it' : 'is gone'}`,
        fix: 'drop the attachment from disk.json (the VM does not use the disk)',
        action: { kind: 'drop-disk-claim', disk: d.name, vm: a.vm },
      });
    }
  }
  for (const [vm, record] of vms) {
    for (const att of record.attachedDisks ?? []) {
      const disk = disks.get(att.disk)?.record;
      if (!disk) {
        out.push({
          ...base,
          severity: 'error',
          code: 'DISK_MISSING',
          vm,
          path: att.path,
          seen: `VM ${vm} lists standalone disk ${att.disk}, which does not exist`,
          fix: 'remove the disk from the VM record (its next start would fail)',
          action: { kind: 'drop-vm-disk', disk: att.disk },
        });
        continue;
      }
      if (disk.attachments.some((a) => a.vm === vm && a.instance === record.createdAt)) continue;
      const holders = disk.attachments.filter((a) => claimHolds(a, vms.get(a.vm), disk.name));
      const refusal = attachRefusal(holders, vm, att.readonly);
      out.push({
        ...base,
        severity: 'error',
        code: 'DISK_ATTACHMENT_UNRECORDED',
        vm,
        path: disk.path,
        seen: `VM ${vm} lists disk ${att.disk}, but disk.json does not record the attachment`,
        ...(refusal
          ? {
              fix: `detach it by hand (localvm disk detach ${vm} ${att.disk}): ${refusal}`,
              fixable: false,
            }
          : {
              fix: 'record the attachment in disk.json',
              action: { kind: 'claim-disk', disk: att.disk, vm } satisfies DoctorAction,
            }),
      });
    }
  }
  return out;
}

export const isDiskFinding = (f: Finding) => f.code.startsWith('DISK_');

/** One disk fix, on the records as they are now (the caller holds the disk lock, then the VM lock). */
async function act(config: LocalVmConfig, f: Finding): Promise<string> {
  const action = f.action;
  if (!action) return 'nothing to do';
  const still = classifyDisks(await gatherDisks(config)).some(
    (g) => g.code === f.code && g.vm === f.vm && g.path === f.path,
  );
  if (!still) return 'no longer seen under the lock';
  switch (action.kind) {
    case 'remove-disk-dir':
      await rm(diskDir(config.stateDir, action.disk), { recursive: true, force: true });
      return `removed ${diskDir(config.stateDir, action.disk)}`;
    case 'drop-disk-claim': {
      const rec = await readDiskRecord(config.stateDir, action.disk);
      if (!rec) return 'the disk is gone';
      await writeDiskRecord(config.stateDir, {
        ...rec,
        attachments: rec.attachments.filter((a) => a.vm !== action.vm),
      });
      return `dropped the attachment to ${action.vm} from disk ${action.disk}`;
    }
    case 'drop-vm-disk': {
      const path = vmPaths(config.stateDir, config.runDir, f.vm ?? '').record;
      const r = await readRecord(path);
      if (!r) return 'the VM is gone';
      await writeRecord({ ...r, attachedDisks: (r.attachedDisks ?? []).filter((d) => d.disk !== action.disk) });
      return `removed disk ${action.disk} from VM ${f.vm ?? ''}`;
    }
    case 'claim-disk': {
      const rec = await readDiskRecord(config.stateDir, action.disk);
      const r = await readRecord(vmPaths(config.stateDir, config.runDir, action.vm).record);
      const att = r?.attachedDisks?.find((d) => d.disk === action.disk);
      if (!rec || !r || !att) return 'no longer seen';
      const claim = {
        vm: action.vm,
        readonly: att.readonly,
        instance: r.createdAt,
        attachedAt: new Date().toISOString(),
      };
      const others = rec.attachments.filter((a) => a.vm !== action.vm);
      await writeDiskRecord(config.stateDir, { ...rec, attachments: [...others, claim] });
      return `recorded the attachment of disk ${action.disk} to ${action.vm}`;
    }
    default:
      return `not a disk fix: ${action.kind}`;
  }
}

/** Repairs disk findings, each under its disk's lock and then its VM's lifecycle lock. */
export async function fixDisks(
  config: LocalVmConfig,
  vmLock: (vm: string) => string,
  findings: Finding[],
  lockTimeoutMs: number,
): Promise<DoctorFinding[]> {
  const out: DoctorFinding[] = [];
  for (const f of findings) {
    const action = f.action;
    if (!f.fixable || !action || !('disk' in action)) {
      out.push({ ...f, status: 'open' });
      continue;
    }
    const lock = { timeoutMs: lockTimeoutMs, what: 'doctor' };
    try {
      const vm = f.vm;
      const outcome = await withLock(diskLockPath(config.stateDir, action.disk), lock, async () =>
        vm && (await exists(vmPaths(config.stateDir, config.runDir, vm).dir))
          ? withLock(vmLock(vm), lock, () => act(config, f))
          : act(config, f),
      );
      out.push({ ...f, status: 'fixed', outcome });
    } catch (error) {
      out.push({ ...f, status: 'failed', outcome: (error as Error).message });
    }
  }
  return out;
}
