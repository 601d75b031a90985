/**
 * Templates: a VM booted once, made ready, and frozen (RAM file, device state, read-only
 * disks), so that `createVm({ name, template })` restores a copy in a fraction of a boot.
 * Validated here, at the boundary; the backend that has templates (QEMU) does the work.
 */
import { z } from 'zod';
import type { Backend } from '../backend.js';
import { availableBackends, withDefaults, type OperationContext } from '../context.js';
import { LocalVmError } from '../errors.js';
import { argvSchema, parseOrThrow, parseVmSpec, vmNameSchema, type VmSpecInput } from '../schema.js';
import type { TemplateCapable, TemplateInfo } from '../backends/qemu/template/ops.js';

export type { TemplateInfo } from '../backends/qemu/template/ops.js';

type Ctx = Partial<OperationContext> | undefined;

export interface CreateTemplateInput {
  /** Template name: the VM name pattern (a-z, 0-9, "-"). */
  name: string;
  /** The VM to boot and freeze (its `name` is the template's). Default: the `tiny` guest. */
  spec?: Omit<VmSpecInput, 'name'> & { name?: string };
  /**
   * Instead of `spec`: a running, ready QEMU VM to freeze as it is. Its RAM and device state
   * become the template's and its disks the template's read-only backing files; the VM then
   * continues as the template's first clone (same name, ports, labels and guest state).
   */
  from?: string;
  /** Commands run in the guest, in order, after it answers and before it is frozen; each must exit 0. */
  setup?: string[][];
}

const createTemplateSchema = z
  .object({
    name: vmNameSchema,
    spec: z.record(z.string(), z.unknown()).optional(),
    setup: z.array(argvSchema).max(64).default([]),
    from: vmNameSchema.optional(),
  })
  .strict()
  .refine((t) => t.from === undefined || t.spec === undefined, {
    path: ['from'],
    message: 'give either spec (boot a new VM) or from (freeze a running one), not both',
  });

async function templateBackend(ctx: Ctx): Promise<Backend & TemplateCapable> {
  for (const b of await availableBackends(withDefaults(ctx))) {
    if (typeof (b as Partial<TemplateCapable>).templateCreate === 'function') return b as Backend & TemplateCapable;
  }
  throw new LocalVmError('UNSUPPORTED', 'no available backend supports templates', {
    hint: 'templates need the QEMU backend',
  });
}

const parseName = (name: unknown) => parseOrThrow(z.object({ name: vmNameSchema }), { name }, 'template name').name;

/**
 * Boots `spec`, waits for its agent, runs `setup`, and freezes it as template `name`; or,
 * with `from`, runs `setup` in that running VM and freezes it (it continues as a clone).
 * ALREADY_EXISTS when the template exists; on any failure nothing of it is left (and a
 * `from` VM is resumed as it was).
 */
export async function createTemplate(input: CreateTemplateInput, ctx?: Ctx): Promise<TemplateInfo> {
  const parsed = parseOrThrow(createTemplateSchema, input, 'template');
  if (parsed.from !== undefined) {
    const backend = await templateBackend(ctx);
    if (!backend.templateCreateFrom)
      throw new LocalVmError('UNSUPPORTED', `backend ${backend.name} cannot freeze a running VM as a template`);
    return backend.templateCreateFrom({ name: parsed.name, from: parsed.from, setup: parsed.setup });
  }
  const spec = parseVmSpec({ ...parsed.spec, name: parsed.name });
  if (spec.template !== undefined) {
    throw new LocalVmError('VALIDATION', 'a template is made from a boot, not from another template', {
      issues: [{ property: 'spec.template', reason: 'must not be set' }],
    });
  }
  return (await templateBackend(ctx)).templateCreate({ name: parsed.name, spec, setup: parsed.setup });
}

/** Every template: size on disk, source spec, QEMU version, the clones using it. */
export async function listTemplates(ctx?: Ctx): Promise<TemplateInfo[]> {
  return (await templateBackend(ctx)).templateList();
}

/** One template; NOT_FOUND when there is none. */
export async function templateInfo(name: string, ctx?: Ctx): Promise<TemplateInfo> {
  return (await templateBackend(ctx)).templateInfo(parseName(name));
}

/**
 * Deletes template `name`. CONFLICT while clones use it (they map its RAM file); a missing
 * template is `deleted: false`.
 */
export async function deleteTemplate(name: string, ctx?: Ctx): Promise<{ deleted: boolean }> {
  return (await templateBackend(ctx)).templateDelete(parseName(name));
}
