/**
 * The identity helper as a static program (identity.c), compiled on this host once per
 * source and cached: `<cacheDir>/helpers/identity-<arch>-<hash>`. A template copies it into
 * its guest and parks it instead of the shell helper (see create.ts's parkHelper): a clone
 * then makes itself its own machine with three system calls instead of the shell's `ip` and
 * `date` processes (~70 ms less guest time under emulation).
 *
 * The compiler is `$CC`, else musl's `musl-gcc` (a ~45 KB program: one agent write to copy
 * into the guest), else `cc` with the static glibc (~700 KB: ~15 writes, ~0.3 s more per
 * template). It is optional. With none of them working, a guest of
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
  const compilers = env.CC ? [env.CC] : ['musl-gcc', 'cc'];
  const key = `${host.config.cacheDir}\0${compilers.join(' ')}\0${arch}`;
  let p = built.get(key);
  if (!p) {
    p = compile(host, arch, compilers);
    built.set(key, p);
  }
  return p;
}

async function compile(
  host: Pick<QemuHost, 'config' | 'runner' | 'log'>,
  arch: Arch,
  compilers: string[],
): Promise<string | undefined> {
  const failures: string[] = [];
  try {
    const source = await readFile(IDENTITY_SOURCE);
    const hash = createHash('sha256').update(source).digest('hex').slice(0, 16);
    const dir = join(host.config.cacheDir, 'helpers');
    const out = join(dir, `identity-${arch}-${hash}`);
    if (await exists(out)) return out;
    await mkdirPrivate(dir);
    for (const cc of compilers) {
      // Compiled beside its final name and renamed: two processes compiling at once both end
      // with a whole program, and a crash leaves no half-written one under the final name.
      const partial = `${out}.${process.pid}.partial`;
      try {
        await runChecked(host.runner, compileCommand(cc, IDENTITY_SOURCE, partial), { timeoutMs: COMPILE_TIMEOUT_MS });
        await rename(partial, out);
        return out;
      } catch (error) {
        failures.push(`${cc}: ${(error as Error).message.split('\n')[0]}`);
      } finally {
        await rm(partial, { force: true });
      }
    }
  } catch (error) {
    failures.push((error as Error).message.split('\n')[0] ?? '');
  }
  host.log(
    `identity program not built (${failures.join('; ')}); templates use the shell helper. ` +
      'Install a C compiler with a static C library (Debian: musl-tools, or gcc libc6-dev) for faster clones.',
  );
  return undefined;
}
