/**
 * The seam between a pool and the VMs it keeps: template pools hold clones paused and resume
 * them (a backend with HoldCapable: QEMU); spec pools boot VMs and keep them running.
 */
import type { Backend } from '../backend.js';
import { isHoldCapable, type HoldCapable } from '../backends/qemu/template/hold.js';
import type { TemplateCapable } from '../backends/qemu/template/ops.js';
import { Connector } from '../connector.js';
import { availableBackends, resolveBackend, type OperationContext } from '../context.js';
import { LocalVmError } from '../errors.js';
import { deleteVm, waitForVmReady } from '../operations/vm.js';
import { parseVmSpec } from '../schema.js';
import { OWNED_KEEP_OPEN_MS } from '../transport.js';

export interface PoolDriver {
  /** True when idle VMs are held paused, so `resume` runs them. */
  readonly holds: boolean;
  /** The longest making one VM may take before `create` itself fails: the spec's createMs + readyMs. */
  readonly makeMs: number;
  /** Makes VM `name` ready to hand out: a held clone, or a booted VM that answered. Leaves nothing on failure. */
  create(name: string): Promise<void>;
  /** Makes `name` run and answer through its agent; a failure leaves it unusable (destroy it). */
  resume(name: string): Promise<void>;
  /** Removes `name`, whatever state it is in; a missing VM is fine. */
  destroy(name: string): Promise<void>;
  connector(name: string): Connector;
}

/** The probe a running VM of a spec pool must pass before it is handed out. */
const ANSWER_MS = 10_000;

/** The driver for a pool of clones of `template` or VMs of `spec`. UNSUPPORTED when no backend can hold clones. */
export async function poolDriver(
  source: { template?: string | undefined; spec?: Record<string, unknown> | undefined },
  ctx: OperationContext,
): Promise<PoolDriver> {
  if (source.template !== undefined) {
    const template = source.template;
    const backend = (await availableBackends(ctx)).find(isHoldCapable) as (Backend & HoldCapable) | undefined;
    if (!backend) {
      throw new LocalVmError('UNSUPPORTED', 'no available backend can hold template clones', {
        hint: 'template pools need the QEMU backend; use `spec` for a pool of booted VMs',
      });
    }
    // An unknown template is NOT_FOUND now, not a stream of failed clones later.
    const lister = backend as Partial<TemplateCapable>;
    if (typeof lister.templateInfo === 'function') await lister.templateInfo(template);
    const { timeouts } = parseVmSpec({ name: 'pool-probe', template });
    return {
      holds: true,
      makeMs: timeouts.createMs + timeouts.readyMs,
      create: async (name) => {
        await backend.createHeld({ ...parseVmSpec({ name, template }), template });
      },
      resume: async (name) => {
        await backend.resume(name);
        await backend.guest(name).keepOpen?.(OWNED_KEEP_OPEN_MS);
      },
      destroy: async (name) => {
        await deleteVm(name, ctx);
      },
      connector: (name) => new Connector(name, backend),
    };
  }
  const spec = source.spec ?? {};
  const probe = parseVmSpec({ ...spec, name: 'pool-probe' });
  const { backend } = await resolveBackend(probe.backend, ctx, probe.image);
  return {
    holds: false,
    makeMs: probe.timeouts.createMs + probe.timeouts.readyMs,
    create: async (name) => {
      try {
        await backend.create(parseVmSpec({ ...spec, name }));
        await waitForVmReady(name, {}, ctx);
      } catch (error) {
        await deleteVm(name, ctx).catch(() => undefined);
        throw error;
      }
    },
    resume: async (name) => {
      const r = await backend.guest(name).probe(ANSWER_MS);
      if (!r.ready)
        throw new LocalVmError('COMMAND_FAILED', `pool VM ${name} did not answer: ${r.detail}`, { vm: name });
      await backend.guest(name).keepOpen?.(OWNED_KEEP_OPEN_MS);
    },
    destroy: async (name) => {
      await deleteVm(name, ctx);
    },
    connector: (name) => new Connector(name, backend),
  };
}
