/**
 * The one error class of localvm. Every failure that crosses a module boundary is a
 * LocalVmError with a `code`; callers (retry logic, the CLI's exit codes, the Pulumi
 * provider, tests) branch on `code`, never on message text.
 */

export const ERROR_CODES = [
  'VALIDATION',
  'TOOL_NOT_FOUND',
  'COMMAND_FAILED',
  'TIMEOUT',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'CONFLICT',
  'UNSUPPORTED',
  'TRANSIENT',
  'PROTOCOL',
  /** The host file system refused (full, quota, read-only, permissions) or a directory is not safe to use. */
  'HOST_FS',
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** Codes that a retry may cure. Everything else is permanent. */
export const TRANSIENT_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['TRANSIENT', 'TIMEOUT']);

/** One validation failure, with the property path it is about (`ports.0.host`). */
export interface ValidationIssue {
  property: string;
  reason: string;
}

export interface CommandDetails {
  /** The executable that was run. */
  file: string;
  /** Its arguments, exactly as passed (never a shell string). */
  args: readonly string[];
  exitCode?: number | undefined;
  signal?: string | undefined;
  /** The last lines of stderr, enough to see why without flooding logs. */
  stderrTail?: string | undefined;
  stdoutTail?: string | undefined;
  timedOut?: boolean | undefined;
}

export interface LocalVmErrorOptions {
  cause?: unknown;
  /** A short actionable hint, shown by the CLI under the message. */
  hint?: string | undefined;
  vm?: string | undefined;
  command?: CommandDetails | undefined;
  issues?: ValidationIssue[] | undefined;
  /** Overrides the retry classification derived from `code`. */
  transient?: boolean | undefined;
  /** Free-form extra facts (last probe result, console tail, ...). */
  details?: Record<string, unknown> | undefined;
}

// A global symbol, so that two copies of this module (say, the Pulumi host loading the
// package by path and the user's program loading it from node_modules) agree on the brand.
const BRAND = Symbol.for('localvm.LocalVmError');

export class LocalVmError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly vm: string | undefined;
  readonly command: CommandDetails | undefined;
  readonly issues: ValidationIssue[] | undefined;
  readonly transient: boolean;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: LocalVmErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'LocalVmError';
    this.code = code;
    this.hint = options.hint;
    this.vm = options.vm;
    this.command = options.command;
    this.issues = options.issues;
    this.transient = options.transient ?? TRANSIENT_CODES.has(code);
    this.details = options.details;
    Object.defineProperty(this, BRAND, { value: true });
  }

  /** A plain object for `--json` output and logs. */
  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      message: this.message,
      ...(this.hint ? { hint: this.hint } : {}),
      ...(this.vm ? { vm: this.vm } : {}),
      ...(this.issues ? { issues: this.issues } : {}),
      ...(this.command ? { command: this.command } : {}),
      ...(this.details ? { details: this.details } : {}),
    };
  }
}

/** Brand check that works across module instances, unlike `instanceof`. */
/** What `promise` resolves to, or undefined when it rejects NOT_FOUND (any other error stays). */
export function unlessNotFound<T>(promise: Promise<T>): Promise<T | undefined> {
  return promise.catch((error: unknown) => {
    if (isLocalVmError(error, 'NOT_FOUND')) return undefined;
    throw error;
  });
}

export function isLocalVmError(value: unknown, code?: ErrorCode): value is LocalVmError {
  if (typeof value !== 'object' || value === null) return false;
  if ((value as Record<symbol, unknown>)[BRAND] !== true) return false;
  return code === undefined || (value as LocalVmError).code === code;
}

/** True when retrying the operation that threw `error` may succeed. */
export function isTransient(error: unknown): boolean {
  return isLocalVmError(error) && error.transient;
}

/** Keeps the last `maxLines` lines (and at most `maxChars` characters) of a text. */
export function tail(text: string | undefined, maxLines = 20, maxChars = 4000): string {
  if (!text) return '';
  const lines = text.replace(/\s+$/, '').split('\n');
  let out = lines.slice(-maxLines).join('\n');
  if (out.length > maxChars) out = out.slice(-maxChars);
  return out;
}

export function validationError(issues: ValidationIssue[], what = 'input'): LocalVmError {
  const list = issues.map((i) => `${i.property || '(root)'}: ${i.reason}`).join('; ');
  return new LocalVmError('VALIDATION', `invalid ${what}: ${list}`, { issues });
}
