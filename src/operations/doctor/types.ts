/**
 * What `doctor` sees and what it says. Facts are gathered by gather.ts (I/O only), turned
 * into findings by classify*.ts (pure), and repaired by fix.ts (under the locks the
 * lifecycle uses). A finding's `code` is stable: scripts branch on it.
 */
import type { LockHolder } from '../../host/lock.js';
import type { VmRecord } from '../../backends/qemu/state.js';
import type { SessionRecord } from '../../vitest/session.js';

export type DoctorCode =
  /** The record says running, but its QEMU is gone or a zombie. */
  | 'RECORD_RUNNING_QEMU_DEAD'
  /** A live QEMU of this VM, but the record says stopped or names another pid. */
  | 'QEMU_RUNNING_RECORD_STOPPED'
  /** A second live QEMU of a VM whose recorded QEMU also runs. */
  | 'QEMU_DUPLICATE'
  /** A QEMU localvm started whose VM directory or record is gone. */
  | 'ORPHAN_QEMU'
  /** A file in a VM directory that the record does not own. */
  | 'ORPHAN_FILE'
  /** A file the record needs (overlay, disk, backing image, kernel, initrd, state disk, seed) is missing. */
  | 'MISSING_FILE'
  /** A lock file whose holder is dead. */
  | 'STALE_LOCK'
  /** A control socket with no live QEMU behind it. */
  | 'STALE_SOCKET'
  /** A pidfile whose process is not this VM's QEMU. */
  | 'STALE_PIDFILE'
  /** A VM directory without vm.json, or a record still `creating` whose creator is gone. */
  | 'HALF_CREATED'
  /** vm.json that cannot be read (not JSON, or another record version). */
  | 'RECORD_UNREADABLE'
  /** A test-prefix VM no live fixture session owns (its runner is dead, or no session lists it). */
  | 'TEST_VM_ORPHANED'
  /** A fixture session record whose runner is dead. */
  | 'STALE_SESSION'
  /** A cached image no VM of this home uses and that new VMs would not use either. */
  | 'UNUSED_IMAGE'
  /** disk.json records an attachment the VM does not list (a crash between attach's or detach's two writes). */
  | 'DISK_CLAIM_STALE'
  /** A VM lists a standalone disk whose disk.json does not record the attachment. */
  | 'DISK_ATTACHMENT_UNRECORDED'
  /** A VM lists a standalone disk that does not exist. */
  | 'DISK_MISSING'
  /** A standalone disk directory without its disk.json (an interrupted create). */
  | 'DISK_HALF_CREATED';

/** `info` findings are reported but do not make the home incoherent (exit code 0). */
export type Severity = 'error' | 'warning' | 'info';

/** What `--fix` does about a finding. */
export type DoctorAction =
  | { kind: 'mark-crashed' }
  | { kind: 'adopt-qemu'; pid: number }
  | { kind: 'kill-qemu'; pid: number; startTime: number; qemuName: string }
  | { kind: 'remove-runtime' }
  | { kind: 'remove-path'; path: string }
  | { kind: 'release-lock'; path: string }
  | { kind: 'delete-vm' }
  | { kind: 'remove-session'; id: string }
  | { kind: 'repoint-tiny' }
  | { kind: 'drop-disk'; disk: string }
  | { kind: 'recreate-state-disk'; path: string }
  // Standalone disks (doctor/disks.ts fixes these under the disk's lock, then the VM's).
  | { kind: 'drop-disk-claim'; disk: string; vm: string }
  | { kind: 'claim-disk'; disk: string; vm: string }
  | { kind: 'drop-vm-disk'; disk: string }
  | { kind: 'remove-disk-dir'; disk: string };

export interface Finding {
  code: DoctorCode;
  severity: Severity;
  /** The VM concerned, when there is one. */
  vm?: string | undefined;
  /** The file, socket, lock or directory concerned. */
  path?: string | undefined;
  /** The process concerned. */
  pid?: number | undefined;
  /** What was seen. */
  seen: string;
  /** What fixes it: what `--fix` does, or what to do by hand. */
  fix: string;
  fixable: boolean;
  /** The fix deletes something a user may want (a disk, a VM with data): only with `--force`. */
  needsForce: boolean;
  action?: DoctorAction | undefined;
}

/** A finding after `doctor --fix`: whether its fix ran, and what it did or why not. */
export interface DoctorFinding extends Finding {
  status: 'open' | 'fixed' | 'skipped' | 'failed';
  /** What the fix did, or why it did not run. */
  outcome?: string | undefined;
}

/** A directory entry, as much as classification needs. */
export interface Entry {
  name: string;
  kind: 'file' | 'dir' | 'socket' | 'other';
}

/** A process from /proc. */
export interface ProcFact {
  pid: number;
  /** A zombie or dead task (`Z`/`X`). */
  zombie: boolean;
  startTime: number;
  /** The `-name` of a QEMU command line (undefined when it has none). */
  qemuName?: string | undefined;
}

/** A live QEMU whose `-pidfile` lies in this home's VM directories: one localvm started. */
export interface QemuFact extends ProcFact {
  /** The VM directory (the pidfile's directory). */
  dir: string;
  /** The VM that directory belongs to (its name). */
  vm: string;
}

/** A file a record needs, and whether it is there. */
export interface Needed {
  path: string;
  what: 'overlay' | 'backing image' | 'disk' | 'state disk' | 'seed' | 'kernel' | 'initrd' | 'boot image';
  present: boolean;
  /** For `disk`: the disk's name. */
  disk?: string | undefined;
}

export interface VmFacts {
  name: string;
  dir: string;
  /** The VM directory's entries; undefined when it does not exist. */
  entries?: Entry[] | undefined;
  record?: VmRecord | undefined;
  recordError?: string | undefined;
  /** The pid in qemu.pid. */
  pidFilePid?: number | undefined;
  /** The processes behind the pidfile's and the record's pids, when they exist. */
  procs: ProcFact[];
  /** Control sockets of the VM that exist (in the VM dir or its socket dir). */
  sockets: string[];
  needed: Needed[];
}

export interface LockFact {
  path: string;
  holder?: LockHolder | undefined;
  holderAlive: boolean;
  /** Milliseconds since the file was last modified. */
  ageMs: number;
}

export interface SessionFact {
  file: string;
  record?: SessionRecord | undefined;
  runnerAlive: boolean;
}

export interface ImageFact {
  dir: string;
  name: string;
  builtAt: string;
  sizeBytes: number;
}

export interface HomeFacts {
  stateDir: string;
  testPrefix: string;
  vms: VmFacts[];
  /** Live QEMU processes of this home. */
  qemus: QemuFact[];
  locks: LockFact[];
  sessions: SessionFact[];
  images: ImageFact[];
  /** The image new `tiny` VMs would use (never reported unused). */
  currentImage?: string | undefined;
  /** Lock files the caller itself holds (doctor --fix under a VM's lock): not a sign of work under way. */
  selfHeld: string[];
}
