/**
 * The pure half of the resources that live inside a guest, `VmCommand` and `VmFile`:
 * checking, diffing, and how a dependent tells that its VM is no longer the instance (or
 * the boot) it wrote into. No I/O.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { ENV_NAME_PATTERN } from '../schema.js';
import {
  checkWith,
  containsUnknown,
  plain,
  sameValue,
  withoutProviderKeys,
  type CheckOutcome,
  type DiffOutcome,
  type Props,
} from './props.js';

// --- Dependents of a VM -----------------------------------------------------------------

/** What a VmFile or VmCommand records of its VM: the instance and the boot it wrote into. */
export const VM_INSTANCE_KEYS = ['vmCreatedAt', 'vmBootedAt'] as const;

/** The instance outputs of a dependent, from the VM as observed now. */
export function vmInstanceOuts(info: { createdAt?: string | undefined; startedAt?: string | undefined }): Props {
  return plain({ vmCreatedAt: info.createdAt, vmBootedAt: info.startedAt });
}

/**
 * How the VM a dependent wrote into differs from the VM named `vm` now: `gone`,
 * `recreated` (another instance under the same name), `rebooted` (stopped or started
 * again since), or undefined when it is the same boot. Values a dependent never recorded
 * (state from before they existed) are not compared.
 */
export function vmInstanceDrift(
  recorded: Props,
  info: { createdAt?: string | undefined; startedAt?: string | undefined } | undefined,
): 'gone' | 'recreated' | 'rebooted' | undefined {
  if (!info) return 'gone';
  if (typeof recorded.vmCreatedAt === 'string' && info.createdAt && recorded.vmCreatedAt !== info.createdAt)
    return 'recreated';
  if (typeof recorded.vmBootedAt === 'string' && recorded.vmBootedAt !== info.startedAt) return 'rebooted';
  return undefined;
}

// --- VmCommand ------------------------------------------------------------------------

/** An argv array, or a string run as a shell script (`/bin/sh -c`). */
const commandSchema = z.union([z.array(z.string()).min(1, 'must name a command'), z.string().min(1)]);
export type CommandInput = z.infer<typeof commandSchema>;

export const vmCommandSchema = z
  .object({
    vm: z.string().min(1, 'must name a VM'),
    create: commandSchema,
    update: commandSchema.optional(),
    delete: commandSchema.optional(),
    triggers: z.array(z.unknown()).default([]),
    env: z.record(z.string().regex(ENV_NAME_PATTERN, 'must be a valid variable name'), z.string()).optional(),
    stdin: z.string().optional(),
    cwd: z
      .string()
      .refine((s) => s.startsWith('/'), 'must be an absolute path')
      .optional(),
    allowFailure: z.boolean().default(false),
    timeoutMs: z.number().int().positive().max(3_600_000).default(60_000),
    /** On a replace (triggers, vm), run the old `delete` before the new `create`. */
    deleteBeforeReplace: z.boolean().optional(),
  })
  .strict();
export type VmCommandInputs = z.output<typeof vmCommandSchema>;

export const COMMAND_OUTPUT_KEYS = ['stdout', 'stderr', 'exitCode', ...VM_INSTANCE_KEYS] as const;
/** Changing these re-runs the command (the `update` command, else `create`). */
export const COMMAND_RERUN_KEYS = ['create', 'update', 'env', 'stdin', 'cwd'] as const;
/** Changing these is stored only. */
export const COMMAND_METADATA_KEYS = [
  'delete',
  'allowFailure',
  'timeoutMs',
  'deleteBeforeReplace',
  'providerVersion',
] as const;
export const COMMAND_REPLACE_KEYS = ['vm', 'triggers'] as const;

const commandInput = (props: Props): Props => withoutProviderKeys(props, COMMAND_OUTPUT_KEYS);

export function checkVmCommand(news: Props): CheckOutcome {
  return checkWith(vmCommandSchema, vmCommandSchema.shape, news, commandInput);
}

export function vmCommandOf(props: Props): VmCommandInputs {
  return vmCommandSchema.parse(commandInput(props));
}

/**
 * `diff` for VmCommand. `drift` is how its VM changed since the command ran
 * (vmInstanceDrift): a new instance or boot lost what the command did, so it runs again.
 */
export function diffVmCommand(olds: Props, news: Props, drift?: string): DiffOutcome {
  const changed = (k: string) => containsUnknown(news[k]) || !sameValue(olds[k], news[k]);
  const replaces = COMMAND_REPLACE_KEYS.filter(changed);
  const updates: string[] = [...COMMAND_RERUN_KEYS, ...COMMAND_METADATA_KEYS].filter(changed);
  if (drift === 'recreated' || drift === 'rebooted') updates.push('vmBootedAt');
  return {
    changes: replaces.length + updates.length > 0,
    replaces,
    updates,
    deleteBeforeReplace: news.deleteBeforeReplace === true,
  };
}

/** True when an update must run the command again. */
export function commandUpdateReruns(updates: readonly string[]): boolean {
  return updates.some((k) => (COMMAND_RERUN_KEYS as readonly string[]).includes(k) || k === 'vmBootedAt');
}

// --- VmFile ---------------------------------------------------------------------------

export const vmFileSchema = z
  .object({
    vm: z.string().min(1, 'must name a VM'),
    path: z
      .string()
      .refine((s) => s.startsWith('/'), 'must be an absolute path')
      .refine((s) => !s.includes('\0'), 'must not contain NUL'),
    content: z.string().optional(),
    source: z.string().min(1).optional(),
    mode: z.number().int().min(0, 'must be 0-0o7777').max(0o7777, 'must be 0-0o7777').default(0o644),
    timeoutMs: z.number().int().positive().max(3_600_000).default(60_000),
  })
  .strict()
  .superRefine((f, ctx) => {
    if ((f.content === undefined) === (f.source === undefined))
      ctx.addIssue({ code: 'custom', path: ['content'], message: 'exactly one of content and source must be set' });
  });
export type VmFileInputs = z.output<typeof vmFileSchema>;

export const FILE_OUTPUT_KEYS = ['sha256', ...VM_INSTANCE_KEYS] as const;

const fileInput = (props: Props): Props => withoutProviderKeys(props, FILE_OUTPUT_KEYS);

export function checkVmFile(news: Props): CheckOutcome {
  return checkWith(vmFileSchema, vmFileSchema.shape, news, fileInput);
}

export function vmFileOf(props: Props): VmFileInputs {
  return vmFileSchema.parse(fileInput(props));
}

export function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Changing these writes the file again, in place (same id, same path). */
export const FILE_REWRITE_KEYS = ['content', 'source', 'vmBootedAt'] as const;

/**
 * `diff` for VmFile. Only another VM or path replaces it (the new file is written before
 * the old one is removed: they cannot collide); new content, a changed local source file
 * (`sourceSha256`, read by the caller) or a VM that lost the file (`drift`, see
 * vmInstanceDrift) write it again in place.
 */
export function diffVmFile(olds: Props, news: Props, sourceSha256?: string, drift?: string): DiffOutcome {
  const changed = (k: string) => containsUnknown(news[k]) || !sameValue(olds[k], news[k]);
  const replaces: string[] = ['vm', 'path'].filter(changed);
  const updates: string[] = ['content', 'source', 'mode', 'timeoutMs', 'providerVersion'].filter(changed);
  if (
    !updates.includes('source') &&
    typeof news.source === 'string' &&
    sourceSha256 !== undefined &&
    sourceSha256 !== olds.sha256
  )
    updates.push('source');
  if (drift === 'recreated' || drift === 'rebooted') updates.push('vmBootedAt');
  return { changes: replaces.length + updates.length > 0, replaces, updates, deleteBeforeReplace: false };
}

/** True when an update must write the file's bytes again (not only its mode). */
export function fileUpdateRewrites(updates: readonly string[]): boolean {
  return updates.some((k) => (FILE_REWRITE_KEYS as readonly string[]).includes(k));
}
