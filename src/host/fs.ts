/** Small file-system questions asked in many places, answered once. */
import { access } from 'node:fs/promises';

/** Whether `path` exists (anything: file, directory, socket). */
export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
