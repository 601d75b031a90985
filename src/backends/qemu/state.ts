/**
 * Per-VM state on disk and its reconciliation with the live process table. The pure
 * parts (stat parsing, socket-path shortening, the reconcile decision) do no I/O; the
 * readers below them are thin.
 */
import { createHash } from 'node:crypto';
import { readFile, rm, rmdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { LocalVmError } from '../../errors.js';
import type { VmState } from '../../backend.js';
import type { Arch, VmSpec } from '../../schema.js';
import type { ProcessProbe } from '../../host/proc.js';
import { privateDirExists } from '../../host/privateDir.js';
import { exists, hostFsError, listDirNames } from '../../host/fs.js';
import { MAX_SOCKET_PATH } from './cmdline.js';
import type { VmDiskAttachment } from './volumeStore.js';

export { MAX_SOCKET_PATH };

export const RECORD_VERSION = 1;

export interface VmPaths {
  dir: string;
  record: string;
  pidFile: string;
  consoleLog: string;
  overlay: string;
  qmpSocket: string;
  qgaSocket: string;
  /** Set when the sockets live under the run dir because the VM dir path is too long. */
  socketDir?: string | undefined;
}

export type BootRecord =
  | { kind: 'kernel'; kernel: string; initrd?: string | undefined; append?: string | undefined }
  | {
      kind: 'disk';
      image: string;
      format: 'qcow2' | 'raw';
      /** `kernel` with `image`: this kernel boots with the disk as its root (append has its root=). */
      kernel?: { kernel: string; initrd?: string | undefined; append?: string | undefined } | undefined;
    };

/** What `vm.json` holds. */
export interface VmRecord {
  version: number;
  name: string;
  spec: VmSpec;
  fingerprint: string;
  createdAt: string;
  /** `creating` until the first start finished (or failed). */
  phase: 'creating' | 'ready';
  /** What the last lifecycle operation asked for; a dead `running` VM crashed. */
  desiredState: 'running' | 'stopped';
  /** Why the VM is stopped when nobody asked for it (`create-failed`). */
  stopReason?: string | undefined;
  boot: BootRecord;
  arch: Arch;
  disks: { id: string; path: string; format: 'qcow2' | 'raw' }[];
  /** Standalone disks (`<stateDir>/disks/`) attached to this VM; see volumeStore.ts. */
  attachedDisks?: VmDiskAttachment[] | undefined;
  /** cloud-init NoCloud seed directory (user-data, meta-data), when the spec has userData. */
  seedDir?: string | undefined;
  /** The seed as an ISO image built from seedDir (records from before ISO seeds have none: vvfat). */
  seedImage?: string | undefined;
  /** The qcow2 holding `savevm` state (see layout.ts); snapshots need it. */
  stateDisk?: string | undefined;
  startedAt?: string | undefined;
  pid?: number | undefined;
  accel?: string | undefined;
  accelReason?: string | undefined;
  lastError?: string | undefined;
  paths: VmPaths;
  /** Set on a template's source VM and on its clones (see template/). */
  template?: TemplateLink | undefined;
  /** How the VM is reached over SSH (see ssh/), when it has an SSH transport. */
  ssh?: SshRecord | undefined;
  /** The transport `auto` found answering first, remembered for the next calls. */
  transport?: 'agent' | 'ssh' | undefined;
}

/** A VM's SSH access: guest port 22 forwarded to 127.0.0.1:`port`, its own key, its pinned host key. */
export interface SshRecord {
  port: number;
  user: string;
  /** The private key (0600); the public one is `<keyFile>.pub`. */
  keyFile: string;
  knownHosts: string;
}

/** How a VM is tied to a template: its RAM file, and the VM generation id it runs with. */
export interface TemplateLink {
  name: string;
  /** `source` while a template is being frozen from this VM (RAM shared into the file); `clone` after. */
  role: 'source' | 'clone';
  ramFile: string;
  /** MiB: the RAM file's size, which the VM's memory must equal. */
  memory: number;
  vmgenid: string;
  /**
   * The RAM backend's id when it is not `ram0`: a template frozen from a running VM keeps the
   * machine's default id (`pc.ram`), the name its RAM blocks have in the migration stream.
   */
  ramId?: string | undefined;
  /** The VM has the identity port (part of the template's device layout: see template/identity.ts). */
  identityPort?: boolean | undefined;
  /** A clone whose template parked the identity helper: it is personalised through the port. */
  identityHelper?: boolean | undefined;
}

/** True when a NUL-separated /proc cmdline has `-name` whose guest name is `name`. Pure. */
export function cmdlineHasName(cmdline: string, name: string): boolean {
  const args = cmdline.split('\0');
  for (let i = 0; i < args.length - 1; i++) {
    if (args[i] !== '-name') continue;
    const value = args[i + 1] ?? '';
    const first = value.split(',')[0] ?? '';
    if (first === name || first === `guest=${name}`) return true;
    if (value.split(',').some((part) => part === `guest=${name}`)) return true;
  }
  return false;
}

/** Alive = exists, not a zombie, and (when a name is given) running that VM's command line. Pure. */
export function isLiveQemu(proc: ProcessProbe | undefined, name: string): boolean {
  if (!proc?.stat || proc.stat.state === 'Z' || proc.stat.state === 'X') return false;
  return proc.cmdline !== undefined && cmdlineHasName(proc.cmdline, name);
}

export interface Reconciled {
  state: VmState;
  reason?: string | undefined;
  pid?: number | undefined;
}

/**
 * The VM's real state from its record and what /proc says about its pid. Pure.
 * `creatorAlive`: the lifecycle lock is held by a live process (a create in progress).
 * `launched`: QEMU ran for this VM (its pidfile or console output is there), so a record
 * still `creating` belongs to a creator killed after the launch: that VM came up and may
 * hold the user's data, and is never a failed create.
 */
export function reconcile(
  record: VmRecord,
  proc: ProcessProbe | undefined,
  creatorAlive = false,
  launched = false,
): Reconciled {
  if (isLiveQemu(proc, record.name)) return { state: 'running', pid: proc?.stat?.pid };
  if (record.phase === 'creating') {
    if (creatorAlive) return { state: 'creating' };
    return launched ? { state: 'stopped', reason: 'crashed' } : { state: 'stopped', reason: 'create-failed' };
  }
  if (record.stopReason) return { state: 'stopped', reason: record.stopReason };
  if (record.desiredState === 'running') return { state: 'stopped', reason: 'crashed' };
  return { state: 'stopped' };
}

/** The accelerator a QEMU command line (NUL-separated, from /proc) asks for. Pure. */
export function accelFromCmdline(cmdline: string | undefined): string | undefined {
  const args = (cmdline ?? '').split('\0');
  const i = args.indexOf('-accel');
  return i >= 0 ? args[i + 1]?.split(',')[0] || undefined : undefined;
}

/**
 * The record of a VM whose creator was killed after QEMU came up, completed as its launch
 * would have written it: ready, meant to run, and (when it runs) its pid, accelerator and
 * start time. Pure.
 */
export function completedRecord(
  record: VmRecord,
  live: { pid?: number | undefined; accel?: string | undefined; startedAt?: string | undefined },
): VmRecord {
  return {
    ...record,
    phase: 'ready',
    desiredState: 'running',
    stopReason: undefined,
    lastError: undefined,
    pid: live.pid,
    accel: live.accel ?? record.accel,
    accelReason: live.accel
      ? 'read from the running QEMU when the record of its interrupted launch was completed'
      : undefined,
    startedAt: live.pid !== undefined ? live.startedAt : undefined,
  };
}

/**
 * Socket paths for a VM dir: inside it when both fit in 107 bytes, otherwise under
 * `<runDir>/<hash of the dir>/`. Pure.
 */
export function socketPaths(dir: string, runDir: string): { qmpSocket: string; qgaSocket: string; socketDir?: string } {
  const inDir = { qmpSocket: join(dir, 'qmp.sock'), qgaSocket: join(dir, 'qga.sock') };
  if (Buffer.byteLength(inDir.qgaSocket) <= MAX_SOCKET_PATH && Buffer.byteLength(inDir.qmpSocket) <= MAX_SOCKET_PATH) {
    return inDir;
  }
  const socketDir = join(runDir, createHash('sha256').update(dir).digest('hex').slice(0, 12));
  const out = { qmpSocket: join(socketDir, 'qmp.sock'), qgaSocket: join(socketDir, 'qga.sock'), socketDir };
  if (Buffer.byteLength(out.qgaSocket) > MAX_SOCKET_PATH) {
    throw new LocalVmError(
      'VALIDATION',
      `run dir ${runDir} is too long for unix sockets (max ${MAX_SOCKET_PATH} bytes)`,
      {
        hint: 'set LOCALVM_RUN_DIR to a short directory such as /tmp/localvm',
      },
    );
  }
  return out;
}

/** All paths of VM `name` under `stateDir`. Pure. */
export function vmPaths(stateDir: string, runDir: string, name: string): VmPaths {
  const dir = join(stateDir, 'vms', name);
  return {
    dir,
    record: join(dir, 'vm.json'),
    pidFile: join(dir, 'qemu.pid'),
    consoleLog: join(dir, 'console.log'),
    overlay: join(dir, 'overlay.qcow2'),
    ...socketPaths(dir, runDir),
  };
}

export const vmsDir = (stateDir: string) => join(stateDir, 'vms');
export const locksDir = (stateDir: string) => join(stateDir, 'locks');

/** Reads the pid QEMU wrote, if any. */
export async function readPidFile(path: string): Promise<number | undefined> {
  try {
    const n = Number((await readFile(path, 'utf8')).trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Reads a versioned JSON record; undefined when the file cannot be read. A record of another
 * version is UNSUPPORTED (`label` names the field in the message), bad JSON is INTERNAL.
 */
export async function readVersionedJson<T extends { version: number }>(
  path: string,
  version: number,
  label = 'version',
): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
  let record: T | null;
  try {
    record = JSON.parse(text) as T | null;
  } catch (error) {
    throw new LocalVmError('INTERNAL', `${path} is not valid JSON`, { cause: error });
  }
  if (record === null) throw new LocalVmError('INTERNAL', `${path} is not valid JSON`);
  if (record.version !== version) {
    throw new LocalVmError('UNSUPPORTED', `${path} has ${label} ${record.version}, expected ${version}`);
  }
  return record;
}

/** Reads `vm.json`; undefined when there is none (or it is unreadable). */
export function readRecord(path: string): Promise<VmRecord | undefined> {
  return readVersionedJson<VmRecord>(path, RECORD_VERSION, 'record version');
}

/**
 * Writes `vm.json` atomically (temp file + rename, the temp file removed on failure), mode
 * 0600; the previous record stays whole when the write fails. A full disk, read-only mount
 * or missing permission is HOST_FS. When the very first record of a VM cannot be written,
 * its directory is removed if it is still empty, so a failed create leaves nothing behind.
 */
export async function writeRecord(record: VmRecord): Promise<void> {
  const path = record.paths.record;
  try {
    await writeFileAtomic(path, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
  } catch (error) {
    if (!(await exists(path))) await rmdir(record.paths.dir).catch(() => undefined);
    throw hostFsError(error, `write ${path}`, path);
  }
}

/** Names of VM directories under the state root. */
export function listVmNames(stateDir: string): Promise<string[]> {
  return listDirNames(vmsDir(stateDir));
}

/**
 * Removes control sockets and the pidfile a dead QEMU left behind. Sockets under the run
 * dir are only touched once that directory is verified ours (HOST_FS when it is not), so
 * nothing is removed through another user's directory or symlink.
 */
/** The identity port's socket, beside the VM's QMP socket (see template/identity.ts). Pure. */
export function identitySocketOf(p: Pick<VmPaths, 'qmpSocket'>): string {
  return join(dirname(p.qmpSocket), 'id.sock');
}

export async function removeStaleRuntime(paths: VmPaths): Promise<void> {
  const sockets =
    !paths.socketDir || (await privateDirExists(paths.socketDir))
      ? [paths.qmpSocket, paths.qgaSocket, identitySocketOf(paths)]
      : [];
  await Promise.all([...sockets, paths.pidFile].map((p) => rm(p, { force: true })));
}
