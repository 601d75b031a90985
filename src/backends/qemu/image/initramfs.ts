/**
 * The tiny guest's userland: static busybox (and its applet links), qemu-ga with the
 * shared libraries `ldd` lists for it, the kernel modules and the /init scripts, packed
 * as a gzipped newc cpio archive.
 */
import { chmod, copyFile, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { gzip as gzipCallback, constants as zlibConstants } from 'node:zlib';
import type { CommandRunner } from '../../../runner.js';
import { renderInitFiles } from './init.js';
import { HOST_QEMU_GA, HOST_BUSYBOX, readable, step } from './steps.js';

const gzip = promisify(gzipCallback);

/** Library paths (and the dynamic loader) from `ldd` output, in order, without vdso. */
export function parseLddOutput(output: string): string[] {
  const paths: string[] = [];
  for (const line of output.split('\n')) {
    const resolved = /=>\s*(\/\S+)\s*\(/.exec(line)?.[1] ?? /^\s*(\/\S+)\s*\(/.exec(line)?.[1];
    if (resolved && !paths.includes(resolved)) paths.push(resolved);
  }
  return paths;
}

/** Applet paths (`bin/sh`, `sbin/init`, ...) from `busybox --list-full`. */
export function parseBusyboxApplets(output: string): string[] {
  return output
    .split('\n')
    .map((l) => l.trim().replace(/^\/+/, ''))
    .filter((l) => l !== '' && !l.includes('..') && /^[\w./[\]-]+$/.test(l));
}

export interface Userland {
  /** The host's static busybox, as read (and hashed) earlier. */
  busybox: Buffer;
  /** qemu-ga's shared libraries, from `ldd`. */
  libraries: string[];
  /** Module names in load order, substituted into /init. */
  early: readonly string[];
  late: readonly string[];
}

/** Fills `staging` (which may already hold the modules) with everything but the kernel. */
export async function stageUserland(staging: string, userland: Userland, runner: CommandRunner): Promise<void> {
  for (const d of [
    'bin',
    'sbin',
    'usr/bin',
    'usr/sbin',
    'etc',
    'proc',
    'sys',
    'dev',
    'run',
    'tmp',
    'root',
    'var',
    'mnt',
  ]) {
    await mkdir(join(staging, d), { recursive: true });
  }
  await symlink('../run', join(staging, 'var/run'));
  await writeFile(join(staging, 'bin/busybox'), userland.busybox, { mode: 0o755 });
  const applets = parseBusyboxApplets((await step(runner, { file: HOST_BUSYBOX, args: ['--list-full'] })).stdout);
  for (const applet of applets) {
    const path = join(staging, applet);
    if (await readable(path)) continue;
    await mkdir(dirname(path), { recursive: true });
    await symlink(relative(dirname(path), join(staging, 'bin/busybox')), path);
  }
  await copyFile(HOST_QEMU_GA, join(staging, 'usr/sbin/qemu-ga'));
  await chmod(join(staging, 'usr/sbin/qemu-ga'), 0o755);
  // Libraries go where ldd found them, so the loader's default search path finds them.
  for (const lib of userland.libraries) {
    const target = join(staging, lib);
    await mkdir(dirname(target), { recursive: true });
    await copyFile(lib, target);
  }
  for (const file of renderInitFiles(userland.early, userland.late)) {
    const target = join(staging, file.path);
    await mkdir(dirname(target), { recursive: true });
    await rm(target, { force: true });
    await writeFile(target, file.content, { mode: file.mode });
    await chmod(target, file.mode);
  }
}

/** Packs `staging` as a reproducible newc cpio (owned by root) and writes it gzipped to `target`. */
export async function packInitramfs(
  staging: string,
  work: string,
  target: string,
  runner: CommandRunner,
): Promise<void> {
  const cpioPath = join(work, 'initramfs.cpio');
  const fileList = await listTree(staging);
  await step(
    runner,
    { file: 'cpio', args: ['-o', '-H', 'newc', '-R', '0:0', '--reproducible', '--quiet', '-O', cpioPath] },
    {
      cwd: staging,
      input: fileList.join('\n') + '\n',
    },
  );
  await writeFile(target, await gzip(await readFile(cpioPath), { level: zlibConstants.Z_BEST_COMPRESSION }));
}

/** Relative paths under `root`, each directory before its contents, sorted for reproducibility. */
async function listTree(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true });
  return entries.map((e) => e.split('\\').join('/')).sort();
}
