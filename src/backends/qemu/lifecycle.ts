/**
 * QEMU lifecycle: create, start, stop, restart, delete and update, each planned from what
 * is observed under the VM's lifecycle lock and then applied, so what `--dry-run` prints
 * (the same planners, without the lock and without probing KVM) is what runs. Every
 * decision that removes or replaces a VM is taken on a look under that lock.
 */
import { rm, stat } from 'node:fs/promises';
import type { CreateOrAdoptResult, StopOptions, VmInfo } from '../../backend.js';
import { LocalVmError, isLocalVmError } from '../../errors.js';
import { probeProcess } from '../../host/proc.js';
import type { PlanRequest } from '../../plan.js';
import { specFingerprint, type VmSpec } from '../../schema.js';
import { applySteps, type StepObserver } from './apply.js';
import type { QemuHost } from './host.js';
import { killHard, observe, requireRecord, toInfo, type ObserveOptions, type Observed } from './observe.js';
import { planCreate, planDelete, planRestart, planStart, planStop, type PlanMode, type QemuPlan } from './plan.js';
import { mergeSnapshots, readDiskSnapshots } from './snapshot.js';
import {
  accelFromCmdline,
  completedRecord,
  readPidFile,
  readRecord,
  removeStaleRuntime,
  writeRecord,
  type VmRecord,
} from './state.js';

const REAL: PlanMode = { probe: true };
// Backend.plan must write nothing: the KVM probe starts QEMU and caches its verdict.
const DRY: PlanMode = { probe: false };
const LOCKED: ObserveOptions = { lockHeld: true };

export interface Lifecycle {
  /** The plan of `request` from what is observed now; by default for a dry run (no KVM probe). */
  plan(request: PlanRequest, mode?: PlanMode): Promise<QemuPlan>;
  create(spec: VmSpec): Promise<VmInfo>;
  createOrAdopt(spec: VmSpec, matches: (existing: VmInfo) => boolean): Promise<CreateOrAdoptResult>;
  start(name: string): Promise<VmInfo>;
  stop(name: string, options?: StopOptions): Promise<VmInfo>;
  restart(name: string): Promise<VmInfo>;
  delete(name: string): Promise<void>;
  update(name: string, spec: VmSpec): Promise<VmInfo>;
}

/**
 * Completes the record a launch did not get to write because its process was killed once
 * QEMU was up: a create (phase still `creating`, QEMU running or dead since) or a start
 * (QEMU running, the record still `stopped`). Written as the launch would have: ready,
 * meant to run, pid, accelerator, start time. Call it holding the lifecycle lock, on `o`
 * observed under it. Returns the look after it.
 */
export async function completeInterruptedLaunch(host: QemuHost, name: string, o: Observed): Promise<Observed> {
  const record = o.record;
  if (!record) return o;
  const running = o.state.state === 'running';
  const createCut = record.phase === 'creating' && (running || o.state.reason === 'crashed');
  const startCut = record.phase === 'ready' && running && (record.desiredState !== 'running' || !!record.stopReason);
  if (!createCut && !startCut) return o;
  const pid = running ? o.state.pid : undefined;
  const startedAt = running
    ? await stat(record.paths.pidFile).then(
        (s) => s.mtime.toISOString(),
        () => new Date().toISOString(),
      )
    : undefined;
  const accel = accelFromCmdline((await probeProcess(pid))?.cmdline);
  await writeRecord(completedRecord(record, { pid, accel, startedAt }));
  host.log(`${name}: completed the record an interrupted ${createCut ? 'create' : 'start'} left`);
  return observe(host, name, LOCKED);
}

/** Capability operations that put user data into a VM (the next create must not replace it). */
const ADDS_DATA = new Set(['disk add', 'snapshot create']);

/**
 * What a capability operation (disks, snapshots) does first, under the lifecycle lock: an
 * interrupted launch is completed, and one that adds data to a VM whose create failed is
 * refused, since the next create would replace that VM and what was added would be lost.
 */
export async function settleForCapability(host: QemuHost, name: string, what: string): Promise<void> {
  const o = await observe(host, name, LOCKED);
  if (!o.exists) return; // the operation says NOT_FOUND itself
  const now = await completeInterruptedLaunch(host, name, o);
  if (ADDS_DATA.has(what) && now.state.reason === 'create-failed') {
    throw new LocalVmError('CONFLICT', `VM ${name} was never fully created`, {
      vm: name,
      hint: `create it again (localvm create ${name}) or delete it (localvm delete ${name})`,
    });
  }
}

function specConflict(name: string, existing: VmInfo, spec: VmSpec): LocalVmError {
  return new LocalVmError('CONFLICT', `a VM named ${name} already exists with a different spec`, {
    vm: name,
    hint: `delete it first (localvm delete ${name}) or choose another name`,
    details: { existing: existing.fingerprint, wanted: specFingerprint(spec) },
  });
}

export function createLifecycle(host: QemuHost, onStep?: StepObserver): Lifecycle {
  const info = async (name: string) => toInfo(host, name, await observe(host, name));

  /** The plan of `request` from what is observed now (`locked`: under the lifecycle lock). */
  async function plan(request: PlanRequest, mode: PlanMode = DRY, locked: ObserveOptions = {}): Promise<QemuPlan> {
    const load = async (name: string) => requireRecord(host, name, locked).then((r) => ({ ...r.o, record: r.record }));
    switch (request.operation) {
      case 'create':
        return planCreate(host, request.spec, mode);
      case 'delete':
        return planDelete(host, request.name);
      case 'start':
        return planStart(host, await load(request.name), mode);
      case 'stop':
        return planStop(await load(request.name), request);
      case 'restart':
        return planRestart(host, await load(request.name), mode);
    }
  }

  /** Runs `request` under the lock, on a record completed first if a launch was interrupted. */
  async function run(request: PlanRequest & { name: string }, what: string): Promise<VmInfo> {
    return host.lifecycle(request.name, what, async () => {
      const o = await observe(host, request.name, LOCKED);
      if (o.exists) await completeInterruptedLaunch(host, request.name, o);
      await applySteps(host, request.name, (await plan(request, REAL, LOCKED)).steps, onStep);
      return info(request.name);
    });
  }

  /** Creates `spec` (lock held, no VM of that name seen). */
  async function createLocked(spec: VmSpec): Promise<VmInfo> {
    const name = spec.name;
    const created = await plan({ operation: 'create', spec }, REAL);
    try {
      await applySteps(host, name, created.steps, onStep);
      return await info(name);
    } catch (error) {
      const p = host.paths(name);
      const record = await readRecord(p.record).catch(() => undefined);
      if (!record) {
        // The plan saw no directory and we hold the lock: whatever is there is ours, and
        // without a record it is nothing a user could want back.
        if (!isLocalVmError(error, 'ALREADY_EXISTS')) await rm(p.dir, { recursive: true, force: true });
      } else {
        await killHard(name, await readPidFile(p.pidFile));
        await removeStaleRuntime(p);
        await writeRecord(markCreateFailed(record, error)).catch(() => undefined);
      }
      throw error;
    }
  }

  const deleteLocked = async (name: string) => applySteps(host, name, (await planDelete(host, name)).steps, onStep);

  /** CONFLICT when a half-created VM holds snapshots: removing it would lose them. */
  async function refuseIfItHoldsData(name: string, o: Observed): Promise<void> {
    if (!o.record) return;
    // An unreadable disk (a qemu-img create that was killed) holds nothing that could be saved.
    const disks = await readDiskSnapshots(host.runner, o.record).catch(() => []);
    const snapshots = mergeSnapshots(disks);
    if (snapshots.length > 0) {
      throw new LocalVmError('CONFLICT', `VM ${name} was never fully created but holds snapshots`, {
        vm: name,
        hint: `delete it first if it may go (localvm delete ${name})`,
        details: { snapshots: snapshots.map((s) => s.name) },
      });
    }
  }

  return {
    plan: (request, mode) => plan(request, mode),

    async create(spec) {
      return host.lifecycle(spec.name, 'create', () => createLocked(spec));
    },

    async createOrAdopt(spec, matches) {
      const name = spec.name;
      // Held as `create`, so a look from outside sees a VM directory without vm.json as `creating`.
      return host.lifecycle(name, 'create', async () => {
        let o = await observe(host, name, LOCKED);
        if (o.exists) o = await completeInterruptedLaunch(host, name, o);
        if (o.exists && (!o.record || o.state.reason === 'create-failed')) {
          // We hold the lock, so its creator is gone: nobody will finish it.
          await refuseIfItHoldsData(name, o);
          host.log(`${name}: removing a half-created VM`);
          await deleteLocked(name);
          o = await observe(host, name, LOCKED);
        }
        if (!o.exists) {
          try {
            return { info: await createLocked(spec), adopted: false };
          } catch (error) {
            // A failed create leaves nothing, removed under the same lock that made it.
            if (!isLocalVmError(error, 'ALREADY_EXISTS')) {
              await deleteLocked(name).catch((e: unknown) => host.log(`${name}: cleanup failed: ${String(e)}`));
            }
            throw error;
          }
        }
        const existing = toInfo(host, name, o);
        if (!matches(existing)) throw specConflict(name, existing, spec);
        if (o.state.state !== 'running') {
          await applySteps(host, name, (await plan({ operation: 'start', name }, REAL, LOCKED)).steps, onStep);
        }
        return { info: await info(name), adopted: true };
      });
    },

    start: (name) => run({ operation: 'start', name }, 'start'),
    stop: (name, options = {}) => run({ operation: 'stop', name, ...options }, 'stop'),
    restart: (name) => run({ operation: 'restart', name }, 'restart'),

    async delete(name) {
      await host.lifecycle(name, 'delete', () => deleteLocked(name));
    },

    async update(name, spec) {
      return host.lifecycle(name, 'update', async () => {
        const first = await requireRecord(host, name, LOCKED);
        const o = await completeInterruptedLaunch(host, name, first.o);
        const record = o.record ?? first.record;
        const s = record.spec;
        if (
          s.cpus === spec.cpus &&
          s.memory === spec.memory &&
          s.isolated === spec.isolated &&
          JSON.stringify(s.ports) === JSON.stringify(spec.ports)
        ) {
          // Only labels differ: metadata, written without a restart (the machine is unchanged).
          await writeRecord({ ...record, spec: { ...s, labels: spec.labels } });
          return info(name);
        }
        await applySteps(host, name, (await planStop({ ...o, record })).steps, onStep);
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
        const now = await observe(host, name, LOCKED);
        await applySteps(host, name, (await planStart(host, { ...now, record: next }, REAL)).steps, onStep);
        return info(name);
      });
    },
  };
}

function markCreateFailed(record: VmRecord, error: unknown): VmRecord {
  return {
    ...record,
    phase: 'ready',
    desiredState: 'stopped',
    stopReason: 'create-failed',
    pid: undefined,
    lastError: (error as Error).message,
  };
}
