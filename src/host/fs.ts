/**
 * Small file-system helpers shared by the backends and the fixtures, and the one mapping
 * from a host file-system refusal (full disk, read-only mount, permissions) to a
 * LocalVmError: such a failure is the host's state, not a bug in localvm.
 */
import { randomBytes } from 'node:crypto';
import { access, readdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { isLocalVmError, LocalVmError } from '../errors.js';

/** The names of the directories in `dir`, sorted; none when `dir` is missing or unreadable. */
export async function listDirNames(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
}

/** True when `path` exists (follows symlinks; a dangling link is absent). */
export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** A short random suffix for temp names. */
export const randomSuffix = () => randomBytes(6).toString('hex');

/** The errno codes that mean "the host file system refused", each with what it means. */
const REFUSALS: Record<string, string> = {
  ENOSPC: 'no space left on the file system',
  EDQUOT: 'the disk quota is exhausted',
  EROFS: 'the file system is read-only',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
};

function hintFor(errno: string, path: string): string {
  const where = dirname(path);
  const elsewhere = 'or point localvm at another directory (LOCALVM_HOME, LOCALVM_RUN_DIR, LOCALVM_CACHE)';
  if (errno === 'ENOSPC' || errno === 'EDQUOT')
    return `free space on the file system holding ${where} (df -h ${where}), ${elsewhere}`;
  if (errno === 'EROFS') return `${where} is on a read-only mount: remount it read-write, ${elsewhere}`;
  return `check the owner and mode of ${where} (ls -ld ${where}); localvm runs as uid ${process.getuid?.() ?? '?'}, ${elsewhere}`;
}

/**
 * `error` as a HOST_FS LocalVmError when it is a file-system refusal (ENOSPC, EDQUOT,
 * EROFS, EACCES, EPERM), else `error` itself. `what` says what localvm was doing.
 */
export function hostFsError(error: unknown, what: string, fallbackPath?: string): unknown {
  if (isLocalVmError(error)) return error;
  const errno = (error as NodeJS.ErrnoException | undefined)?.code;
  if (!errno || !(errno in REFUSALS)) return error;
  const path = (error as NodeJS.ErrnoException).path ?? fallbackPath ?? '.';
  return new LocalVmError('HOST_FS', `cannot ${what}: ${REFUSALS[errno]} (${errno} on ${path})`, {
    cause: error,
    hint: hintFor(errno, path),
    details: { errno, path },
  });
}

/** Runs `fn`, turning a file-system refusal into HOST_FS (see hostFsError). */
export async function onHostFs<T>(what: string, path: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw hostFsError(error, what, path);
  }
}
