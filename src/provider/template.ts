/**
 * The I/O half of the `Template` resource: check, diff, create, read, update and delete,
 * called by the serialized provider (providers.ts) inside the provider host. A template is
 * built once and never changed: any change replaces it (templateLogic.ts).
 */
import { LocalVmError, isLocalVmError, unlessNotFound } from '../errors.js';
import {
  createTemplate,
  deleteTemplate,
  templateInfo,
  type CreateTemplateInput,
  type TemplateInfo,
} from '../operations/template.js';
import { checkTemplate, diffTemplate, plain, templateInputsOf, type Props } from './logic.js';
import {
  guarded,
  toCheckReply,
  toDiffReply,
  warn,
  type CheckReply,
  type Ctx,
  type CreateReply,
  type DiffReply,
  type ReadReply,
  type UpdateReply,
} from './shared.js';

/** Outputs of a Template: its checked inputs and what the frozen template is. */
function templateOuts(inputs: Props, info: TemplateInfo): Props {
  return plain({
    ...inputs,
    name: info.name,
    sizeBytes: info.sizeBytes,
    qemuVersion: info.qemuVersion,
    memory: info.memory,
    createdAt: info.createdAt,
  });
}

/** The template as it is now; undefined when there is none. */
async function findTemplate(name: string, ctx: Ctx): Promise<TemplateInfo | undefined> {
  return unlessNotFound(templateInfo(name, ctx));
}

export async function templateCheck(_olds: Props, news: Props): Promise<CheckReply> {
  return toCheckReply(checkTemplate(news));
}

export async function templateDiff(_id: string, olds: Props, news: Props): Promise<DiffReply> {
  return toDiffReply(diffTemplate(olds, news), ['name']);
}

/**
 * `create` for Template: createTemplate boots the build VM, runs `setup` and freezes it,
 * bounded by the build spec's own ready and exec timeouts; a failure leaves nothing behind,
 * so there is no partial create to report.
 */
export async function templateCreate(inputs: Props, ctx?: Ctx): Promise<CreateReply> {
  return guarded(async () => {
    const t = templateInputsOf(inputs);
    try {
      const info = await createTemplate(
        { name: t.name, spec: t.spec as CreateTemplateInput['spec'], setup: t.setup },
        ctx,
      );
      return { id: t.name, outs: templateOuts(inputs, info) };
    } catch (error) {
      if (!isLocalVmError(error, 'ALREADY_EXISTS')) throw error;
      throw new LocalVmError('ALREADY_EXISTS', `template ${t.name} exists already`, {
        hint:
          'another stack, or `localvm template create`, made a template of that name: choose another name, ' +
          `or delete it first (localvm template delete ${t.name})`,
        cause: error,
      });
    }
  });
}

/** `read` for Template (refresh): a template deleted out of band returns no id, so the engine drops it. */
export async function templateRead(id: string, props: Props, ctx?: Ctx): Promise<ReadReply> {
  return guarded(async () => {
    const info = await findTemplate(id, ctx);
    return info ? { id, props: templateOuts(props, info) } : {};
  });
}

/** `update` for Template: only the provider version changes in place (stored, so delete runs the new code). */
export async function templateUpdate(id: string, _olds: Props, news: Props, ctx?: Ctx): Promise<UpdateReply> {
  return guarded(async () => {
    const info = await templateInfo(id, ctx);
    return { outs: templateOuts(news, info) };
  });
}

/**
 * `delete` for Template. Idempotent: a template already gone is success. One rebuilt under
 * the same name since this resource made it (another `createdAt`) is not ours and is left.
 * While clones use it, CONFLICT: a clone maps the template's RAM file. Pulumi deletes the
 * clones first when their `template` input is this resource's output (`template: tpl.name`).
 */
export async function templateDelete(id: string, props: Props, ctx?: Ctx): Promise<void> {
  return guarded(async () => {
    const current = await findTemplate(id, ctx);
    if (!current) return;
    if (typeof props.createdAt === 'string' && current.createdAt !== props.createdAt) {
      warn(`left template ${id} in place: it was rebuilt at ${current.createdAt}, after this resource made it`);
      return;
    }
    try {
      await deleteTemplate(id, ctx);
    } catch (error) {
      if (!isLocalVmError(error, 'CONFLICT')) throw error;
      throw new LocalVmError('CONFLICT', error.message, {
        hint:
          `${error.hint ?? 'delete its clones first'}; in a Pulumi program pass the Template's output to each clone ` +
          '(`template: tpl.name`), so Pulumi deletes the clones before the template',
        details: error.details,
        cause: error,
      });
    }
  });
}
