/**
 * The contract every backend (QEMU, OrbStack) fulfils. Optional capabilities (raw QMP,
 * disks, snapshots) are their own small interfaces; a backend without one throws
 * UNSUPPORTED through `requireCapability`, never a silent no-op.
 */
import { backendDrivers } from './backends/registry.js';
import { LocalVmError } from './errors.js';
import type { Plan, PlanRequest } from './plan.js';
import type { PortForward, VmSpec } from './schema.js';
import type { GuestTransport } from './transport.js';
import type { HostResult } from './hosts/fanout.js';

/** A registered backend's name (see src/backends/registry.ts). */
export type ConcreteBackend = string;

export type VmState = 'running' | 'stopped' | 'starting' | 'stopping' | 'creating' | 'unknown';

export interface VmInfo {
  name: string;
  backend: ConcreteBackend;
  /** The host it runs on, for backends with many hosts (libvirt: a name from the hosts list). */
  host?: string | undefined;
  state: VmState;
  /** Why the VM is in this state when it was not asked for (`crashed`, `create-failed`). */
  reason?: string | undefined;
  pid?: number | undefined;
  /** The accelerator actually in use (`tcg`, `kvm`, `hvf`), QEMU only. */
  accel?: string | undefined;
  ip4?: string | undefined;
  ports: PortForward[];
  image: string;
  arch: string;
  cpus: number;
  memory: number;
  labels: Record<string, string>;
  /** `specFingerprint` of the spec the VM was created from (adoption compares it). */
  fingerprint?: string | undefined;
  /** The spec the VM was created from, when the backend keeps it. */
  spec?: VmSpec | undefined;
  createdAt?: string | undefined;
  startedAt?: string | undefined;
  uptimeMs?: number | undefined;
  lastError?: string | undefined;
  /** How the guest is reached over SSH (QEMU VMs with an SSH transport; see `localvm ssh-config`). */
  ssh?: { host: string; port: number; user: string } | undefined;
  /** The transport `guest()` uses: `agent`, `ssh`, or `auto` while it has not found out yet. */
  transport?: string | undefined;
}

export interface ExecOptions {
  env?: Record<string, string> | undefined;
  cwd?: string | undefined;
  stdin?: string | Uint8Array | undefined;
  timeoutMs?: number | undefined;
  user?: string | undefined;
  /** Cancels the command (a backend that honours it kills it) and rejects with the reason. */
  signal?: AbortSignal | undefined;
}

export interface ExecResult {
  exitCode: number;
  /** stdout decoded as UTF-8. */
  stdout: string;
  stderr: string;
  /** stdout exactly as the guest wrote it. */
  stdoutBytes: Uint8Array;
  stderrBytes: Uint8Array;
  /** Set when the process was killed by a signal. */
  signal?: number | string | undefined;
  durationMs: number;
}

export interface StopOptions {
  /** Skip the graceful shutdown. */
  force?: boolean | undefined;
  /** How long the graceful shutdown may take before it is forced. */
  timeoutMs?: number | undefined;
}

export interface PutFileOptions {
  /** File mode, e.g. 0o644. */
  mode?: number | undefined;
  /** Cancels the transfer (a backend that honours it drops it) and rejects with the reason. */
  signal?: AbortSignal | undefined;
}

/** One readiness probe's verdict: ready or not, and what it saw (for timeout errors). */
export interface ProbeResult {
  ready: boolean;
  detail: string;
}

export interface Backend {
  readonly name: ConcreteBackend;
  /**
   * What a state-changing operation would do, from read-only observations: the same steps
   * the operation then executes (`--dry-run` prints them). MUST write nothing and start no
   * process that changes state (read-only tools such as `qemu-img info` are fine).
   */
  plan(request: PlanRequest): Promise<Plan>;
  /** The way into the guest of VM `name` (guest agent, SSH, orbctl run). */
  guest(name: string): GuestTransport;
  /**
   * One particular way in (`agent`, `ssh`), whatever `guest` would choose; undefined when this
   * backend has no such transport (readiness strategies and benchmarks that want one kind).
   */
  transport?(name: string, kind: string): GuestTransport | undefined;
  /**
   * Creates and starts the VM. MUST throw ALREADY_EXISTS when a VM of that name exists
   * (the operations layer decides about adoption); MUST leave nothing behind on failure
   * other than what `delete` removes.
   */
  create(spec: VmSpec): Promise<VmInfo>;
  /** Starts a stopped VM; a running VM is left alone. */
  start(name: string): Promise<VmInfo>;
  /** Stops a VM; a stopped VM is left alone. */
  stop(name: string, options?: StopOptions): Promise<VmInfo>;
  restart(name: string): Promise<VmInfo>;
  /** Deletes a VM and everything it owns. MUST succeed when the VM does not exist. */
  delete(name: string): Promise<void>;
  list(): Promise<VmInfo[]>;
  /**
   * Backends with many hosts (libvirt): each host's VMs, or why that host did not answer, so
   * one host that is down is reported and never hides the others'. `list` is their union.
   */
  listByHost?(): Promise<HostResult<VmInfo[]>[]>;
  /** Throws NOT_FOUND when there is no such VM. */
  info(name: string): Promise<VmInfo>;
  /** The last lines the guest printed on its console, when the backend has one. */
  consoleTail?(name: string, lines?: number): Promise<string>;
  /**
   * Whether an existing VM matches `spec` closely enough to be adopted by a create.
   * Backends that keep the spec's fingerprint (QEMU) need not implement it.
   */
  matchesSpec?(info: VmInfo, spec: VmSpec): boolean;
  /** Changes cpus/memory/ports of a stopped-or-running VM (stop, change, start). */
  update?(name: string, spec: VmSpec): Promise<VmInfo>;
  /**
   * Creates the VM or adopts the one of that name, deciding under the VM's lifecycle lock so
   * that concurrent callers agree and nothing is removed on a stale look. An existing VM is
   * adopted when `matches(info)` holds (started if stopped) and is a CONFLICT otherwise; one
   * half-created by a creator that is gone, holding nothing a user added, is removed and
   * created again; a missing one is created. A create that fails leaves nothing behind.
   * Backends without it get `createVmWithRetry`'s look-then-create, which is only as safe
   * against concurrent creators as their own `create`.
   */
  createOrAdopt?(spec: VmSpec, matches: (existing: VmInfo) => boolean): Promise<CreateOrAdoptResult>;
}

export interface CreateOrAdoptResult {
  info: VmInfo;
  /** True when an existing VM was taken over instead of created. */
  adopted: boolean;
}

/** Raw QMP passthrough. */
export interface QmpCapable {
  qmp(name: string, command: string, args?: Record<string, unknown>): Promise<unknown>;
}

export interface Snapshot {
  name: string;
  createdAt?: string | undefined;
  sizeBytes?: number | undefined;
}

export interface SnapshotCapable {
  snapshotCreate(name: string, snapshot: string): Promise<void>;
  snapshotList(name: string): Promise<Snapshot[]>;
  snapshotRestore(name: string, snapshot: string): Promise<void>;
  snapshotDelete(name: string, snapshot: string): Promise<void>;
}

/** One extra disk of a VM. */
export interface DiskInfo {
  name: string;
  /** Virtual size. */
  sizeBytes: number;
  /** The image file on the host. */
  path: string;
  /** Whether the running VM has it plugged in (always false for a stopped VM). */
  attached: boolean;
}

/** Extra disks, added and removed whether the VM runs (hot-plug) or not. */
export interface DiskCapable {
  /** Creates and attaches disk `disk.name` (`size` in bytes). ALREADY_EXISTS when the VM has one of that name. */
  diskAdd(name: string, disk: { name: string; size: number }): Promise<DiskInfo>;
  /** Detaches and deletes the disk; a disk the VM does not have is `removed: false`. */
  diskRemove(name: string, diskName: string): Promise<{ removed: boolean }>;
  diskList(name: string): Promise<DiskInfo[]>;
}

/** A standalone disk (`localvm disk create`): its own resource, attached to VMs and detached again. */
export interface StandaloneDiskInfo {
  name: string;
  /** Virtual size. */
  sizeBytes: number;
  /** Bytes the image file takes on the host. */
  allocatedBytes: number;
  format: string;
  path: string;
  createdAt: string;
  /** The image it was copied from, when it was. */
  from?: string | undefined;
  /** The VMs it is attached to (several only when all are read-only). */
  attachedTo: { vm: string; readonly: boolean }[];
}

/**
 * Standalone disks: created, listed, resized and deleted on their own, attached to and
 * detached from VMs (hot-plugged when the VM runs). A read-write disk is attached to one
 * VM at a time; read-only attachments share.
 */
export interface VolumeCapable {
  /** ALREADY_EXISTS when a disk of that name exists; VALIDATION when `from` is larger than `size`. */
  volumeCreate(name: string, size: number, options?: { from?: string | undefined }): Promise<StandaloneDiskInfo>;
  volumeList(): Promise<StandaloneDiskInfo[]>;
  /** NOT_FOUND when there is no such disk. */
  volumeInfo(name: string): Promise<StandaloneDiskInfo>;
  /** Idempotent for the same mode; CONFLICT when another VM holds it read-write (or it would). */
  volumeAttach(vm: string, disk: string, options?: { readonly?: boolean | undefined }): Promise<StandaloneDiskInfo>;
  /** Waits (up to `timeoutMs`) for a running guest to let go: TIMEOUT otherwise. `detached: false` when it was not attached. */
  volumeDetach(vm: string, disk: string, options?: { timeoutMs?: number | undefined }): Promise<{ detached: boolean }>;
  /** Grows the disk (online when attached to a running VM); VALIDATION on a shrink. */
  volumeResize(disk: string, size: number): Promise<StandaloneDiskInfo>;
  /** CONFLICT while attached; `deleted: false` when there is no such disk. */
  volumeDelete(disk: string): Promise<{ deleted: boolean }>;
}

/** OpenSSH access to a guest from the host (`localvm ssh`, `localvm ssh-config`). */
export interface SshCapable {
  /**
   * The `ssh` command that logs in to VM `name` (a login shell, or `argv` run there), with its
   * key and pinned host key; the host key is learned first when it is not pinned yet.
   */
  sshCommand(name: string, argv: string[], options: { tty: boolean }): Promise<{ file: string; args: string[] }>;
  /** An ssh_config stanza (`Host localvm-NAME`) for plain ssh, Ansible, pyinfra. */
  sshConfig(name: string): Promise<string>;
}

export type Capability = 'qmp' | 'snapshots' | 'disks' | 'volumes' | 'ssh';

const CAPABILITY_METHOD: Record<Capability, string> = {
  qmp: 'qmp',
  snapshots: 'snapshotCreate',
  disks: 'diskAdd',
  volumes: 'volumeCreate',
  ssh: 'sshCommand',
};

export function hasCapability(backend: Backend, capability: 'qmp'): backend is Backend & QmpCapable;
export function hasCapability(backend: Backend, capability: 'snapshots'): backend is Backend & SnapshotCapable;
export function hasCapability(backend: Backend, capability: 'disks'): backend is Backend & DiskCapable;
export function hasCapability(backend: Backend, capability: 'volumes'): backend is Backend & VolumeCapable;
export function hasCapability(backend: Backend, capability: 'ssh'): backend is Backend & SshCapable;
export function hasCapability(backend: Backend, capability: Capability): boolean {
  return typeof (backend as unknown as Record<string, unknown>)[CAPABILITY_METHOD[capability]] === 'function';
}

/** Narrows `backend` to the capability or throws UNSUPPORTED naming the backend. */
export function requireCapability(backend: Backend, capability: 'qmp'): Backend & QmpCapable;
export function requireCapability(backend: Backend, capability: 'snapshots'): Backend & SnapshotCapable;
export function requireCapability(backend: Backend, capability: 'disks'): Backend & DiskCapable;
export function requireCapability(backend: Backend, capability: 'volumes'): Backend & VolumeCapable;
export function requireCapability(backend: Backend, capability: 'ssh'): Backend & SshCapable;
export function requireCapability(backend: Backend, capability: Capability): Backend {
  if (!hasCapability(backend, capability as 'qmp')) {
    const able = backendDrivers()
      .filter((d) => d.capabilities.includes(capability))
      .map((d) => d.name);
    throw new LocalVmError('UNSUPPORTED', `the ${backend.name} backend does not support ${capability}`, {
      hint: able.length ? `${capability} needs the ${able.join(' or ')} backend` : undefined,
    });
  }
  return backend;
}
