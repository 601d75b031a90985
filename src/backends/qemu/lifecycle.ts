/**
 * QEMU lifecycle: create, start, stop, restart, delete and update, each planned from what
 * is observed under the VM's lifecycle lock and then applied, so what `--dry-run` prints
 * (the same planners, without the lock and without probing KVM) is what runs.
 */
import { rm } from 'node:fs/promises';
import type { StopOptions, VmInfo } from '../../backend.js';
import { isLocalVmError } from '../../errors.js';
import type { PlanRequest } from '../../plan.js';
import { specFingerprint, type VmSpec } from '../../schema.js';
import { applySteps, type StepObserver } from './apply.js';
import type { QemuHost } from './host.js';
import { killHard, observe, requireRecord, toInfo } from './observe.js';
import { planCreate, planDelete, planRestart, planStart, planStop, type PlanMode, type QemuPlan } from './plan.js';
import { readPidFile, readRecord, removeStaleRuntime, writeRecord, type VmRecord } from './state.js';

const REAL: PlanMode = { probe: true };
// Backend.plan must write nothing: the KVM probe starts QEMU and caches its verdict.
const DRY: PlanMode = { probe: false };

export interface Lifecycle {
  /** The plan of `request` from what is observed now; by default for a dry run (no KVM probe). */
  plan(request: PlanRequest, mode?: PlanMode): Promise<QemuPlan>;
  create(spec: VmSpec): Promise<VmInfo>;
  start(name: string): Promise<VmInfo>;
  stop(name: string, options?: StopOptions): Promise<VmInfo>;
  restart(name: string): Promise<VmInfo>;
  delete(name: string): Promise<void>;
  update(name: string, spec: VmSpec): Promise<VmInfo>;
}

export function createLifecycle(host: QemuHost, onStep?: StepObserver): Lifecycle {
  const info = async (name: string) => toInfo(host, name, await observe(host, name));

  /** The plan of `request` from what is observed now. */
  async function plan(request: PlanRequest, mode: PlanMode = DRY): Promise<QemuPlan> {
    switch (request.operation) {
      case 'create':
        return planCreate(host, request.spec, mode);
      case 'delete':
        return planDelete(host, request.name);
      case 'start':
        return planStart(
          host,
          await requireRecord(host, request.name).then((r) => ({ ...r.o, record: r.record })),
          mode,
        );
      case 'stop':
        return planStop(await requireRecord(host, request.name).then((r) => ({ ...r.o, record: r.record })), request);
      case 'restart':
        return planRestart(
          host,
          await requireRecord(host, request.name).then((r) => ({ ...r.o, record: r.record })),
          mode,
        );
    }
  }

  async function run(request: PlanRequest & { name: string }, what: string): Promise<VmInfo> {
    return host.lifecycle(request.name, what, async () => {
      await applySteps(host, request.name, (await plan(request, REAL)).steps, onStep);
      return info(request.name);
    });
  }

  return {
    plan,

    async create(spec) {
      const name = spec.name;
      return host.lifecycle(name, 'create', async () => {
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
      });
    },

    start: (name) => run({ operation: 'start', name }, 'start'),
    stop: (name, options = {}) => run({ operation: 'stop', name, ...options }, 'stop'),
    restart: (name) => run({ operation: 'restart', name }, 'restart'),

    async delete(name) {
      await host.lifecycle(name, 'delete', async () => {
        await applySteps(host, name, (await planDelete(host, name)).steps, onStep);
      });
    },

    async update(name, spec) {
      return host.lifecycle(name, 'update', async () => {
        const { o, record } = await requireRecord(host, name);
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
        const now = await observe(host, name);
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
