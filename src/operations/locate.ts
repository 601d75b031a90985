/** Finding which backend holds a VM: shared by the VM operations and the readiness wait. */
import type { Backend, VmInfo } from '../backend.js';
import { availableBackends, type OperationContext } from '../context.js';
import { LocalVmError, isLocalVmError } from '../errors.js';

/** The backend that owns the VM `name`, with its info; undefined when no backend knows it. */
export async function locate(
  name: string,
  ctx: OperationContext,
): Promise<{ backend: Backend; info: VmInfo } | undefined> {
  for (const backend of await availableBackends(ctx)) {
    try {
      return { backend, info: await backend.info(name) };
    } catch (error) {
      if (isLocalVmError(error, 'NOT_FOUND')) continue;
      throw error;
    }
  }
  return undefined;
}

export function notFound(name: string): LocalVmError {
  return new LocalVmError('NOT_FOUND', `no VM named ${name}`, {
    vm: name,
    hint: 'localvm list shows the VMs that exist',
  });
}
