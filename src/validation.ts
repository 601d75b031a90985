/**
 * What every schema module shares: the name patterns and the mapping from zod issues to
 * `{ property, reason }`. Its own module so schema.ts and execSchema.ts can both import it
 * without importing each other.
 */
import type { z } from 'zod';
import { validationError, type ValidationIssue } from './errors.js';

/**
 * A VM name: lower-case letters, digits and dashes, not starting with a dash, at most 63
 * characters. It becomes a directory name, a QEMU `-name`, and an orbctl argument, so it
 * must never carry a path separator, a shell metacharacter, or look like a flag.
 */
export const VM_NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

/**
 * A guest user name, conservatively (the portable shadow-utils shape): it becomes an
 * argument of `su` and `orbctl run -u`, so it must never look like a flag or carry spaces.
 */
export const USER_NAME_PATTERN = /^[a-z_][a-z0-9_-]{0,31}$/;

/**
 * An environment variable name as POSIX defines it (portable character set). `env NAME=value`
 * carries each variable, so a name with "=" would shift the split and one starting with "-"
 * would be read as an option of `env`.
 */
export const ENV_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Maps zod issues to `{ property, reason }` with dotted paths (`ports.0.host`). */
export function toIssues(error: z.ZodError): ValidationIssue[] {
  return error.issues.map((issue) => ({
    property: issue.path.map(String).join('.'),
    // A refused record key reports only "Invalid key in record"; its own issue says why.
    reason: (issue.code === 'invalid_key' ? issue.issues[0]?.message : undefined) ?? issue.message,
  }));
}

/** Parses with `schema`; throws a VALIDATION LocalVmError listing every problem. */
export function parseOrThrow<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const result = schema.safeParse(input);
  if (!result.success) throw validationError(toIssues(result.error), what);
  return result.data;
}
