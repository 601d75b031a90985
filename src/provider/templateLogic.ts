/**
 * The pure half of the `Template` resource: input checking and diffing. A template is a
 * frozen machine that clones map, so it is never changed in place: any change of what it
 * is (name, build spec, setup commands) replaces it.
 */
import { z } from 'zod';
import { argvSchema, vmNameSchema, vmSpecSchema } from '../schema.js';
import {
  UNKNOWN,
  checkWith,
  containsUnknown,
  sameValue,
  type CheckOutcome,
  type DiffOutcome,
  type Props,
} from './props.js';

/** The outputs a Template adds to its inputs (from `templateInfo`). */
export const TEMPLATE_OUTPUT_KEYS = ['sizeBytes', 'qemuVersion', 'memory', 'createdAt'] as const;

/** Changing one of these means another frozen machine: replace. */
export const TEMPLATE_REPLACE_KEYS = ['name', 'spec', 'setup'] as const;

/** The name the build VM's spec is checked under; the template's own name replaces it at create. */
const PLACEHOLDER_NAME = 'template-check';

/**
 * The build VM's spec: every VM spec field but `name` (the template's name is the VM's) and
 * `template` (a template is made from a boot). Checked with the VM spec schema, so its
 * failures carry the same property paths under `spec.`; kept as given (createTemplate
 * applies the defaults), so the stored and the new inputs compare like with like.
 */
const templateSpecSchema = z
  .record(z.string(), z.unknown(), 'must be an object of VM spec fields')
  .superRefine((spec, ctx) => {
    if (spec.name !== undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['name'],
        message: 'must not be set: the build VM is named after the template',
      });
    if (spec.template !== undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['template'],
        message: 'must not be set: a template is made from a boot, not from another template',
      });
    const r = vmSpecSchema.safeParse({ ...spec, name: PLACEHOLDER_NAME });
    if (r.success) return;
    for (const issue of r.error.issues) {
      if (issue.path[0] === 'name' || issue.path[0] === 'template') continue;
      ctx.addIssue({ code: 'custom', path: issue.path, message: issue.message });
    }
  });

export const templateInputSchema = z
  .object({
    name: vmNameSchema,
    spec: templateSpecSchema.default({}),
    /** Commands run in the build VM, in order, before it is frozen; each must exit 0. */
    setup: z.array(argvSchema).max(64, 'at most 64 commands').default([]),
  })
  .strict();
export type TemplateInputs = z.output<typeof templateInputSchema>;

/** The schema part of a Template's props (drops provider keys and outputs). */
function templateInput(props: Props): Props {
  return Object.fromEntries(
    Object.entries(props).filter(
      ([k, v]) => v !== undefined && (TEMPLATE_REPLACE_KEYS as readonly string[]).includes(k),
    ),
  );
}

/** `check` for Template: name, build spec and setup, failures as `{ property, reason }`; unknowns pass. */
export function checkTemplate(news: Props): CheckOutcome {
  return checkWith(templateInputSchema, templateInputSchema.shape, news, templateInput);
}

/** Parses props already accepted by `checkTemplate` into createTemplate's input. */
export function templateInputsOf(props: Props): TemplateInputs {
  return templateInputSchema.parse(templateInput(props));
}

/**
 * `diff` for Template: name, spec or setup changed (or unknown) replaces. The same name must
 * be deleted first (its clones with it: a clone's `template` input becomes unknown, so the
 * engine replaces them too); under another known name the new template is built first. A
 * new provider version is stored in place: rebuilding a template and every clone on an
 * upgrade of localvm would be a surprise.
 */
export function diffTemplate(olds: Props, news: Props): DiffOutcome {
  const changed = (key: string) => containsUnknown(news[key]) || !sameValue(olds[key], news[key]);
  const replaces = TEMPLATE_REPLACE_KEYS.filter(changed);
  const updates = replaces.length === 0 && changed('providerVersion') ? ['providerVersion'] : [];
  const renamed = replaces.includes('name') && typeof news.name === 'string' && news.name !== UNKNOWN;
  return { changes: replaces.length + updates.length > 0, replaces, updates, deleteBeforeReplace: !renamed };
}
