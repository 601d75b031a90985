/** Private directories: the ones localvm keeps its state, locks and control sockets in. */
import { mkdir } from 'node:fs/promises';

/** Creates `dir` (and parents) with mode 0700. */
export async function mkdirPrivate(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
}
