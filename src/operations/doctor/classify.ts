/**
 * The findings of a whole home from its facts: every VM (classifyVm.ts), QEMU processes
 * whose VM is gone, locks, fixture sessions and cached images. Pure: facts in, findings out.
 */
import { basename, join } from 'node:path';
import { locksDir } from '../../backends/qemu/state.js';
import { classifyVm, orphanQemu, type TestVmStatus } from './classifyVm.js';
import type { Finding, HomeFacts, LockFact, SessionFact } from './types.js';

export { classifyVm, dataKind, neededFiles, orphanQemu, ownedNames, type TestVmStatus } from './classifyVm.js';

/** A lock file nobody can read this long was left by a holder killed mid-write (lock.ts waits 1 s). */
export const UNREADABLE_LOCK_MS = 5_000;
/** A `.stale-*` file is a lock moved aside by a steal; one this old was left by a thief that died. */
export const ASIDE_LOCK_MS = 60_000;

/** The lifecycle lock of VM `name`. Pure. */
export const lifecycleLockPath = (stateDir: string, name: string) => join(locksDir(stateDir), `${name}.lock`);

/** True when another live process holds the lock at `path`: an operation is under way. Pure. */
export function heldByOther(locks: readonly LockFact[], path: string, selfHeld: readonly string[]): boolean {
  if (selfHeld.includes(path)) return false;
  const lock = locks.find((l) => l.path === path);
  return lock !== undefined && lock.holder !== undefined && lock.holderAlive;
}

/** How a VM named `name` stands with the fixture sessions; undefined when it is not a session test VM. Pure. */
export function testVmStatus(name: string, prefix: string, sessions: readonly SessionFact[]): TestVmStatus | undefined {
  // Reused VMs (`<prefix>reuse-…`) outlive sessions on purpose.
  if (!name.startsWith(prefix) || name.startsWith(`${prefix}reuse-`)) return undefined;
  const listing = sessions.filter((s) => s.record?.vms.some((vm) => vm.name === name));
  if (listing.some((s) => s.runnerAlive)) return { kind: 'live' };
  const dead = listing[0]?.record;
  return dead ? { kind: 'dead-session', id: dead.id, runnerPid: dead.pid } : { kind: 'unlisted' };
}

function lockFinding(l: LockFact): Finding | undefined {
  const base = {
    code: 'STALE_LOCK' as const,
    severity: 'warning' as const,
    path: l.path,
    fixable: true,
    needsForce: false,
  };
  if (basename(l.path).includes('.stale-')) {
    if (l.ageMs < ASIDE_LOCK_MS) return undefined;
    return {
      ...base,
      seen: `${l.path} is a lock moved aside by a steal that never finished`,
      fix: `remove it`,
      action: { kind: 'remove-path', path: l.path },
    };
  }
  if (!l.holder) {
    if (l.ageMs < UNREADABLE_LOCK_MS) return undefined;
    return {
      ...base,
      seen: `${l.path} holds no readable holder (its writer died mid-write)`,
      fix: 'take the lock and release it',
      action: { kind: 'release-lock', path: l.path },
    };
  }
  if (l.holderAlive) return undefined;
  return {
    ...base,
    pid: l.holder.pid,
    seen: `${l.path} is held by pid ${l.holder.pid} (${l.holder.what ?? 'unknown'}, since ${l.holder.acquiredAt}), which is gone`,
    fix: 'take the lock from the dead holder and release it',
    action: { kind: 'release-lock', path: l.path },
  };
}

/** Every finding about the home described by `facts`, VM by VM, then processes, locks, sessions, images. Pure. */
export function classifyHome(facts: HomeFacts): Finding[] {
  const out: Finding[] = [];
  const byDir = new Map(facts.vms.map((v) => [v.dir, v]));
  const tinyAvailable = facts.currentImage !== undefined;
  for (const v of facts.vms) {
    const busy = heldByOther(facts.locks, lifecycleLockPath(facts.stateDir, v.name), facts.selfHeld);
    out.push(
      ...classifyVm(v, busy, {
        qemus: facts.qemus.filter((q) => q.dir === v.dir),
        test: testVmStatus(v.name, facts.testPrefix, facts.sessions),
        tinyAvailable,
      }),
    );
  }
  for (const q of facts.qemus) {
    if (byDir.get(q.dir)?.entries) continue; // its VM directory is there: classified with the VM
    if (heldByOther(facts.locks, lifecycleLockPath(facts.stateDir, q.vm), facts.selfHeld)) continue;
    out.push(orphanQemu(q, 'that directory is gone'));
  }
  for (const l of facts.locks) {
    const f = lockFinding(l);
    if (f) out.push(f);
  }
  for (const s of facts.sessions) {
    if (s.runnerAlive) continue;
    const id = s.record?.id ?? basename(s.file, '.json');
    out.push({
      code: 'STALE_SESSION',
      severity: 'warning',
      path: s.file,
      pid: s.record?.pid,
      seen: s.record
        ? `fixture session ${id}: its runner (pid ${s.record.pid}) is gone${s.record.vms.length ? `; it lists ${s.record.vms.map((v) => v.name).join(', ')}` : ''}`
        : `${s.file} is not a readable session record`,
      fix: 'remove the session record (its test VMs are deleted as TEST_VM_ORPHANED)',
      fixable: true,
      needsForce: false,
      action: { kind: 'remove-session', id },
    });
  }
  const used = new Set<string>();
  for (const v of facts.vms) {
    const boot = v.record?.boot;
    if (boot?.kind !== 'kernel') continue;
    for (const img of facts.images) if (boot.kernel.startsWith(`${img.dir}/`)) used.add(img.dir);
  }
  for (const img of facts.images) {
    if (used.has(img.dir) || img.dir === facts.currentImage) continue;
    out.push({
      code: 'UNUSED_IMAGE',
      severity: 'info',
      path: img.dir,
      seen: `image ${img.name} built ${img.builtAt} (${img.sizeBytes} bytes) is used by no VM of this home and is not the current build`,
      fix: `rm -r ${img.dir}, if no other LOCALVM_HOME uses it`,
      fixable: false,
      needsForce: false,
    });
  }
  return out;
}

/** True when `finding` makes the home incoherent (everything but `info`). Pure. */
export const isProblem = (finding: Finding): boolean => finding.severity !== 'info';
