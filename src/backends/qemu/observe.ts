/**
 * Reading a QEMU VM's state: its record reconciled with the live process, as VmInfo. Never
 * writes. Also the waits and kills that act on what was observed.
 */
import type { VmInfo } from '../../backend.js';
import { isLocalVmError, LocalVmError } from '../../errors.js';
import { poll } from '../../time/poll.js';
import { stat } from 'node:fs/promises';
import { exists } from '../../host/fs.js';
import { probeProcess } from '../../host/proc.js';
import type { QemuHost } from './host.js';
import { holderAlive, readLockHolder } from '../../host/lock.js';
import { QEMU_BACKEND } from './register.js';
import {
  isLiveQemu,
  readPidFile,
  readRecord,
  reconcile,
  type Reconciled,
  type VmPaths,
  type VmRecord,
} from './state.js';

export interface Observed {
  record: VmRecord | undefined;
  paths: VmPaths;
  exists: boolean;
  state: Reconciled;
}

/**
 * Whose look this is. `lockHeld`: the caller holds the VM's lifecycle lock, so no other
 * creator can be at work (the lock's holder is the caller itself, whatever it is doing).
 */
export interface ObserveOptions {
  lockHeld?: boolean | undefined;
}

/** True when a live process holds the VM's lifecycle lock for a create. */
async function createInProgress(host: QemuHost, name: string): Promise<boolean> {
  const holder = await readLockHolder(host.lockPath(name, 'lifecycle'));
  return holder?.what === 'create' && (await holderAlive(holder));
}

/** True when QEMU ran for the VM: its pidfile (left by a QEMU that died hard) or console output is there. */
async function everLaunched(p: VmPaths): Promise<boolean> {
  if ((await readPidFile(p.pidFile)) !== undefined) return true;
  const consoleLog = await stat(p.consoleLog).catch(() => undefined);
  return (consoleLog?.size ?? 0) > 0;
}

/** Reads the record and the process behind it; never writes. */
export async function observe(host: QemuHost, name: string, options: ObserveOptions = {}): Promise<Observed> {
  const p = host.paths(name);
  const record = await readRecord(p.record);
  if (!record) {
    const present = await exists(p.dir);
    const pid = await readPidFile(p.pidFile);
    const running = isLiveQemu(await probeProcess(pid), name);
    // A directory without vm.json: a create between its mkdir and its first write (while its
    // creator holds the lock), or one that died there.
    let state: Reconciled = running ? { state: 'running', pid } : { state: 'stopped', reason: 'create-failed' };
    if (!running && present && !options.lockHeld && (await createInProgress(host, name))) state = { state: 'creating' };
    return { record, paths: p, exists: present, state };
  }
  const pid = (await readPidFile(record.paths.pidFile)) ?? record.pid;
  const proc = await probeProcess(pid);
  let creatorAlive = false;
  let launched = false;
  if (record.phase === 'creating' && !isLiveQemu(proc, name)) {
    creatorAlive = !options.lockHeld && (await createInProgress(host, name));
    launched = !creatorAlive && (await everLaunched(record.paths));
  }
  return { record, paths: record.paths, exists: true, state: reconcile(record, proc, creatorAlive, launched) };
}

export function toInfo(host: QemuHost, name: string, o: Observed): VmInfo {
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
    arch: r?.arch ?? host.hostArch,
    cpus: r?.spec.cpus ?? 0,
    memory: r?.spec.memory ?? 0,
    labels: r?.spec.labels ?? {},
    fingerprint: r?.fingerprint,
    spec: r?.spec,
    createdAt: r?.createdAt,
    startedAt,
    uptimeMs: startedAt ? Math.max(0, Date.now() - Date.parse(startedAt)) : undefined,
    lastError: r?.lastError,
    ...(r?.ssh
      ? {
          ssh: { host: '127.0.0.1', port: r.ssh.port, user: r.ssh.user },
          transport: r.spec.transport && r.spec.transport !== 'auto' ? r.spec.transport : (r.transport ?? 'auto'),
        }
      : {}),
  };
}

export function notFound(name: string): LocalVmError {
  return new LocalVmError('NOT_FOUND', `no QEMU VM named ${name}`, {
    vm: name,
    hint: 'see `localvm list` for the VMs that exist',
  });
}

/** The VM's record; NOT_FOUND when there is no VM, CONFLICT when its create never wrote one. */
export async function requireRecord(
  host: QemuHost,
  name: string,
  options: ObserveOptions = {},
): Promise<{ o: Observed; record: VmRecord }> {
  const o = await observe(host, name, options);
  if (!o.exists) throw notFound(name);
  if (!o.record) {
    throw new LocalVmError('CONFLICT', `VM ${name} was never fully created`, {
      vm: name,
      hint: `delete it: localvm delete ${name}`,
    });
  }
  return { o, record: o.record };
}

/** As requireRecord, and CONFLICT unless QEMU runs. */
export async function requireRunning(host: QemuHost, name: string): Promise<{ o: Observed; record: VmRecord }> {
  const found = await requireRecord(host, name);
  if (found.o.state.state !== 'running') {
    const { state, reason } = found.o.state;
    throw new LocalVmError('CONFLICT', `VM ${name} is not running (${state}${reason ? `, ${reason}` : ''})`, {
      vm: name,
      hint: `start it: localvm start ${name}`,
    });
  }
  return found;
}

/** Waits until QEMU `pid` of VM `name` is gone (or a zombie); false at the timeout. */
export async function waitGone(name: string, pid: number | undefined, timeoutMs: number): Promise<boolean> {
  const gone = async () => (!isLiveQemu(await probeProcess(pid), name) ? true : undefined);
  return poll(gone, { what: `QEMU ${pid} of ${name} to exit`, timeoutMs, initialMs: 2, maxMs: 50 }).catch(
    (error: unknown) => {
      if (isLocalVmError(error, 'TIMEOUT')) return false;
      throw error;
    },
  );
}

/** SIGKILLs QEMU `pid` if it is still VM `name`'s, and waits until it is gone. */
export async function killHard(name: string, pid: number | undefined): Promise<void> {
  if (pid === undefined || !isLiveQemu(await probeProcess(pid), name)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  await waitGone(name, pid, 5_000);
}
