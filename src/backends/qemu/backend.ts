/**
 * The QEMU backend: daemonized QEMU processes that outlive their creator, one directory
 * per VM, driven over QMP (lifecycle) and the guest agent (exec, files, readiness).
 * Every read reconciles `vm.json` with /proc; lifecycle operations hold a per-VM lock
 * that dies with its holder; each control socket is used by one session at a time.
 */
import { access, mkdir, open, rm, stat, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { join, resolve } from 'node:path';
import type {
  Backend,
  DiskCapable,
  ExecOptions,
  ExecResult,
  ProbeResult,
  PutFileOptions,
  QmpCapable,
  SnapshotCapable,
  StopOptions,
  VmInfo,
} from '../../backend.js';
import { buildQemuCommand } from './cmdline.js';
import { qemuImg } from './qemuImg.js';
import type { LocalVmConfig } from '../../config.js';
import { isLocalVmError, LocalVmError, tail } from '../../errors.js';
import { parseQemuImgInfo } from '../../parsers.js';
import { commandError, runChecked, type CommandRunner } from '../../runner.js';
import { isTransientLaunchFailure } from './classify.js';
import { QEMU_BACKEND } from './register.js';
import { diskLayout, launchFor, qemuBinaryFor, seedDirFor, STATE_DISK_BYTES, stateDiskFor } from './layout.js';
import { specFingerprint, type Accel, type Arch, type VmSpec } from '../../schema.js';
import { createKvmProbe, resolveAccel, type AccelChoice, type AccelContext } from './accel.js';
import { findTinyImage, type TinyImage } from './image.js';
import { holderAlive, readLockHolder, withLock } from '../../host/lock.js';
import { mkdirPrivate } from '../../host/privateDir.js';
import { probeProcess } from '../../host/proc.js';
import { AgentSessions, guestExec, guestGetFile, guestPutFile, type QgaClient } from './qga.js';
import { withQmp, type QmpClient } from './qmp.js';
import { createDiskOps } from './disks.js';
import { createSnapshotOps } from './snapshot.js';
import type { VmAccess } from './vmAccess.js';
import {
  isLiveQemu,
  listVmNames,
  locksDir,
  readPidFile,
  readRecord,
  reconcile,
  removeStaleRuntime,
  RECORD_VERSION,
  vmPaths,
  vmsDir,
  writeRecord,
  type BootRecord,
  type Reconciled,
  type VmPaths,
  type VmRecord,
} from './state.js';

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

export type QemuBackend = Backend & QmpCapable & SnapshotCapable & DiskCapable;

const NODE_ARCH: Record<string, Arch> = { x64: 'x86_64', arm64: 'aarch64' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Shared by every backend instance of this process: sessions are keyed by socket path,
// and two instances each lingering on the same VM would only make each other wait.
const sessionPools = new Map<number, AgentSessions>();
function agentSessions(lingerMs: number): AgentSessions {
  let pool = sessionPools.get(lingerMs);
  if (!pool) sessionPools.set(lingerMs, (pool = new AgentSessions(lingerMs)));
  return pool;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** Creates the QEMU backend for `config`. Keep one instance per process: it owns the in-process socket mutexes. */
export function createQemuBackend(options: QemuBackendOptions): QemuBackend {
  const { config, runner } = options;
  const log = options.log ?? (() => undefined);
  const findImage = options.findImage ?? findTinyImage;
  const lockTimeoutMs = options.lockTimeoutMs ?? 120_000;
  const hostArch = NODE_ARCH[process.arch] ?? 'x86_64';
  const sessions = agentSessions(options.agentLingerMs ?? 500);
  let kvmProbe: (() => Promise<{ usable: boolean; reason: string }>) | undefined;

  const paths = (name: string): VmPaths => vmPaths(config.stateDir, config.runDir, name);
  const lockPath = (name: string, kind: 'lifecycle' | 'qmp' | 'qga') =>
    join(locksDir(config.stateDir), kind === 'lifecycle' ? `${name}.lock` : `${name}.${kind}.lock`);

  const lifecycle = <T>(name: string, what: string, fn: () => Promise<T>): Promise<T> =>
    withLock(lockPath(name, 'lifecycle'), { timeoutMs: lockTimeoutMs, what }, fn);

  async function chooseAccel(spec: VmSpec, arch: Arch): Promise<AccelChoice> {
    const requested: Accel = spec.accel !== 'auto' ? spec.accel : config.accel;
    kvmProbe ??= createKvmProbe({
      runner,
      cacheDir: config.cacheDir,
      kernelRelease: release(),
      qemuBinary: qemuBinaryFor(config.qemuBinary, arch),
    });
    return resolveAccel(requested, {
      platform: process.platform,
      hostArch: process.arch,
      guestArch: arch,
      probeKvm: kvmProbe,
      ...options.accelContext,
    });
  }

  interface Observed {
    record: VmRecord | undefined;
    paths: VmPaths;
    exists: boolean;
    state: Reconciled;
  }

  /** Reads the record and the process behind it; never writes. */
  async function observe(name: string): Promise<Observed> {
    const p = paths(name);
    const record = await readRecord(p.record);
    if (!record) {
      const present = await exists(p.dir);
      // A directory without vm.json: a create that died before its first write.
      const pid = await readPidFile(p.pidFile);
      const proc = await probeProcess(pid);
      const running = isLiveQemu(proc, name);
      return {
        record,
        paths: p,
        exists: present,
        state: running ? { state: 'running', pid } : { state: 'stopped', reason: 'create-failed' },
      };
    }
    const pid = (await readPidFile(record.paths.pidFile)) ?? record.pid;
    const proc = await probeProcess(pid);
    let creatorAlive = false;
    if (record.phase === 'creating') {
      const holder = await readLockHolder(lockPath(name, 'lifecycle'));
      creatorAlive = holder?.what === 'create' && (await holderAlive(holder));
    }
    return { record, paths: record.paths, exists: true, state: reconcile(record, proc, creatorAlive) };
  }

  function toInfo(name: string, o: Observed): VmInfo {
    const r = o.record;
    const running = o.state.state === 'running';
    const startedAt = running ? r?.startedAt : undefined;
    return {
      name,
      backend: QEMU_BACKEND,
      state: o.state.state,
      reason: o.state.reason,
      pid: running ? o.state.pid : undefined,
      accel: r?.accel,
      ports: r?.spec.ports ?? [],
      image: r?.spec.image ?? 'unknown',
      arch: r?.arch ?? hostArch,
      cpus: r?.spec.cpus ?? 0,
      memory: r?.spec.memory ?? 0,
      labels: r?.spec.labels ?? {},
      fingerprint: r?.fingerprint,
      spec: r?.spec,
      createdAt: r?.createdAt,
      startedAt,
      uptimeMs: startedAt ? Math.max(0, Date.now() - Date.parse(startedAt)) : undefined,
      lastError: r?.lastError,
    };
  }

  function notFound(name: string): LocalVmError {
    return new LocalVmError('NOT_FOUND', `no QEMU VM named ${name}`, {
      vm: name,
      hint: 'see `localvm list` for the VMs that exist',
    });
  }

  async function requireRecord(name: string): Promise<{ o: Observed; record: VmRecord }> {
    const o = await observe(name);
    if (!o.exists) throw notFound(name);
    if (!o.record) {
      throw new LocalVmError('CONFLICT', `VM ${name} was never fully created`, {
        vm: name,
        hint: `delete it: localvm delete ${name}`,
      });
    }
    return { o, record: o.record };
  }

  async function requireRunning(name: string): Promise<{ o: Observed; record: VmRecord }> {
    const found = await requireRecord(name);
    if (found.o.state.state !== 'running') {
      throw new LocalVmError(
        'CONFLICT',
        `VM ${name} is not running (${found.o.state.state}${found.o.state.reason ? `, ${found.o.state.reason}` : ''})`,
        { vm: name, hint: `start it: localvm start ${name}` },
      );
    }
    return found;
  }

  async function waitGone(name: string, pid: number | undefined, timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    let interval = 2;
    while (true) {
      if (!isLiveQemu(await probeProcess(pid), name)) return true;
      if (performance.now() >= deadline) return false;
      await sleep(interval);
      interval = Math.min(interval * 2, 50);
    }
  }

  /** Boot files of a record must still exist (the tiny image may have been pruned). */
  async function checkBootFiles(name: string, boot: BootRecord): Promise<void> {
    const files = boot.kind === 'kernel' ? [boot.kernel, ...(boot.initrd ? [boot.initrd] : [])] : [boot.image];
    for (const f of files) {
      if (!(await exists(f))) {
        throw new LocalVmError('NOT_FOUND', `boot file ${f} of VM ${name} does not exist`, {
          vm: name,
          hint: 'rebuild the image (`localvm image build`) or recreate the VM',
        });
      }
    }
  }

  async function startLocked(record: VmRecord): Promise<VmInfo> {
    const name = record.name;
    const before = await observe(name);
    if (before.state.state === 'running') return toInfo(name, before);
    const p = record.paths;
    await removeStaleRuntime(p);
    if (p.socketDir) await mkdirPrivate(p.socketDir);
    await checkBootFiles(name, record.boot);
    const choice = await chooseAccel(record.spec, record.arch);
    log(`${name}: ${choice.reason}`);
    const launch = launchFor(record, choice.accel, config.qemuBinary);
    const cmd = buildQemuCommand(launch);
    const result = await runner.run(cmd, { timeoutMs: 60_000 });
    if (result.exitCode !== 0 || result.timedOut) {
      const failure = commandError(result, `QEMU for ${name} did not start: ${tail(result.stderr, 5, 1000)}`);
      const error = isTransientLaunchFailure(result.stderr)
        ? new LocalVmError('TRANSIENT', failure.message, { vm: name, command: failure.command })
        : failure;
      // A QEMU that timed out while daemonizing may still have come up: never leave it behind.
      await killHard(name, await readPidFile(p.pidFile));
      await removeStaleRuntime(p);
      await writeRecord({
        ...record,
        desiredState: 'stopped',
        stopReason: 'start-failed',
        pid: undefined,
        lastError: error.message,
      });
      throw error;
    }
    const pid = await readPidFile(p.pidFile);
    const next: VmRecord = {
      ...record,
      phase: 'ready',
      desiredState: 'running',
      stopReason: undefined,
      lastError: undefined,
      pid,
      accel: choice.accel,
      accelReason: choice.reason,
      startedAt: new Date().toISOString(),
    };
    await writeRecord(next);
    return toInfo(name, await observe(name));
  }

  async function killHard(name: string, pid: number | undefined): Promise<void> {
    if (pid === undefined || !isLiveQemu(await probeProcess(pid), name)) return;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      return;
    }
    await waitGone(name, pid, 5_000);
  }

  async function stopLocked(record: VmRecord, stopOptions: StopOptions = {}): Promise<VmInfo> {
    const name = record.name;
    const o = await observe(name);
    const pid = o.state.pid;
    await sessions.drop(record.paths.qgaSocket);
    if (o.state.state === 'running' && pid !== undefined) {
      let gone = false;
      if (!stopOptions.force) {
        const timeoutMs = stopOptions.timeoutMs ?? record.spec.timeouts.stopMs;
        const asked = await qmpLocked(name, record.paths, 'system_powerdown', undefined, 2_000).then(
          () => true,
          (error: unknown) => {
            log(`${name}: system_powerdown failed: ${(error as Error).message}`);
            return false;
          },
        );
        if (asked) gone = await waitGone(name, pid, timeoutMs);
        if (!gone) log(`${name}: no graceful shutdown in ${timeoutMs} ms, forcing`);
      }
      if (!gone) {
        await qmpLocked(name, record.paths, 'quit', undefined, 2_000).catch(() => undefined);
        gone = await waitGone(name, pid, 2_000);
      }
      if (!gone) await killHard(name, pid);
    }
    await removeStaleRuntime(record.paths);
    await writeRecord({ ...record, phase: 'ready', desiredState: 'stopped', pid: undefined, startedAt: undefined });
    return toInfo(name, await observe(name));
  }

  /** One QMP connection for several commands, under the VM's QMP lock. */
  async function qmpSession<T>(
    name: string,
    p: VmPaths,
    timeoutMs: number,
    fn: (qmp: QmpClient) => Promise<T>,
  ): Promise<T> {
    return withLock(lockPath(name, 'qmp'), { timeoutMs: Math.max(timeoutMs, 5_000), what: 'qmp session' }, () =>
      withQmp(p.qmpSocket, fn, { connectTimeoutMs: Math.min(timeoutMs, 10_000) }),
    );
  }

  async function qmpLocked(
    name: string,
    p: VmPaths,
    command: string,
    args: Record<string, unknown> | undefined,
    timeoutMs: number,
  ): Promise<unknown> {
    return withLock(lockPath(name, 'qmp'), { timeoutMs: Math.max(timeoutMs, 5_000), what: `qmp ${command}` }, () =>
      withQmp(p.qmpSocket, (qmp) => qmp.execute(command, args, timeoutMs), { connectTimeoutMs: timeoutMs }),
    );
  }

  /** One guest-agent session (see AgentSessions), with errors said in terms of the VM. */
  async function withAgent<T>(name: string, timeoutMs: number, fn: (qga: QgaClient) => Promise<T>): Promise<T> {
    const { record } = await requireRunning(name);
    try {
      return await sessions.run(record.paths.qgaSocket, lockPath(name, 'qga'), timeoutMs, fn);
    } catch (error) {
      if (isLocalVmError(error, 'COMMAND_FAILED') || isLocalVmError(error, 'VALIDATION')) throw error;
      const now = await observe(name);
      if (now.state.state !== 'running') {
        throw new LocalVmError('CONFLICT', `VM ${name} stopped (${now.state.reason ?? 'stopped'})`, {
          vm: name,
          cause: error,
        });
      }
      if (isLocalVmError(error) && error.vm === undefined) {
        throw new LocalVmError(error.code, `${name}: ${error.message}`, {
          vm: name,
          cause: error,
          details: error.details,
          transient: error.transient,
          // A guest command that ran too long carries its guest pid; anything else timed
          // out before the agent answered at all.
          hint:
            error.code === 'TIMEOUT' && error.details?.guestPid === undefined
              ? 'is the guest still booting? see `localvm console`'
              : error.hint,
        });
      }
      throw error;
    }
  }

  async function resolveBoot(spec: VmSpec): Promise<{ boot: BootRecord; image?: string }> {
    if (spec.kernel) {
      for (const f of [spec.kernel, ...(spec.initrd ? [spec.initrd] : [])]) {
        if (!(await exists(f))) throw new LocalVmError('NOT_FOUND', `${f} does not exist`, { vm: spec.name });
      }
      return { boot: { kind: 'kernel', kernel: spec.kernel, initrd: spec.initrd, append: spec.append } };
    }
    if (spec.image === 'tiny') {
      const tiny = await findImage(config);
      if (!tiny) {
        throw new LocalVmError('NOT_FOUND', 'the tiny guest image has not been built', {
          vm: spec.name,
          hint: 'build it once with `localvm image build`',
        });
      }
      return { boot: { kind: 'kernel', kernel: tiny.kernel, initrd: tiny.initrd, append: spec.append ?? tiny.append } };
    }
    const image = resolve(spec.image);
    const st = await stat(image).catch(() => undefined);
    if (!st?.isFile()) {
      throw new LocalVmError('NOT_FOUND', `image ${image} does not exist`, {
        vm: spec.name,
        hint: 'give `tiny`, or the path of a qcow2/raw disk image',
      });
    }
    return { boot: { kind: 'disk', image: '', format: 'qcow2' }, image };
  }

  /**
   * The cloud-init NoCloud seed: user-data as given, and meta-data whose instance-id changes
   * with the spec so cloud-init runs again when the VM is recreated differently.
   */
  async function writeSeed(dir: string, spec: VmSpec): Promise<void> {
    await mkdir(dir, { mode: 0o700 });
    await writeFile(join(dir, 'user-data'), spec.userData ?? '', { mode: 0o600 });
    await writeFile(
      join(dir, 'meta-data'),
      `instance-id: ${spec.name}-${specFingerprint(spec)}\nlocal-hostname: ${spec.name}\n`,
      { mode: 0o600 },
    );
  }

  async function create(spec: VmSpec): Promise<VmInfo> {
    const name = spec.name;
    return lifecycle(name, 'create', async () => {
      const p = paths(name);
      if (await exists(p.dir)) {
        throw new LocalVmError('ALREADY_EXISTS', `a QEMU VM named ${name} already exists`, {
          vm: name,
          hint: `delete it first (localvm delete ${name}) or use another name`,
        });
      }
      // Everything that can fail on bad input is checked before anything is written.
      const { boot: resolvedBoot, image } = await resolveBoot(spec);
      let backingFormat: 'qcow2' | 'raw' | undefined;
      if (image) {
        const info = parseQemuImgInfo((await runChecked(runner, qemuImg.info(image), { timeoutMs: 30_000 })).stdout);
        if (info.format !== 'qcow2' && info.format !== 'raw') {
          throw new LocalVmError('VALIDATION', `image ${image} is ${info.format}; qcow2 or raw expected`, {
            vm: name,
            issues: [{ property: 'image', reason: `unsupported format ${info.format}` }],
          });
        }
        backingFormat = info.format;
      }
      const arch = spec.arch ?? hostArch;
      await mkdirPrivate(vmsDir(config.stateDir));
      try {
        await mkdir(p.dir, { mode: 0o700 });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
          throw new LocalVmError('ALREADY_EXISTS', `a QEMU VM named ${name} already exists`, { vm: name });
        }
        throw error;
      }
      const disks = diskLayout(spec, p.dir);
      let record: VmRecord = {
        version: RECORD_VERSION,
        name,
        spec,
        fingerprint: specFingerprint(spec),
        createdAt: new Date().toISOString(),
        phase: 'creating',
        desiredState: 'running',
        boot: image ? { kind: 'disk', image: p.overlay, format: 'qcow2' } : resolvedBoot,
        arch,
        disks,
        seedDir: seedDirFor(spec, p.dir),
        stateDisk: stateDiskFor(p.dir),
        paths: p,
      };
      await writeRecord(record);
      try {
        // The console log exists from the start, so `console` works even if QEMU never runs.
        await (await open(p.consoleLog, 'a', 0o600)).close();
        if (record.seedDir && spec.userData !== undefined) await writeSeed(record.seedDir, spec);
        if (image && backingFormat) {
          await runChecked(
            runner,
            qemuImg.create({
              path: p.overlay,
              format: 'qcow2',
              backing: { path: image, format: backingFormat },
              size: spec.diskSize,
            }),
            { timeoutMs: 60_000 },
          );
        }
        if (record.stateDisk) {
          await runChecked(
            runner,
            qemuImg.create({ path: record.stateDisk, format: 'qcow2', size: STATE_DISK_BYTES }),
            { timeoutMs: 60_000 },
          );
        }
        for (const [i, d] of spec.disks.entries()) {
          const disk = disks[i];
          if (disk)
            await runChecked(runner, qemuImg.create({ path: disk.path, format: 'qcow2', size: d.size }), {
              timeoutMs: 60_000,
            });
        }
        return await startLocked(record);
      } catch (error) {
        record = (await readRecord(p.record)) ?? record;
        await killHard(name, await readPidFile(p.pidFile));
        await removeStaleRuntime(p);
        await writeRecord({
          ...record,
          phase: 'ready',
          desiredState: 'stopped',
          stopReason: 'create-failed',
          pid: undefined,
          lastError: (error as Error).message,
        }).catch(() => undefined);
        throw error;
      }
    });
  }

  async function deleteVm(name: string): Promise<void> {
    await lifecycle(name, 'delete', async () => {
      const o = await observe(name);
      if (!o.exists) return;
      await sessions.drop(o.paths.qgaSocket);
      if (o.state.state === 'running') await killHard(name, o.state.pid);
      await rm(o.paths.dir, { recursive: true, force: true });
      if (o.paths.socketDir) await rm(o.paths.socketDir, { recursive: true, force: true });
    });
  }

  const access: VmAccess = {
    runner,
    lifecycle,
    async load(name) {
      const { o, record } = await requireRecord(name);
      return { record, running: o.state.state === 'running' };
    },
    qmpSession,
    log,
  };
  const snapshots = createSnapshotOps({ ...access, dropAgent: (p) => sessions.drop(p.qgaSocket) });
  const disks = createDiskOps({ ...access, writeRecord });

  return {
    name: QEMU_BACKEND,
    create,
    ...snapshots,
    ...disks,

    async start(name) {
      return lifecycle(name, 'start', async () => startLocked((await requireRecord(name)).record));
    },

    async stop(name, stopOptions) {
      return lifecycle(name, 'stop', async () => stopLocked((await requireRecord(name)).record, stopOptions));
    },

    async restart(name) {
      return lifecycle(name, 'restart', async () => {
        const { record } = await requireRecord(name);
        await stopLocked(record);
        return startLocked((await readRecord(record.paths.record)) ?? record);
      });
    },

    delete: deleteVm,

    async list() {
      const out: VmInfo[] = [];
      for (const name of await listVmNames(config.stateDir)) out.push(toInfo(name, await observe(name)));
      return out;
    },

    async info(name) {
      const o = await observe(name);
      if (!o.exists) throw notFound(name);
      return toInfo(name, o);
    },

    async exec(name, argv, execOptions: ExecOptions = {}): Promise<ExecResult> {
      if (argv.length === 0) throw new LocalVmError('VALIDATION', 'exec needs a command', { vm: name });
      const { record } = await requireRecord(name);
      const timeoutMs = execOptions.timeoutMs ?? record.spec.timeouts.execMs;
      return withAgent(name, timeoutMs, (qga) =>
        guestExec(qga, argv, {
          env: execOptions.env,
          cwd: execOptions.cwd,
          user: execOptions.user,
          stdin: execOptions.stdin,
          timeoutMs,
        }),
      );
    },

    async putFile(name, guestPath, content, putOptions: PutFileOptions = {}) {
      const { record } = await requireRecord(name);
      const timeoutMs = record.spec.timeouts.execMs;
      await withAgent(name, timeoutMs, async (qga) => {
        await guestPutFile(qga, guestPath, content, timeoutMs);
        if (putOptions.mode !== undefined) {
          const r = await guestExec(qga, ['chmod', (putOptions.mode & 0o7777).toString(8), guestPath], {
            timeoutMs: 10_000,
          });
          if (r.exitCode !== 0) {
            throw new LocalVmError('COMMAND_FAILED', `chmod of ${guestPath} failed: ${tail(r.stderr, 3, 300)}`, {
              vm: name,
            });
          }
        }
      });
    },

    async getFile(name, guestPath) {
      const { record } = await requireRecord(name);
      const timeoutMs = record.spec.timeouts.execMs;
      return withAgent(name, timeoutMs, (qga) => guestGetFile(qga, guestPath, timeoutMs));
    },

    async probe(name, timeoutMs): Promise<ProbeResult> {
      const o = await observe(name);
      if (!o.exists) return { ready: false, detail: 'no such VM' };
      if (o.state.state !== 'running') {
        return { ready: false, detail: `process not running (${o.state.reason ?? o.state.state})` };
      }
      const started = performance.now();
      try {
        await sessions.run(o.paths.qgaSocket, lockPath(name, 'qga'), timeoutMs, (qga) =>
          qga.execute('guest-ping', undefined, Math.max(1, timeoutMs - (performance.now() - started))),
        );
        return { ready: true, detail: `agent answered in ${Math.round(performance.now() - started)} ms` };
      } catch (error) {
        const now = await observe(name);
        if (now.state.state !== 'running') {
          return { ready: false, detail: `process not running (${now.state.reason ?? 'crashed'})` };
        }
        if (isLocalVmError(error, 'TRANSIENT')) {
          const errno = error.details?.errno as string | undefined;
          return { ready: false, detail: `agent socket not accepting${errno ? ` (${errno})` : ''}` };
        }
        if (isLocalVmError(error, 'TIMEOUT') && error.details?.lock === undefined) {
          return { ready: false, detail: `no reply in ${timeoutMs}ms` };
        }
        return { ready: false, detail: (error as Error).message };
      }
    },

    async consoleTail(name, lines = 20) {
      const p = (await requireRecord(name)).record.paths;
      let fh;
      try {
        fh = await open(p.consoleLog, 'r');
      } catch {
        return '';
      }
      try {
        const size = (await fh.stat()).size;
        const length = Math.min(size, 64 * 1024);
        const buf = Buffer.alloc(length);
        await fh.read(buf, 0, length, size - length);
        return tail(buf.toString('utf8').replace(/\r/g, ''), lines, 16_000);
      } finally {
        await fh.close();
      }
    },

    async update(name, spec) {
      return lifecycle(name, 'update', async () => {
        const { record } = await requireRecord(name);
        await stopLocked(record);
        const stopped = (await readRecord(record.paths.record)) ?? record;
        const nextSpec: VmSpec = {
          ...stopped.spec,
          cpus: spec.cpus,
          memory: spec.memory,
          ports: spec.ports,
          isolated: spec.isolated,
          labels: spec.labels,
        };
        const next: VmRecord = { ...stopped, spec: nextSpec, fingerprint: specFingerprint(nextSpec) };
        await writeRecord(next);
        return startLocked(next);
      });
    },

    async qmp(name, command, args) {
      const { record } = await requireRunning(name);
      return qmpLocked(name, record.paths, command, args, 30_000);
    },
  };
}
