/**
 * `--dry-run` for every state-changing operation: the plan the backend would execute, from
 * read-only observations. The backend's own planner makes it, the same one its operation
 * runs, so what is printed is what would run.
 */
import { withDefaults, resolveBackend, type OperationContext } from '../context.js';
import type { Plan, PlanOperation } from '../plan.js';
import { parseVmName, parseVmSpec, type VmSpecInput } from '../schema.js';
import { backendOf } from './vm.js';
import { isLocalVmError } from '../errors.js';

type Ctx = Partial<OperationContext> | undefined;

/** What creating `input` would do. VALIDATION/ALREADY_EXISTS/NOT_FOUND as the create would say. */
export async function planCreateVm(input: VmSpecInput, ctx?: Ctx): Promise<Plan> {
  const spec = parseVmSpec(input);
  const c = withDefaults(ctx);
  const { backend } = await resolveBackend(spec.backend, c, spec.image, spec);
  return backend.plan({ operation: 'create', spec });
}

/**
 * What `operation` would do to the existing VM `name`. A missing VM is NOT_FOUND, except for
 * delete, which succeeds on a missing VM and so plans nothing.
 */
export async function planVmOperation(
  operation: Exclude<PlanOperation, 'create'>,
  name: string,
  options: { force?: boolean | undefined; timeoutMs?: number | undefined } = {},
  ctx?: Ctx,
): Promise<Plan> {
  const vm = parseVmName(name);
  const c = withDefaults(ctx);
  let backend;
  try {
    backend = await backendOf(vm, c);
  } catch (error) {
    if (operation === 'delete' && isLocalVmError(error, 'NOT_FOUND')) {
      return { backend: 'none', operation, vm, steps: [{ summary: `${vm} does not exist: nothing to do` }] };
    }
    throw error;
  }
  return operation === 'stop'
    ? backend.plan({ operation, name: vm, force: options.force, timeoutMs: options.timeoutMs })
    : backend.plan({ operation, name: vm });
}
