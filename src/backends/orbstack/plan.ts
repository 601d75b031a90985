/**
 * OrbStack plans: the `orbctl` commands create, start, stop, restart and delete run, from
 * the spec and the machine's current state. The backend executes these steps; `--dry-run`
 * prints them. User-data goes to a private temporary file whose path is only known when
 * the plan runs, so the planned argv names it `USER_DATA_FILE`.
 */
import type { Plan, PlanRequest, PlanStep } from '../../plan.js';
import type { VmInfo } from '../../backend.js';
import { DEFAULT_TIMEOUTS } from '../../schema.js';
import type { OrbctlBuilders } from './cmdline.js';
import { ORBSTACK_BACKEND } from './register.js';
import { orbCreatePlan } from './spec.js';

/** Stands for the temporary user-data file in a planned `orbctl create`. */
export const USER_DATA_FILE = '<temp>/user-data';

const LIFECYCLE_TIMEOUT_MS = 180_000;

export interface OrbStep extends PlanStep {
  /** How long the command may run; `graceful` failures fall back to `otherwise` instead of throwing. */
  run?: { timeoutMs?: number | undefined; graceful?: boolean | undefined; userData?: string | undefined };
  otherwise?: OrbStep[] | undefined;
}

const note = (summary: string): OrbStep => ({ summary });
const cmd = (command: OrbStep['command'] & object, run: OrbStep['run'] = {}): OrbStep => ({
  summary: [command.file, ...command.args].join(' '),
  command,
  run,
});

/**
 * The plan of `request`. `current` is the machine's info (undefined when it does not exist),
 * or `unobserved`: orbctl checks existence and state itself, so the real operations plan
 * without an extra `orbctl info` and let orbctl say NOT_FOUND; `--dry-run` observes first.
 * A create's spec is mapped onto OrbStack by orbCreatePlan, which refuses what it cannot do.
 */
export function planOrb(
  orb: OrbctlBuilders,
  request: PlanRequest,
  current: VmInfo | undefined | 'unobserved',
): Plan<OrbStep> {
  const plan = (vm: string, steps: OrbStep[]): Plan<OrbStep> => ({
    backend: ORBSTACK_BACKEND,
    operation: request.operation,
    vm,
    steps,
  });
  if (request.operation === 'create') {
    const spec = request.spec;
    const p = orbCreatePlan(spec);
    const image = p.version ? `${p.distro}:${p.version}` : p.distro;
    const hasUserData = spec.userData !== undefined;
    const steps: OrbStep[] = [
      cmd(
        orb.create({
          image,
          name: spec.name,
          arch: p.arch,
          user: p.user,
          ...(hasUserData ? { userDataFile: USER_DATA_FILE } : {}),
        }),
        { timeoutMs: spec.timeouts.createMs, userData: spec.userData },
      ),
    ];
    // Per-machine limits through `orbctl config set machine.NAME.KEY` are version-dependent
    // (older releases only have global limits); a release without them fails here loudly.
    if (p.cpus !== undefined) steps.push(cmd(orb.configSet(spec.name, 'cpu', p.cpus)));
    if (p.memoryMib !== undefined) steps.push(cmd(orb.configSet(spec.name, 'memory_mib', p.memoryMib)));
    if (p.diskBytes !== undefined) steps.push(cmd(orb.configSet(spec.name, 'disk_bytes', p.diskBytes)));
    return plan(spec.name, steps);
  }
  const name = request.name;
  if (!current) return plan(name, [note(`${name} does not exist: nothing to do`)]);
  const state = current === 'unobserved' ? 'unknown' : current.state;
  switch (request.operation) {
    case 'start':
      return plan(
        name,
        state === 'running'
          ? [note(`${name} is running: nothing to do`)]
          : [cmd(orb.start(name), { timeoutMs: LIFECYCLE_TIMEOUT_MS })],
      );
    case 'stop': {
      if (state === 'stopped') return plan(name, [note(`${name} is stopped: nothing to do`)]);
      const forced = cmd(orb.stop(name, { force: true }), { timeoutMs: LIFECYCLE_TIMEOUT_MS });
      if (request.force) return plan(name, [forced]);
      const graceful = cmd(orb.stop(name), { timeoutMs: request.timeoutMs ?? DEFAULT_TIMEOUTS.stopMs, graceful: true });
      return plan(name, [{ ...graceful, otherwise: [forced] }]);
    }
    case 'restart':
      return plan(name, [cmd(orb.restart(name), { timeoutMs: LIFECYCLE_TIMEOUT_MS })]);
    case 'delete':
      return plan(name, [cmd(orb.delete(name, { force: true }), { timeoutMs: LIFECYCLE_TIMEOUT_MS })]);
  }
}
