/**
 * Guards shared by the pure command builders of every backend (each backend's `cmdline.ts`):
 * builders re-check the few things that would change the meaning of an argv (a positional
 * that looks like a flag, a comma inside a QEMU option value) even though the schema checked
 * the spec, because they are also called with values read back from disk or from other tools.
 */
import { LocalVmError } from './errors.js';

export type { Command } from './runner.js';

export function invalid(property: string, reason: string): LocalVmError {
  return new LocalVmError('VALIDATION', `invalid command argument: ${property}: ${reason}`, {
    issues: [{ property, reason }],
  });
}

/**
 * A positional argument must not be empty (tools would treat it as missing) nor start with
 * "-" (getopt/cobra would read it as a flag: a machine called `-f` must not become --force).
 */
export function positional(property: string, value: string): string {
  if (typeof value !== 'string' || value.length === 0) throw invalid(property, 'must be a non-empty string');
  if (value.charCodeAt(0) === 45 /* - */) throw invalid(property, `must not start with "-" (got ${value})`);
  // NUL bytes need no check here: Node's spawn refuses any argv element that holds one.
  return value;
}

const SAFE_WORD = /^[A-Za-z0-9_@%+=:,./-]+$/;

/**
 * Quotes one argument for a POSIX shell: for display, and for the one place a shell must
 * parse an argv, SSH's remote command (each element quoted on its own, so the guest's shell
 * sees exactly these words). Pure.
 */
export function shellQuote(arg: string): string {
  if (arg.length > 0 && SAFE_WORD.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}
