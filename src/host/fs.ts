/** Small file-system helpers shared by the backends and the fixtures. */
import { randomBytes } from 'node:crypto';
import { access } from 'node:fs/promises';

/** True when `path` exists (follows symlinks; a dangling link is absent). */
export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** A short random suffix for temp names. */
export const randomSuffix = () => randomBytes(6).toString('hex');
