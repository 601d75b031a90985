/**
 * What every part of the QEMU backend works with: the configuration, the runner, the
 * per-VM locks and paths, the shared guest-agent sessions and the accelerator choice. One
 * explicit object instead of a closure, so lifecycle, planning, guest access and the
 * capability modules (disks, snapshots) are separate files over the same host.
 */
import { release } from 'node:os';
import { join } from 'node:path';
import type { LocalVmConfig } from '../../config.js';
import type { CommandRunner } from '../../runner.js';
import type { Accel, Arch, VmSpec } from '../../schema.js';
import { hostArch } from '../../host/arch.js';
import {
  createKvmProbe,
  readKvmVerdict,
  resolveAccel,
  type AccelChoice,
  type AccelContext,
  type KvmVerdict,
} from './accel.js';
import { findTinyImage, type TinyImage } from './image/index.js';
import { qemuBinaryFor } from './layout.js';
import { withLock } from '../../host/lock.js';
import { AgentSessions } from './qga.js';
import { withQmp, type QmpClient } from './qmp.js';
import { locksDir, vmPaths, type VmPaths } from './state.js';
import { IdentityPorts } from './template/identity.js';

export interface QemuBackendOptions {
  config: LocalVmConfig;
  runner: CommandRunner;
  log?: ((msg: string) => void) | undefined;
  /** Finds the `tiny` image (default: the image cache); tests inject their own. */
  findImage?: (config: LocalVmConfig) => Promise<TinyImage | undefined>;
  /** Accelerator resolution context (default: this host, KVM probe cached in cacheDir). */
  accelContext?: Partial<AccelContext>;
  /** How long a lifecycle operation waits for another one on the same VM (default 120 s). */
  lockTimeoutMs?: number;
  /** How long an idle guest-agent connection is kept for the next operation (default 500 ms; 0 = never). */
  agentLingerMs?: number;
}

export type LockKind = 'lifecycle' | 'qmp' | 'qga';

export interface QemuHost {
  config: LocalVmConfig;
  runner: CommandRunner;
  log: (msg: string) => void;
  findImage: (config: LocalVmConfig) => Promise<TinyImage | undefined>;
  hostArch: Arch;
  sessions: AgentSessions;
  /** Identity ports of clones being restored by this process (template/identity.ts). */
  identity: IdentityPorts;
  paths(name: string): VmPaths;
  lockPath(name: string, kind: LockKind): string;
  /** Every lock file a VM may have (delete removes them all). */
  lockPaths(name: string): string[];
  /** Runs `fn` under the VM's lifecycle lock. */
  lifecycle<T>(name: string, what: string, fn: () => Promise<T>): Promise<T>;
  /**
   * The accelerator for `spec`. With `probe: false` (planning for a dry run) only the cached
   * KVM verdict is read, since the probe starts QEMU and writes the cache.
   */
  chooseAccel(spec: VmSpec, arch: Arch, options?: { probe?: boolean }): Promise<AccelChoice>;
  /** One QMP connection for several commands, under the VM's QMP lock. */
  qmpSession<T>(name: string, p: VmPaths, timeoutMs: number, fn: (qmp: QmpClient) => Promise<T>): Promise<T>;
  qmp(
    name: string,
    p: VmPaths,
    command: string,
    args: Record<string, unknown> | undefined,
    timeoutMs: number,
  ): Promise<unknown>;
}

// Shared by every backend instance of this process: sessions are keyed by socket path,
// and two instances each lingering on the same VM would only make each other wait.
const sessionPools = new Map<number, AgentSessions>();
function agentSessions(lingerMs: number): AgentSessions {
  let pool = sessionPools.get(lingerMs);
  if (!pool) sessionPools.set(lingerMs, (pool = new AgentSessions(lingerMs)));
  return pool;
}

export function createQemuHost(options: QemuBackendOptions): QemuHost {
  const { config, runner } = options;
  const lockTimeoutMs = options.lockTimeoutMs ?? 120_000;
  let kvmProbe: (() => Promise<KvmVerdict>) | undefined;
  const lockPath = (name: string, kind: LockKind) =>
    join(locksDir(config.stateDir), kind === 'lifecycle' ? `${name}.lock` : `${name}.${kind}.lock`);
  const withLockedQmp = <T>(
    name: string,
    p: VmPaths,
    timeoutMs: number,
    what: string,
    fn: (q: QmpClient) => Promise<T>,
  ) =>
    withLock(lockPath(name, 'qmp'), { timeoutMs: Math.max(timeoutMs, 5_000), what }, () =>
      withQmp(p.qmpSocket, fn, { connectTimeoutMs: Math.min(timeoutMs, 10_000) }),
    );

  return {
    config,
    runner,
    log: options.log ?? (() => undefined),
    findImage: options.findImage ?? findTinyImage,
    hostArch: hostArch(),
    sessions: agentSessions(options.agentLingerMs ?? 500),
    identity: new IdentityPorts(),
    paths: (name) => vmPaths(config.stateDir, config.runDir, name),
    lockPath,
    lockPaths: (name) => (['lifecycle', 'qmp', 'qga'] as const).map((k) => lockPath(name, k)),
    lifecycle: (name, what, fn) => withLock(lockPath(name, 'lifecycle'), { timeoutMs: lockTimeoutMs, what }, fn),

    async chooseAccel(spec, arch, chooseOptions = {}) {
      const requested: Accel = spec.accel !== 'auto' ? spec.accel : config.accel;
      const probe = chooseOptions.probe ?? true;
      kvmProbe ??= createKvmProbe({
        runner,
        cacheDir: config.cacheDir,
        kernelRelease: release(),
        qemuBinary: qemuBinaryFor(config.qemuBinary, arch),
      });
      const probeKvm = probe
        ? kvmProbe
        : async () =>
            (await readKvmVerdict(config.cacheDir, release())) ?? {
              usable: false,
              reason: 'KVM not probed yet (dry run), assuming tcg',
            };
      return resolveAccel(requested, {
        platform: config.platform,
        hostArch: process.arch,
        guestArch: arch,
        probeKvm,
        ...options.accelContext,
      });
    },

    qmpSession: (name, p, timeoutMs, fn) => withLockedQmp(name, p, timeoutMs, 'qmp session', fn),
    qmp: (name, p, command, args, timeoutMs) =>
      withLockedQmp(name, p, timeoutMs, `qmp ${command}`, (q) => q.execute(command, args, timeoutMs)),
  };
}
