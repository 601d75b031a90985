/**
 * One VM's findings from its facts: record against process, files against record. Pure.
 */
import { basename, dirname } from 'node:path';
import { identitySocketOf, type VmRecord } from '../../backends/qemu/state.js';
import type { Entry, Finding, Needed, QemuFact, VmFacts } from './types.js';

/** How a test-prefix VM stands with the fixture sessions; undefined for other VMs. */
export type TestVmStatus =
  { kind: 'live' } | { kind: 'dead-session'; id: string; runnerPid: number } | { kind: 'unlisted' };

export interface VmContext {
  /** Live QEMU processes whose VM directory is this VM's. */
  qemus: QemuFact[];
  test?: TestVmStatus | undefined;
  /** A `tiny` image exists that a record with missing kernel/initrd could be pointed at. */
  tinyAvailable: boolean;
}

/** Files every VM directory may hold whatever the record says. */
const ALWAYS_OWNED = ['vm.json', 'qemu.pid', 'console.log'];

/** The names in the VM directory that `record` owns. Pure. */
export function ownedNames(record: VmRecord, dir: string): Set<string> {
  const owned = new Set(ALWAYS_OWNED);
  const paths = [
    record.boot.kind === 'disk' ? record.boot.image : undefined,
    record.stateDisk,
    record.seedDir,
    record.paths.qmpSocket,
    record.paths.qgaSocket,
    record.template?.identityPort ? identitySocketOf(record.paths) : undefined,
    ...record.disks.map((d) => d.path),
    // SSH access: the VM's key pair, its pinned host key, the control master's socket.
    ...(record.ssh ? [record.ssh.keyFile, `${record.ssh.keyFile}.pub`, record.ssh.knownHosts, `${dir}/ssh.sock`] : []),
  ];
  for (const p of paths) if (p && dirname(p) === dir) owned.add(basename(p));
  return owned;
}

/** The files `record` needs (backing images are found by reading the overlay, see gather.ts). Pure. */
export function neededFiles(record: VmRecord): Omit<Needed, 'present'>[] {
  const out: Omit<Needed, 'present'>[] = [];
  const boot = record.boot;
  if (boot.kind === 'kernel') {
    out.push({ path: boot.kernel, what: 'kernel' });
    if (boot.initrd) out.push({ path: boot.initrd, what: 'initrd' });
  } else {
    out.push({ path: boot.image, what: boot.image === record.paths.overlay ? 'overlay' : 'boot image' });
  }
  for (const d of record.disks) {
    out.push({ path: d.path, what: 'disk', disk: d.id.startsWith('disk-') ? d.id.slice(5) : d.id });
  }
  if (record.stateDisk) out.push({ path: record.stateDisk, what: 'state disk' });
  if (record.seedDir) out.push({ path: record.seedDir, what: 'seed' });
  return out;
}

// Written by localvm itself and rebuilt from the record when needed: never user data.
const GENERATED = /^(console\.log|qemu\.pid|vm\.json\..+|qmp\.sock|qga\.sock|seed)$/;
const IMAGE_FILE = /\.(qcow2|raw|img)$/;

/** Why deleting an unowned entry needs --force (user data), or undefined when it is safe. Pure. */
export function dataKind(entry: Entry): 'disk' | 'file' | undefined {
  if (GENERATED.test(entry.name)) return undefined;
  return IMAGE_FILE.test(entry.name) ? 'disk' : 'file';
}

function halfCreated(v: VmFacts, qemus: QemuFact[], why: string, dataFiles: string[]): Finding {
  const running = qemus.length ? `; QEMU pid ${qemus.map((q) => q.pid).join(', ')} still runs` : '';
  const data = dataFiles.length ? `; it holds ${dataFiles.join(', ')}` : '';
  return {
    code: 'HALF_CREATED',
    severity: 'warning',
    vm: v.name,
    path: v.dir,
    seen: `${why}${running}${data}`,
    fix: `delete the VM${qemus.length ? ' (its QEMU is killed first)' : ''}${dataFiles.length ? ' (needs --force: it holds files that may be data)' : ''}`,
    fixable: true,
    needsForce: dataFiles.length > 0,
    action: { kind: 'delete-vm' },
  };
}

function processFindings(v: VmFacts, record: VmRecord, qemus: QemuFact[]): Finding[] {
  const out: Finding[] = [];
  const recordedPid = v.pidFilePid ?? record.pid;
  if (qemus.length === 0) {
    if (record.desiredState !== 'running') return out;
    const proc = v.procs.find((p) => p.pid === recordedPid);
    const how =
      recordedPid === undefined
        ? 'no pid is recorded'
        : !proc
          ? `pid ${recordedPid} is gone`
          : proc.zombie
            ? `pid ${recordedPid} is a zombie`
            : `pid ${recordedPid} is another process`;
    out.push({
      code: 'RECORD_RUNNING_QEMU_DEAD',
      severity: 'error',
      vm: v.name,
      path: record.paths.record,
      pid: recordedPid,
      seen: `the record says running, but ${how}`,
      fix: 'mark the VM stopped (crashed) in its record and remove its stale sockets and pidfile',
      fixable: true,
      needsForce: false,
      action: { kind: 'mark-crashed' },
    });
    return out;
  }
  const primary =
    qemus.find((q) => q.pid === v.pidFilePid) ?? qemus.find((q) => q.pid === record.pid) ?? (qemus[0] as QemuFact);
  if (record.desiredState !== 'running' || record.pid !== primary.pid) {
    out.push({
      code: 'QEMU_RUNNING_RECORD_STOPPED',
      severity: 'error',
      vm: v.name,
      path: record.paths.record,
      pid: primary.pid,
      seen:
        record.desiredState !== 'running'
          ? `QEMU pid ${primary.pid} runs this VM, but the record says stopped`
          : `QEMU pid ${primary.pid} runs this VM, but the record names pid ${record.pid ?? 'none'}`,
      fix: `record pid ${primary.pid} as the VM's running QEMU`,
      fixable: true,
      needsForce: false,
      action: { kind: 'adopt-qemu', pid: primary.pid },
    });
  }
  for (const q of qemus) {
    if (q === primary) continue;
    out.push({
      code: 'QEMU_DUPLICATE',
      severity: 'error',
      vm: v.name,
      pid: q.pid,
      path: q.dir,
      seen: `a second QEMU (pid ${q.pid}) runs this VM beside pid ${primary.pid}`,
      fix: `kill pid ${q.pid} (needs --force: it may be serving a guest)`,
      fixable: true,
      needsForce: true,
      action: { kind: 'kill-qemu', pid: q.pid, startTime: q.startTime, qemuName: q.qemuName ?? v.name },
    });
  }
  return out;
}

function missingFinding(v: VmFacts, record: VmRecord, n: Needed, running: boolean, ctx: VmContext): Finding {
  const base = {
    code: 'MISSING_FILE' as const,
    severity: 'error' as const,
    vm: v.name,
    path: n.path,
    seen: `the ${n.what}${n.disk ? ` ${n.disk}` : ''} ${n.path} is missing`,
  };
  const tiny = record.spec.image === 'tiny' && !record.spec.kernel;
  if ((n.what === 'kernel' || n.what === 'initrd') && tiny) {
    return ctx.tinyAvailable
      ? {
          ...base,
          fix: 'point the record at the current tiny image (tiny VMs keep nothing in it)',
          fixable: true,
          needsForce: false,
          action: { kind: 'repoint-tiny' },
        }
      : {
          ...base,
          fix: 'build the tiny image (localvm image build), then run doctor --fix',
          fixable: false,
          needsForce: false,
        };
  }
  if (running && (n.what === 'disk' || n.what === 'state disk')) {
    return {
      ...base,
      fix: `stop the VM (localvm stop ${v.name}), then run doctor --fix`,
      fixable: false,
      needsForce: false,
    };
  }
  if (n.what === 'disk' && n.disk) {
    return {
      ...base,
      fix: `remove disk ${n.disk} from the record (needs --force: its data is gone, the guest loses the disk)`,
      fixable: true,
      needsForce: true,
      action: { kind: 'drop-disk', disk: n.disk },
    };
  }
  if (n.what === 'state disk') {
    return {
      ...base,
      fix: 'create an empty state disk (the snapshots it held are gone already)',
      fixable: true,
      needsForce: false,
      action: { kind: 'recreate-state-disk', path: n.path },
    };
  }
  return {
    ...base,
    fix: `restore ${n.path}, or delete the VM (localvm delete ${v.name}) and create it again`,
    fixable: false,
    needsForce: false,
  };
}

/** The findings about one VM. A VM whose lifecycle lock another live process holds is busy: none. Pure. */
export function classifyVm(v: VmFacts, busy: boolean, ctx: VmContext): Finding[] {
  if (busy || !v.entries) return [];
  const qemus = ctx.qemus;
  if (v.recordError) {
    return [
      {
        code: 'RECORD_UNREADABLE',
        severity: 'error',
        vm: v.name,
        path: `${v.dir}/vm.json`,
        seen: v.recordError,
        fix: `repair vm.json by hand, or delete the VM (localvm delete ${v.name})`,
        fixable: false,
        needsForce: false,
      },
    ];
  }
  const record = v.record;
  if (!record) {
    const out: Finding[] = qemus.map((q) => orphanQemu(q, 'its VM directory has no vm.json'));
    const data = v.entries.filter((e) => dataKind(e) !== undefined).map((e) => e.name);
    out.push(halfCreated(v, qemus, 'the VM directory has no vm.json', data));
    return out;
  }
  if (record.phase === 'creating')
    return [halfCreated(v, qemus, 'the record is still "creating" and its creator is gone', [])];

  const out = processFindings(v, record, qemus);
  const running = qemus.length > 0;
  if (!running) {
    for (const s of v.sockets) {
      out.push({
        code: 'STALE_SOCKET',
        severity: 'warning',
        vm: v.name,
        path: s,
        seen: `${s} exists, but no QEMU of this VM runs`,
        fix: "remove the VM's stale sockets and pidfile",
        fixable: true,
        needsForce: false,
        action: { kind: 'remove-runtime' },
      });
    }
    if (v.entries.some((e) => e.name === 'qemu.pid')) {
      out.push({
        code: 'STALE_PIDFILE',
        severity: 'warning',
        vm: v.name,
        path: record.paths.pidFile,
        pid: v.pidFilePid,
        seen: `${record.paths.pidFile} names ${v.pidFilePid === undefined ? 'no valid pid' : `pid ${v.pidFilePid}`}, but no QEMU of this VM runs`,
        fix: `remove ${record.paths.pidFile}`,
        fixable: true,
        needsForce: false,
        action: { kind: 'remove-path', path: record.paths.pidFile },
      });
    }
  }
  for (const n of v.needed) if (!n.present) out.push(missingFinding(v, record, n, running, ctx));

  const owned = ownedNames(record, v.dir);
  for (const e of v.entries) {
    if (owned.has(e.name)) continue;
    const kind = dataKind(e);
    const path = `${v.dir}/${e.name}`;
    out.push({
      code: 'ORPHAN_FILE',
      severity: 'warning',
      vm: v.name,
      path,
      seen: `${path} (${e.kind}) belongs to no part of the record`,
      fix: kind
        ? `remove it (needs --force: it may hold ${kind === 'disk' ? "a disk's" : "a user's"} data)`
        : 'remove it',
      fixable: true,
      needsForce: kind !== undefined,
      action: { kind: 'remove-path', path },
    });
  }

  const t = ctx.test;
  if (t && t.kind !== 'live') {
    out.push({
      code: 'TEST_VM_ORPHANED',
      severity: 'warning',
      vm: v.name,
      path: v.dir,
      seen:
        t.kind === 'dead-session'
          ? `a test VM of session ${t.id}, whose runner (pid ${t.runnerPid}) is gone`
          : 'a test VM (test prefix) that no live fixture session lists',
      fix: 'delete the VM, as the session reaper would have',
      fixable: true,
      needsForce: false,
      action: { kind: 'delete-vm' },
    });
  }
  return out;
}

/** The finding for a QEMU of this home whose VM directory or record is gone. Pure. */
export function orphanQemu(q: QemuFact, why: string): Finding {
  return {
    code: 'ORPHAN_QEMU',
    severity: 'error',
    vm: q.vm,
    pid: q.pid,
    path: q.dir,
    seen: `QEMU pid ${q.pid} (-name ${q.qemuName ?? '?'}) runs from ${q.dir}, but ${why}`,
    fix: `kill pid ${q.pid}`,
    fixable: true,
    needsForce: false,
    action: { kind: 'kill-qemu', pid: q.pid, startTime: q.startTime, qemuName: q.qemuName ?? q.vm },
  };
}
