/**
 * The pure half of the `Disk` and `DiskAttachment` resources: input checking and diffing.
 * A disk's name and source are its identity (replace); its size grows in place (resize)
 * and never shrinks (Check refuses, since a replace would lose the data). An attachment is
 * a pairing of a VM and a disk: any change replaces it, detaching first, because a
 * read-write disk is attached to one VM at a time.
 */
import { z } from 'zod';
import { diskSchema, sizeSchema, vmNameSchema } from '../schema.js';
import {
  UNKNOWN,
  checkWith,
  containsUnknown,
  sameValue,
  type CheckOutcome,
  type DiffOutcome,
  type Props,
} from './props.js';

/** Outputs a Disk adds to its inputs. */
export const DISK_OUTPUT_KEYS = ['sizeBytes', 'allocatedBytes', 'format', 'path', 'createdAt'] as const;
export const DISK_REPLACE_KEYS = ['name', 'from'] as const;
export const DISK_UPDATE_KEYS = ['size'] as const;

export const diskInputSchema = z
  .object({
    name: diskSchema.shape.name,
    /** Bytes, or `512M`, `10G`; stored as bytes. */
    size: sizeSchema,
    /** A disk image on the host copied into the new disk. */
    from: z.string().min(1, 'must be the path of an image').optional(),
  })
  .strict();
export type DiskInputs = z.output<typeof diskInputSchema>;

const pick = (keys: readonly string[]) => (props: Props) =>
  Object.fromEntries(Object.entries(props).filter(([k, v]) => v !== undefined && keys.includes(k)));
const diskInput = pick(['name', 'size', 'from']);

/** `check` for Disk; with the old inputs, a smaller size is a failure (disks never shrink). */
export function checkDisk(olds: Props, news: Props): CheckOutcome {
  const outcome = checkWith(diskInputSchema, diskInputSchema.shape, news, diskInput);
  const before = olds.size;
  const after = outcome.inputs.size;
  if (
    outcome.failures.length === 0 &&
    typeof before === 'number' &&
    typeof after === 'number' &&
    after < before &&
    olds.name === outcome.inputs.name
  ) {
    return {
      inputs: outcome.inputs,
      failures: [{ property: 'size', reason: `must be at least ${before} bytes: a disk only grows` }],
    };
  }
  return outcome;
}

export function diskInputsOf(props: Props): DiskInputs {
  return diskInputSchema.parse(diskInput(props));
}

const changedIn = (olds: Props, news: Props) => (key: string) =>
  containsUnknown(news[key]) || !sameValue(olds[key], news[key]);

/** `diff` for Disk: name or source replaces (deleting first unless renamed); size resizes in place. */
export function diffDisk(olds: Props, news: Props): DiffOutcome {
  const changed = changedIn(olds, news);
  const replaces = DISK_REPLACE_KEYS.filter(changed);
  const updates = replaces.length ? [] : [...DISK_UPDATE_KEYS, 'providerVersion'].filter(changed);
  const renamed = replaces.includes('name') && typeof news.name === 'string' && news.name !== UNKNOWN;
  return { changes: replaces.length + updates.length > 0, replaces, updates, deleteBeforeReplace: !renamed };
}

export const ATTACHMENT_OUTPUT_KEYS = ['instance'] as const;
export const ATTACHMENT_REPLACE_KEYS = ['vm', 'disk', 'readonly'] as const;

export const attachmentInputSchema = z
  .object({
    vm: vmNameSchema,
    disk: diskSchema.shape.name,
    readonly: z.boolean().default(false),
    /** How long a detach waits for the guest to let go of the device (default 10 s). */
    timeoutMs: z.number().int().positive().max(600_000).optional(),
  })
  .strict();
export type AttachmentInputs = z.output<typeof attachmentInputSchema>;
const attachmentInput = pick(['vm', 'disk', 'readonly', 'timeoutMs']);

export function checkAttachment(news: Props): CheckOutcome {
  return checkWith(attachmentInputSchema, attachmentInputSchema.shape, news, attachmentInput);
}

export function attachmentInputsOf(props: Props): AttachmentInputs {
  return attachmentInputSchema.parse(attachmentInput(props));
}

/** The id of an attachment: one per VM and disk. Pure. */
export const attachmentId = (a: { vm: string; disk: string }) => `${a.vm}/${a.disk}`;

/** `diff` for DiskAttachment: another VM, disk or mode replaces, detaching first. */
export function diffAttachment(olds: Props, news: Props): DiffOutcome {
  const changed = changedIn(olds, news);
  const replaces = ATTACHMENT_REPLACE_KEYS.filter(changed);
  const updates = replaces.length ? [] : ['timeoutMs', 'providerVersion'].filter(changed);
  return { changes: replaces.length + updates.length > 0, replaces, updates, deleteBeforeReplace: true };
}
