/**
 * How the image build runs host tools and reads host files: every failure becomes a
 * LocalVmError, and a missing tool says which Debian package to install.
 */
import { createHash } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { LocalVmError, isLocalVmError } from '../../../errors.js';
import { commandError, type Command, type CommandRunner, type RunOptions, type RunResult } from '../../../runner.js';

export const HOST_BUSYBOX = '/bin/busybox';
export const HOST_QEMU_GA = '/usr/sbin/qemu-ga';

/** The Debian package that provides each host tool, for TOOL_NOT_FOUND hints. */
const TOOL_PACKAGES: Record<string, string> = {
  'apt-get': 'apt',
  'apt-cache': 'apt',
  'dpkg-deb': 'dpkg',
  cpio: 'cpio',
  xz: 'xz-utils',
  busybox: 'busybox-static',
  [HOST_BUSYBOX]: 'busybox-static',
  'qemu-ga': 'qemu-guest-agent',
  [HOST_QEMU_GA]: 'qemu-guest-agent',
  ldd: 'libc-bin',
};

export function installHint(tool: string): string {
  return `apt-get install -y ${TOOL_PACKAGES[tool] ?? tool}`;
}

function toolMissing(tool: string, cause?: unknown): LocalVmError {
  return new LocalVmError('TOOL_NOT_FOUND', `${tool} is needed to build the tiny image but was not found`, {
    hint: installHint(tool),
    cause,
  });
}

/** Runs a build step; missing tools get an install hint, failures become COMMAND_FAILED. */
export async function step(
  runner: CommandRunner,
  cmd: Command,
  options: RunOptions & { hint?: string } = {},
): Promise<RunResult> {
  const { hint, ...runOptions } = options;
  let result: RunResult;
  try {
    result = await runner.run(cmd, { timeoutMs: 600_000, ...runOptions });
  } catch (error) {
    if (isLocalVmError(error, 'TOOL_NOT_FOUND')) throw toolMissing(cmd.file, error);
    throw error;
  }
  if (result.exitCode === 0 && !result.timedOut) return result;
  const error = commandError(result);
  if (!hint) throw error;
  throw new LocalVmError(error.code, error.message, { hint, command: error.command, cause: error });
}

export async function sha256File(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

/** A host binary that goes into the image; absent means its package is not installed. */
export async function readHostBinary(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    throw toolMissing(path, error);
  }
}

/** Whether `path` exists and this process can read it. */
export async function readable(path: string): Promise<boolean> {
  try {
    await access(path, fsConstants.R_OK);
    return true;
  } catch {
    return false;
  }
}
