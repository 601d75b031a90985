/**
 * Held clones: a clone restored and kept paused (no `cont`), so it costs memory and no CPU,
 * and `resume` makes it a running, personalised VM that has answered through its agent.
 * What a warm pool keeps idle (src/pool/). Both are planned and applied like every other
 * operation: create is the clone plan with `hold: true`, resume is `cont` + personalise.
 *
 * A resumed clone gets its clock and hostname, and keeps its template's MAC: every VM has
 * its own user-mode network (slirp), where no other machine sees the MAC, and changing it
 * is the slowest part of the personalisation (the virtio-net control queue, ~130 ms under
 * TCG), paid on every acquire. `createVm({ template })` clones do get their own MAC.
 */
import { LocalVmError } from '../../../errors.js';
import type { VmInfo } from '../../../backend.js';
import type { VmSpec } from '../../../schema.js';
import { applySteps } from '../apply.js';
import type { QemuHost } from '../host.js';
import { requireRecord, toInfo, observe } from '../observe.js';
import type { PlanMode, QemuPlan } from '../plan.js';
import { QEMU_BACKEND } from '../register.js';
import { planCloneCreate, personalizeStep } from './clonePlan.js';

const REAL: PlanMode = { probe: true };
const LOCKED = { lockHeld: true };
import { discardClone } from './restore.js';

/** A backend that can keep clones paused and resume them (QEMU). */
export interface HoldCapable {
  /** Creates clone `spec` of `spec.template`, restored and paused. On failure nothing of it is left. */
  createHeld(spec: VmSpec & { template: string }): Promise<VmInfo>;
  /**
   * Runs a held clone: `cont`, then clock and hostname in one guest process; resolves
   * once its agent has answered. A failed resume removes the clone (it is unusable).
   */
  resume(name: string): Promise<void>;
}

/** True when `b` has held clones. */
export function isHoldCapable(b: object): b is HoldCapable {
  const h = b as Partial<HoldCapable>;
  return typeof h.createHeld === 'function' && typeof h.resume === 'function';
}

/** The plan of resuming held clone `name` (read-only: the record as it is). */
export async function planResume(host: QemuHost, name: string, lockHeld = false): Promise<QemuPlan> {
  const { record } = await requireRecord(host, name, { lockHeld });
  if (record.template?.role !== 'clone') {
    throw new LocalVmError('CONFLICT', `VM ${name} is not a clone of a template: it cannot be resumed`, { vm: name });
  }
  return {
    backend: QEMU_BACKEND,
    operation: 'start',
    vm: name,
    steps: [
      {
        summary: `open its agent connection, then QMP cont: run the held clone ${name}`,
        action: { kind: 'resume', record },
      },
      personalizeStep(record, name, { mac: false, held: true }),
    ],
  };
}

export function createHoldOps(host: QemuHost): HoldCapable {
  return {
    async createHeld(spec) {
      return host.lifecycle(spec.name, 'create', async () => {
        const plan = await planCloneCreate(host, spec, REAL, { hold: true });
        try {
          await applySteps(host, spec.name, plan.steps);
        } catch (error) {
          // A held clone is nobody's data yet: whatever part of it exists goes.
          if (!(error instanceof LocalVmError && error.code === 'ALREADY_EXISTS')) {
            const r = await requireRecord(host, spec.name, LOCKED).catch(() => undefined);
            if (r) await discardClone(host, r.record);
          }
          throw error;
        }
        return toInfo(host, spec.name, await observe(host, spec.name, LOCKED));
      });
    },

    async resume(name) {
      await host.lifecycle(name, 'resume', async () => {
        await applySteps(host, name, (await planResume(host, name, true)).steps);
      });
    },
  };
}
