/**
 * The guest-command half of the input schemas: exec/shell argv and options, validated once
 * at the Connector (the public boundary for guest commands). Re-exported by schema.ts.
 */
import { z } from 'zod';
import { validationError, type ValidationIssue } from './errors.js';
import { ENV_NAME_PATTERN, parseOrThrow, toIssues, USER_NAME_PATTERN } from './validation.js';

const noNul = (s: string) => !s.includes('\0');

/** The longest exec timeout: a day. Longer is a mistake, and timers overflow past ~24.8 days. */
export const MAX_EXEC_TIMEOUT_MS = 86_400_000;

/** A guest command as an argv array: a string from JavaScript would be spread into letters. */
export const argvSchema = z
  .array(z.string('must be a string').refine(noNul, 'must not contain NUL'), 'must be an array of strings')
  .min(1, 'must name a command')
  .superRefine((argv, ctx) => {
    if (argv[0] === '') ctx.addIssue({ code: 'custom', path: [0], message: 'must name a command' });
  });

/** Options of `Connector.exec` and `shell` (see `ExecOptions` in backend.ts). */
export const execOptionsSchema = z.object(
  {
    env: z
      .record(
        z.string().regex(ENV_NAME_PATTERN, 'must be a variable name: A-Z a-z 0-9 _, not starting with a digit'),
        z.string('must be a string').refine(noNul, 'must not contain NUL'),
        'must be an object of variable names to strings',
      )
      .optional(),
    cwd: z
      .string('must be a string')
      .refine((s) => s.startsWith('/') && noNul(s), 'must be an absolute path without NUL')
      .optional(),
    stdin: z.union([z.string(), z.instanceof(Uint8Array)], 'must be a string or a Uint8Array').optional(),
    // Ends the command early (a deadline of the caller's): passed through untouched.
    signal: z.instanceof(AbortSignal, { error: 'must be an AbortSignal' }).optional(),
    timeoutMs: z
      .number('must be a number')
      .int('must be a whole number of milliseconds')
      .positive('must be positive')
      .max(MAX_EXEC_TIMEOUT_MS, `must be at most ${MAX_EXEC_TIMEOUT_MS} (24 h)`)
      .optional(),
    user: z
      .string('must be a string')
      .regex(USER_NAME_PATTERN, 'must be a user name: a-z 0-9 _ -, not starting with "-" or a digit')
      .optional(),
  },
  'must be an object',
);
export type ExecOptionsParsed = z.output<typeof execOptionsSchema>;

function issuesOf(schema: z.ZodType, value: unknown, prefix?: string): ValidationIssue[] {
  const result = schema.safeParse(value);
  if (result.success) return [];
  return toIssues(result.error).map((i) =>
    prefix === undefined ? i : { ...i, property: i.property ? `${prefix}.${i.property}` : prefix },
  );
}

/** Validates exec/shell options at the boundary: VALIDATION naming each bad field. */
export function parseExecOptions(input: unknown): ExecOptionsParsed {
  return parseOrThrow(execOptionsSchema, input ?? {}, 'exec options');
}

/** Validates `exec(argv, options)` in one step, so one error lists every problem (`argv.1`, `env.A=B`). */
export function parseExec(argv: unknown, options: unknown): { argv: string[]; options: ExecOptionsParsed } {
  const issues = [...issuesOf(argvSchema, argv, 'argv'), ...issuesOf(execOptionsSchema, options ?? {})];
  if (issues.length > 0) throw validationError(issues, 'exec');
  return { argv: argv as string[], options: parseExecOptions(options) };
}

/** Validates `shell(script, options)` likewise; the script is a string without NUL (it may be empty). */
export function parseShell(script: unknown, options: unknown): { script: string; options: ExecOptionsParsed } {
  const scriptSchema = z.string('must be a string').refine(noNul, 'must not contain NUL');
  const issues = [...issuesOf(scriptSchema, script, 'script'), ...issuesOf(execOptionsSchema, options ?? {})];
  if (issues.length > 0) throw validationError(issues, 'shell');
  return { script: script as string, options: parseExecOptions(options) };
}
