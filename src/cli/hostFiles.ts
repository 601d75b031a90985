/** Reading files the user names on the command line: one error shape for every command. */
import { readFile } from 'node:fs/promises';
import { LocalVmError } from '../errors.js';

/**
 * The bytes of the host file `path` (a `--user-data`, `-f` or `cp` source). A missing file
 * is NOT_FOUND; one the user cannot read (EACCES, a directory) is VALIDATION naming `property`.
 */
export async function readHostFile(path: string, property = 'path'): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new LocalVmError(
      code === 'ENOENT' ? 'NOT_FOUND' : 'VALIDATION',
      `cannot read ${path}: ${(error as Error).message}`,
      {
        cause: error,
        issues: code === 'ENOENT' ? undefined : [{ property, reason: `cannot be read (${code ?? 'error'})` }],
        hint: code === 'EACCES' ? `check the file's owner and mode: ls -l ${path}` : undefined,
      },
    );
  }
}
