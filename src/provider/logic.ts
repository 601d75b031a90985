/**
 * The pure half of the Pulumi provider: input checking and diffing for `Vm`, `VmCommand`
 * and `VmFile`. No I/O, no environment; the provider host calls these through `impl.ts`.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { ValidationIssue } from '../errors.js';
import { ENV_NAME_PATTERN, parseVmSpec, toIssues, vmSpecSchema, type VmSpec } from '../schema.js';

/** The value the engine sends for an input it does not know yet (during preview). */
export const UNKNOWN = '04da6b54-80e4-46f7-96ec-b56ff0331ba9';

/** Keys the provider adds to inputs that are not part of any schema. */
const PROVIDER_KEYS = new Set(['__provider', 'providerVersion']);

export type Props = Record<string, unknown>;

export interface CheckOutcome {
  inputs: Props;
  failures: ValidationIssue[];
}

export interface DiffOutcome {
  changes: boolean;
  replaces: string[];
  /** Keys that changed and can be applied in place. */
  updates: string[];
  deleteBeforeReplace: boolean;
}

/** Dotted paths (`ports.0.host`) of every unknown value inside `value`. */
export function unknownPaths(value: unknown, prefix: string[] = []): string[] {
  if (value === UNKNOWN) return [prefix.join('.')];
  if (Array.isArray(value)) return value.flatMap((v, i) => unknownPaths(v, [...prefix, String(i)]));
  if (value !== null && typeof value === 'object')
    return Object.entries(value).flatMap(([k, v]) => unknownPaths(v, [...prefix, k]));
  return [];
}

/** True when `value` holds the unknown sentinel anywhere. */
export function containsUnknown(value: unknown): boolean {
  return unknownPaths(value).length > 0;
}

/** A JSON copy without `undefined` keys (protobuf Structs reject them). */
export function plain<T>(value: T): T {
  return value === undefined ? value : (JSON.parse(JSON.stringify(value)) as T);
}

/** Key-order-independent JSON, so values that went through a protobuf Struct compare equal. */
export function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

function sameValue(a: unknown, b: unknown): boolean {
  return stableJson(a) === stableJson(b);
}

function withoutProviderKeys(props: Props): Props {
  return Object.fromEntries(Object.entries(props).filter(([k, v]) => !PROVIDER_KEYS.has(k) && v !== undefined));
}

/**
 * Validates `input` with `schema`. Issues about a value that is (or is inside) an unknown
 * are dropped: preview must pass when inputs depend on resources not created yet. Known
 * inputs come back normalised (defaults applied) so that diffs compare like with like.
 */
function checkWith(schema: z.ZodType, news: Props, pick: (p: Props) => Props): CheckOutcome {
  const input = pick(news);
  const unknown = unknownPaths(input);
  const result = schema.safeParse(input);
  const passthrough = Object.fromEntries(Object.entries(news).filter(([k]) => PROVIDER_KEYS.has(k)));
  if (result.success) {
    return { inputs: plain({ ...(result.data as Props), ...passthrough }), failures: [] };
  }
  const failures = toIssues(result.error).filter(
    (issue) =>
      !unknown.some(
        (u) => issue.property === u || issue.property.startsWith(`${u}.`) || u.startsWith(`${issue.property}.`),
      ),
  );
  return { inputs: plain(news), failures };
}

// --- Vm -------------------------------------------------------------------------------

/** The outputs a Vm adds to its inputs; never part of the spec. */
export const VM_OUTPUT_KEYS = ['state', 'ip4', 'fingerprint'] as const;

/** Changing one of these means a different machine: delete, then create (the name is the identity). */
export const VM_REPLACE_KEYS = [
  'name',
  'backend',
  'image',
  'kernel',
  'initrd',
  'append',
  'arch',
  'accel',
  'diskSize',
  'disks',
  'user',
  'userData',
  'isolated',
] as const;

/** Applied in place by `updateVm` (stop, change, start). */
export const VM_UPDATE_KEYS = ['cpus', 'memory', 'ports'] as const;

/** Stored only: changing them never touches the VM. */
export const VM_METADATA_KEYS = ['labels', 'readiness', 'timeouts', 'providerVersion'] as const;

/** The spec part of a Vm's props (drops provider keys and outputs). */
export function vmSpecInput(props: Props): Props {
  const spec = withoutProviderKeys(props);
  for (const k of VM_OUTPUT_KEYS) delete spec[k];
  return spec;
}

/** `check` for Vm: the VM spec schema, failures as `{ property, reason }`. */
export function checkVm(news: Props): CheckOutcome {
  return checkWith(vmSpecSchema, news, vmSpecInput);
}

/** Parses props already accepted by `checkVm` into a full spec. */
export function vmSpecOf(props: Props): VmSpec {
  return parseVmSpec(vmSpecInput(props));
}

/** Backend and accelerator inputs may say `auto`; the state holds what `auto` became. */
function autoMatches(key: string, newValue: unknown): boolean {
  return (key === 'backend' || key === 'accel') && (newValue === 'auto' || newValue === undefined);
}

/**
 * `diff` for Vm. `olds` are the stored outputs (inputs as checked + computed fields),
 * `news` the checked new inputs. An unknown new value counts as a change.
 */
export function diffVm(olds: Props, news: Props): DiffOutcome {
  const changed = (key: string): boolean => {
    const n = news[key];
    if (containsUnknown(n)) return true;
    if (autoMatches(key, n)) return false;
    return !sameValue(olds[key], n);
  };
  const replaces = VM_REPLACE_KEYS.filter(changed);
  const updates = [...VM_UPDATE_KEYS, ...VM_METADATA_KEYS].filter(changed);
  return {
    changes: replaces.length + updates.length > 0,
    replaces,
    updates,
    deleteBeforeReplace: true,
  };
}

/** True when an update must change the machine itself (not only stored metadata). */
export function vmUpdateTouchesMachine(updates: readonly string[]): boolean {
  return updates.some((k) => (VM_UPDATE_KEYS as readonly string[]).includes(k));
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
  })
  .strict();
export type VmCommandInputs = z.output<typeof vmCommandSchema>;

export const COMMAND_OUTPUT_KEYS = ['stdout', 'stderr', 'exitCode'] as const;
/** Changing these re-runs the command (the `update` command, else `create`). */
export const COMMAND_RERUN_KEYS = ['create', 'update', 'env', 'stdin', 'cwd'] as const;
/** Changing these is stored only. */
export const COMMAND_METADATA_KEYS = ['delete', 'allowFailure', 'timeoutMs', 'providerVersion'] as const;
export const COMMAND_REPLACE_KEYS = ['vm', 'triggers'] as const;

function commandInput(props: Props): Props {
  const input = withoutProviderKeys(props);
  for (const k of COMMAND_OUTPUT_KEYS) delete input[k];
  return input;
}

export function checkVmCommand(news: Props): CheckOutcome {
  return checkWith(vmCommandSchema, news, commandInput);
}

export function vmCommandOf(props: Props): VmCommandInputs {
  return vmCommandSchema.parse(commandInput(props));
}

export function diffVmCommand(olds: Props, news: Props): DiffOutcome {
  const changed = (k: string) => containsUnknown(news[k]) || !sameValue(olds[k], news[k]);
  const replaces = COMMAND_REPLACE_KEYS.filter(changed);
  const updates = [...COMMAND_RERUN_KEYS, ...COMMAND_METADATA_KEYS].filter(changed);
  return { changes: replaces.length + updates.length > 0, replaces, updates, deleteBeforeReplace: false };
}

/** True when an update must run the command again. */
export function commandUpdateReruns(updates: readonly string[]): boolean {
  return updates.some((k) => (COMMAND_RERUN_KEYS as readonly string[]).includes(k));
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

export const FILE_OUTPUT_KEYS = ['sha256'] as const;

function fileInput(props: Props): Props {
  const input = withoutProviderKeys(props);
  for (const k of FILE_OUTPUT_KEYS) delete input[k];
  return input;
}

export function checkVmFile(news: Props): CheckOutcome {
  return checkWith(vmFileSchema, news, fileInput);
}

export function vmFileOf(props: Props): VmFileInputs {
  return vmFileSchema.parse(fileInput(props));
}

export function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * `diff` for VmFile. `sourceSha256` is the hash of the local source file as it is now
 * (the caller reads it); a different hash than the stored one replaces the file.
 */
export function diffVmFile(olds: Props, news: Props, sourceSha256?: string): DiffOutcome {
  const changed = (k: string) => containsUnknown(news[k]) || !sameValue(olds[k], news[k]);
  const replaces: string[] = ['vm', 'path', 'content', 'source'].filter(changed);
  if (
    !replaces.includes('source') &&
    typeof news.source === 'string' &&
    sourceSha256 !== undefined &&
    sourceSha256 !== olds.sha256
  )
    replaces.push('source');
  const updates = ['mode', 'timeoutMs', 'providerVersion'].filter(changed);
  return { changes: replaces.length + updates.length > 0, replaces, updates, deleteBeforeReplace: false };
}
