/**
 * The identity helper as a static program (identity.c), compiled on this host once per
 * source and cached: `<cacheDir>/helpers/identity-<arch>-<hash>`. A template copies it into
 * its guest and parks it instead of the shell helper (see create.ts's parkHelper): a clone
 * then makes itself its own machine with three system calls instead of the shell's `ip` and
 * `date` processes (~70 ms less guest time under emulation).
 *
 * It is optional. With no C compiler and static C library (`$CC`, else `cc`), a guest of
 * another architecture than the host, or `LOCALVM_IDENTITY_HELPER=shell` (to rule the program
 * out when a guest misbehaves with it), this returns undefined, says why in the log, and the
 * template parks the shell helper.
 */
import { createHash } from 'node:crypto';
import { readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exists } from '../../../host/fs.js';
import { mkdirPrivate } from '../../../host/privateDir.js';
import { runChecked } from '../../../runner.js';
import type { Arch } from '../../../schema.js';
import type { QemuHost } from '../host.js';

/** identity.c, beside this module in src/ and in dist/ (the build copies it). */
export const IDENTITY_SOURCE = fileURLToPath(new URL('./identity.c', import.meta.url));

const COMPILE_TIMEOUT_MS = 60_000;

/** The compiler argv for `source` into `out`: static (the guest has only its own libc, if any), small. Pure. */
export function compileCommand(cc: string, source: string, out: string): { file: string; args: string[] } {
  return { file: cc, args: ['-static', '-Os', '-s', '-o', out, source] };
}

const built = new Map<string, Promise<string | undefined>>();

/**
 * The path of the compiled identity program for a guest of `arch`, compiling it on first use;
 * undefined (and logged) when it cannot be had here.
 */
export function identityProgram(
  host: Pick<QemuHost, 'config' | 'runner' | 'hostArch' | 'log'>,
  arch: Arch,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string | undefined> {
  if (env.LOCALVM_IDENTITY_HELPER === 'shell') {
    host.log('identity program: LOCALVM_IDENTITY_HELPER=shell; templates use the shell helper');
    return Promise.resolve(undefined);
  }
  if (arch !== host.hostArch) {
    host.log(`identity program: a ${arch} guest on a ${host.hostArch} host; templates use the shell helper`);
    return Promise.resolve(undefined);
  }
  const cc = env.CC || 'cc';
  const key = `${host.config.cacheDir}\0${cc}\0${arch}`;
  let p = built.get(key);
  if (!p) {
    p = compile(host, arch, cc);
    built.set(key, p);
  }
  return p;
}

async function compile(
  host: Pick<QemuHost, 'config' | 'runner' | 'log'>,
  arch: Arch,
  cc: string,
): Promise<string | undefined> {
  try {
    const source = await readFile(IDENTITY_SOURCE);
    const hash = createHash('sha256').update(source).digest('hex').slice(0, 16);
    const dir = join(host.config.cacheDir, 'helpers');
    const out = join(dir, `identity-${arch}-${hash}`);
    if (await exists(out)) return out;
    await mkdirPrivate(dir);
    // Compiled beside its final name and renamed: two processes compiling at once both end
    // with a whole program, and a crash leaves no half-written one under the final name.
    const partial = `${out}.${process.pid}.partial`;
    try {
      await runChecked(host.runner, compileCommand(cc, IDENTITY_SOURCE, partial), { timeoutMs: COMPILE_TIMEOUT_MS });
      await rename(partial, out);
    } finally {
      await rm(partial, { force: true });
    }
    return out;
  } catch (error) {
    host.log(
      `identity program not built (${(error as Error).message.split('\n')[0]}); templates use the shell helper. ` +
        'Install a C compiler with the static C library (Debian: gcc libc6-dev) for faster clones.',
    );
    return undefined;
  }
}
