/**
 * `doctor --fix`: each VM's findings are looked at again under that VM's lifecycle lock (the
 * lock every create/start/stop/delete takes), and only what is still seen then is repaired,
 * so a fix never races an operation that was under way when the report was made. Locks are
 * released through the lock protocol itself (take from the dead holder, release), sessions
 * are removed under their own lock. Fixes that may lose a user's data need `force`.
 */
import { rm, stat } from 'node:fs/promises';
import { isLocalVmError } from '../../errors.js';
import { withLock } from '../../host/lock.js';
import { privateDirExists } from '../../host/privateDir.js';
import { probeProcess } from '../../host/proc.js';
import { applySteps } from '../../backends/qemu/apply.js';
import { withDisks } from '../../backends/qemu/disks.js';
import type { QemuHost } from '../../backends/qemu/host.js';
import { STATE_DISK_BYTES } from '../../backends/qemu/layout.js';
import { killHard } from '../../backends/qemu/observe.js';
import { planDelete } from '../../backends/qemu/plan.js';
import { qemuImg } from '../../backends/qemu/qemuImg.js';
import { readRecord, removeStaleRuntime, vmPaths, writeRecord, type VmRecord } from '../../backends/qemu/state.js';
import { runChecked } from '../../runner.js';
import { processAlive, readSession, sessionFile, updateSession } from '../../vitest/session.js';
import { ASIDE_LOCK_MS, classifyHome, lifecycleLockPath } from './classify.js';
import { gatherHome } from './gather.js';
import type { DoctorAction, DoctorFinding, Finding } from './types.js';

export interface FixOptions {
  force: boolean;
  /** How long to wait for a lock another operation holds (default 10 s); then the finding is left. */
  lockTimeoutMs: number;
}

/** Findings about the same thing compare equal. Pure. */
export const findingKey = (f: Finding) => `${f.code}|${f.vm ?? ''}|${f.path ?? ''}|${f.pid ?? ''}`;

// Kill strays before anything reads the directory; delete before repairing what is deleted.
const ORDER: Record<DoctorAction['kind'], number> = {
  'kill-qemu': 0,
  'delete-vm': 1,
  'mark-crashed': 2,
  'adopt-qemu': 2,
  'repoint-tiny': 3,
  'drop-disk': 3,
  'recreate-state-disk': 3,
  'remove-runtime': 4,
  'remove-path': 5,
  'release-lock': 6,
  'remove-session': 7,
  // Fixed by doctor/disks.ts, never here (they take the disk's lock before the VM's).
  'drop-disk-claim': 8,
  'claim-disk': 8,
  'drop-vm-disk': 8,
  'remove-disk-dir': 8,
};

const rank = (f: Finding) => (f.action ? ORDER[f.action.kind] : 99);

async function current(path: string): Promise<VmRecord> {
  const record = await readRecord(path);
  if (!record) throw new Error(`${path} disappeared`);
  return record;
}

/** Runs one action for VM `vm`; returns what it did. */
async function act(host: QemuHost, vm: string | undefined, action: DoctorAction): Promise<string> {
  const config = host.config;
  const p = vm ? vmPaths(config.stateDir, config.runDir, vm) : undefined;
  const named = (): string => {
    if (!vm) throw new Error(`${action.kind} needs a VM`);
    return vm;
  };
  const record = () => current(vmPaths(config.stateDir, config.runDir, named()).record);
  switch (action.kind) {
    case 'mark-crashed': {
      const r = await record();
      await removeStaleRuntime(r.paths);
      await writeRecord({ ...r, desiredState: 'stopped', stopReason: 'crashed', pid: undefined, startedAt: undefined });
      return 'marked the VM stopped (crashed) and removed its stale sockets and pidfile';
    }
    case 'adopt-qemu': {
      const r = await record();
      await writeRecord({
        ...r,
        phase: 'ready',
        desiredState: 'running',
        stopReason: undefined,
        pid: action.pid,
        startedAt: r.startedAt ?? new Date().toISOString(),
      });
      return `recorded pid ${action.pid} as the running QEMU`;
    }
    case 'kill-qemu': {
      const proc = await probeProcess(action.pid);
      if (proc?.stat?.startTime !== action.startTime) return `pid ${action.pid} had already exited`;
      await killHard(action.qemuName, action.pid);
      // A deleted VM's sockets may live on under the run dir.
      if (
        p?.socketDir &&
        !(await readRecord(p.record).catch(() => undefined)) &&
        (await privateDirExists(p.socketDir))
      ) {
        await rm(p.socketDir, { recursive: true, force: true });
      }
      return `killed QEMU pid ${action.pid}`;
    }
    case 'remove-runtime':
      await removeStaleRuntime((await record()).paths);
      return 'removed the stale sockets and pidfile';
    case 'remove-path':
      await rm(action.path, { recursive: true, force: true });
      return `removed ${action.path}`;
    case 'delete-vm':
      await applySteps(host, named(), (await planDelete(host, named())).steps);
      return `deleted VM ${vm}`;
    case 'repoint-tiny': {
      const tiny = await host.findImage(config);
      const r = await record();
      if (!tiny || r.boot.kind !== 'kernel') throw new Error('no tiny image to point the record at');
      await writeRecord({
        ...r,
        boot: { kind: 'kernel', kernel: tiny.kernel, initrd: tiny.initrd, append: r.spec.append ?? tiny.append },
      });
      return `pointed the record at ${tiny.dir}`;
    }
    case 'drop-disk': {
      const r = await record();
      const disks = r.spec.disks.filter((d) => d.name !== action.disk);
      await writeRecord(withDisks(r, disks, r.paths.dir));
      return `removed disk ${action.disk} from the record`;
    }
    case 'recreate-state-disk':
      await runChecked(host.runner, qemuImg.create({ path: action.path, format: 'qcow2', size: STATE_DISK_BYTES }), {
        timeoutMs: 30_000,
      });
      return `created an empty state disk ${action.path}`;
    case 'release-lock':
      // Taking the lock steals it from the dead holder (lock.ts); releasing unlinks it.
      await withLock(action.path, { timeoutMs: 2_000, what: 'doctor' }, async () => undefined);
      return `released ${action.path}`;
    case 'remove-session': {
      const file = sessionFile(config.stateDir, action.id);
      const record = await readSession(file).catch(() => undefined);
      // A dead runner never comes back (pid and start time), so the check may precede the lock.
      if (record && (await processAlive(record.pid, record.startTime))) return 'its runner is alive again: kept';
      await updateSession(config.stateDir, action.id, () => undefined);
      return `removed ${file}`;
    }
    case 'drop-disk-claim':
    case 'claim-disk':
    case 'drop-vm-disk':
    case 'remove-disk-dir':
      throw new Error(`${action.kind} is fixed under the disk's lock (doctor/disks.ts)`);
  }
}

function outcomeOf(error: unknown): string {
  return isLocalVmError(error) ? `${error.code}: ${error.message}` : (error as Error).message;
}

/** Repairs `wanted` (one VM's findings) with the VM's lifecycle lock held; what is no longer seen is left alone. */
async function fixVm(host: QemuHost, vm: string, wanted: Finding[], options: FixOptions): Promise<DoctorFinding[]> {
  const lock = lifecycleLockPath(host.config.stateDir, vm);
  if (!wanted.some((f) => f.fixable && (options.force || !f.needsForce))) {
    return Promise.all(wanted.map((f) => fixOne(host, f, options, undefined, false)));
  }
  try {
    return await withLock(lock, { timeoutMs: options.lockTimeoutMs, what: 'doctor' }, async () => {
      const facts = await gatherHome(host.config, { selfHeld: [lock], only: vm });
      const still = new Set(classifyHome(facts).map(findingKey));
      const out: DoctorFinding[] = [];
      let deleted = false;
      for (const f of [...wanted].sort((a, b) => rank(a) - rank(b))) {
        out.push(await fixOne(host, f, options, still, deleted));
        deleted ||= f.action?.kind === 'delete-vm' && out.at(-1)?.status === 'fixed';
      }
      return out;
    });
  } catch (error) {
    const why = isLocalVmError(error, 'TIMEOUT') ? `the VM is busy (${outcomeOf(error)})` : outcomeOf(error);
    return wanted.map((f) => ({ ...f, status: f.fixable ? 'failed' : 'open', outcome: why }));
  }
}

async function fixOne(
  host: QemuHost,
  f: Finding,
  options: FixOptions,
  still: Set<string> | undefined,
  deleted: boolean,
): Promise<DoctorFinding> {
  if (!f.fixable || !f.action) return { ...f, status: 'open' };
  if (f.needsForce && !options.force) return { ...f, status: 'skipped', outcome: 'needs --force' };
  if (deleted) return { ...f, status: 'fixed', outcome: 'gone with the VM' };
  if (still && !still.has(findingKey(f))) return { ...f, status: 'fixed', outcome: 'no longer seen under the lock' };
  try {
    return { ...f, status: 'fixed', outcome: await act(host, f.vm, f.action) };
  } catch (error) {
    return { ...f, status: 'failed', outcome: outcomeOf(error) };
  }
}

/** A `.stale-*` lock leftover is removed only if it is still that old (a live steal lasts milliseconds). */
async function stillAside(path: string): Promise<boolean> {
  const st = await stat(path).catch(() => undefined);
  return st !== undefined && Date.now() - st.mtimeMs >= ASIDE_LOCK_MS;
}

/** Applies the fixes of `findings`: VM by VM under their locks, then locks, then sessions. */
export async function applyFixes(host: QemuHost, findings: Finding[], options: FixOptions): Promise<DoctorFinding[]> {
  const perVm = new Map<string, Finding[]>();
  const rest: Finding[] = [];
  for (const f of findings) {
    const vmScoped = f.vm !== undefined && f.code !== 'STALE_LOCK';
    if (vmScoped && f.vm) perVm.set(f.vm, [...(perVm.get(f.vm) ?? []), f]);
    else rest.push(f);
  }
  const out: DoctorFinding[] = [];
  for (const [vm, wanted] of [...perVm].sort(([a], [b]) => a.localeCompare(b))) {
    out.push(...(await fixVm(host, vm, wanted, options)));
  }
  for (const f of rest.sort((a, b) => rank(a) - rank(b))) {
    if (f.action?.kind === 'remove-path' && !(await stillAside(f.action.path))) {
      out.push({ ...f, status: 'fixed', outcome: 'no longer seen' });
      continue;
    }
    out.push(await fixOne(host, f, options, undefined, false));
  }
  return out;
}
