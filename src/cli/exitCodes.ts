/**
 * The command line's exit codes: one per kind of failure a script may want to branch on.
 * Stable: scripts depend on them, so a code is never reused for another meaning.
 */
import { isLocalVmError, type ErrorCode } from '../errors.js';

export const EXIT_CODES = {
  OK: 0,
  FAILURE: 1,
  VALIDATION: 2,
  NOT_FOUND: 3,
  TIMEOUT: 4,
  CONFLICT: 5,
  TOOL_NOT_FOUND: 6,
  UNSUPPORTED: 7,
  HOST_FS: 8,
} as const;

export type ExitCode = (typeof EXIT_CODES)[keyof typeof EXIT_CODES];

const BY_ERROR_CODE: Partial<Record<ErrorCode, ExitCode>> = {
  VALIDATION: EXIT_CODES.VALIDATION,
  NOT_FOUND: EXIT_CODES.NOT_FOUND,
  TIMEOUT: EXIT_CODES.TIMEOUT,
  CONFLICT: EXIT_CODES.CONFLICT,
  ALREADY_EXISTS: EXIT_CODES.CONFLICT,
  TOOL_NOT_FOUND: EXIT_CODES.TOOL_NOT_FOUND,
  UNSUPPORTED: EXIT_CODES.UNSUPPORTED,
  HOST_FS: EXIT_CODES.HOST_FS,
};

/** The exit code for an error: its LocalVmError code's, else 1 (generic failure). Pure. */
export function exitCodeFor(error: unknown): ExitCode {
  if (isLocalVmError(error)) return BY_ERROR_CODE[error.code] ?? EXIT_CODES.FAILURE;
  return EXIT_CODES.FAILURE;
}

/** The text `localvm --help` shows under "Exit codes". */
export const EXIT_CODES_HELP = `Exit codes:
  0  ok
  1  generic failure (a command in the guest or on the host failed, an internal error)
  2  invalid arguments or VM spec (VALIDATION, usage errors)
  3  no such VM (NOT_FOUND)
  4  timed out (TIMEOUT)
  5  exists already / exists with a different spec (ALREADY_EXISTS, CONFLICT)
  6  a required tool is missing (TOOL_NOT_FOUND)
  7  not supported by this backend (UNSUPPORTED)
  8  the host file system refused: full, read-only, no permission, or an unsafe directory (HOST_FS)
  exec and shell exit with the guest command's own exit code once it has run.`;
