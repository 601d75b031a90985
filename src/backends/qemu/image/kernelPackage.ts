/**
 * The Debian kernel the tiny image boots: the versioned linux-image package that the
 * `linux-image-amd64` metapackage currently depends on, fetched with `apt-get download`
 * and unpacked with `dpkg-deb -x` (nothing is installed on the host).
 */
import { mkdirPrivate } from '../../../host/privateDir.js';
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LocalVmError } from '../../../errors.js';
import type { CommandRunner } from '../../../runner.js';
import { step } from './steps.js';

export const KERNEL_METAPACKAGE = 'linux-image-amd64';
const KERNEL_RESOLVE_MEMO = '.tiny-kernel-package.json';

export interface KernelPackage {
  name: string;
  version: string;
}

/**
 * Reads the versioned kernel package from `apt-cache show --no-all-versions linux-image-amd64`
 * (the first stanza's `Depends: linux-image-X (= V)`); undefined when there is none.
 */
export function parseKernelPackage(aptCacheShow: string): KernelPackage | undefined {
  const firstStanza = aptCacheShow.split(/\n\s*\n/)[0] ?? '';
  const depends = /^(?:Pre-)?Depends:\s*(.*)$/m.exec(firstStanza)?.[1];
  if (!depends) return undefined;
  for (const clause of depends.split(',')) {
    for (const alternative of clause.split('|')) {
      const m = /^\s*(linux-image-\d[^\s(]*)\s*(?:\(\s*=\s*([^\s)]+)\s*\))?/.exec(alternative);
      if (m?.[1] && m[2]) return { name: m[1], version: m[2] };
    }
  }
  return undefined;
}

/**
 * What apt would install for the metapackage can only change when apt's lists or policy
 * change; apt-cache costs ~1 s on hosts without a package cache, so remember the answer
 * keyed by the lists' names, sizes and mtimes.
 */
async function aptStateFingerprint(): Promise<string> {
  const h = createHash('sha256');
  for (const dir of ['/var/lib/apt/lists', '/etc/apt/preferences.d', '/etc/apt/sources.list.d']) {
    let names: string[] = [];
    try {
      names = (await readdir(dir)).sort();
    } catch {
      // absent is a state too
    }
    for (const name of names) {
      try {
        const s = await stat(join(dir, name));
        h.update(`${dir}/${name}\0${s.size}\0${s.mtimeMs}\0`);
      } catch {
        // vanished between readdir and stat
      }
    }
  }
  for (const file of ['/etc/apt/preferences', '/etc/apt/sources.list']) {
    try {
      const s = await stat(file);
      h.update(`${file}\0${s.size}\0${s.mtimeMs}\0`);
    } catch {
      // absent
    }
  }
  return h.digest('hex');
}

/** The current kernel package per apt, memoized in `memoDir` while apt's state is unchanged. */
export async function resolveKernelPackage(memoDir: string, runner: CommandRunner): Promise<KernelPackage> {
  const memoPath = join(memoDir, KERNEL_RESOLVE_MEMO);
  const fingerprint = await aptStateFingerprint();
  try {
    const memo = JSON.parse(await readFile(memoPath, 'utf8')) as {
      fingerprint?: string;
      kernelPackage?: KernelPackage;
    };
    if (memo.fingerprint === fingerprint && memo.kernelPackage?.name && memo.kernelPackage.version) {
      return memo.kernelPackage;
    }
  } catch {
    // no memo yet
  }
  const result = await step(
    runner,
    { file: 'apt-cache', args: ['show', '--no-all-versions', KERNEL_METAPACKAGE] },
    { hint: 'run `apt-get update` so apt knows the kernel packages, then retry' },
  );
  const kernelPackage = parseKernelPackage(result.stdout);
  if (!kernelPackage) {
    throw new LocalVmError('NOT_FOUND', `could not find the kernel package that ${KERNEL_METAPACKAGE} depends on`, {
      hint: 'run `apt-get update`, then retry',
      details: { aptCacheOutput: result.stdout.slice(0, 2000) },
    });
  }
  await mkdirPrivate(memoDir);
  const tmp = `${memoPath}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify({ fingerprint, kernelPackage }) + '\n');
  await rename(tmp, memoPath);
  return kernelPackage;
}

export interface UnpackedKernel {
  /** The package's unpacked file tree. */
  root: string;
  /** `uname -r` of the kernel, e.g. `6.1.0-56-amd64`. */
  kernelVersion: string;
  bzImage: string;
}

/** Downloads the kernel .deb into `work` and unpacks it there; the .deb itself is removed. */
export async function fetchKernel(
  work: string,
  kernelPackage: KernelPackage,
  runner: CommandRunner,
  log: (line: string) => void,
): Promise<UnpackedKernel> {
  log(`downloading ${kernelPackage.name} ${kernelPackage.version}`);
  const debDir = join(work, 'deb');
  await mkdir(debDir);
  await step(
    runner,
    { file: 'apt-get', args: ['download', `${kernelPackage.name}=${kernelPackage.version}`] },
    { cwd: debDir, hint: 'run `apt-get update` (the package lists may be stale), then retry' },
  );
  const deb = (await readdir(debDir)).find((n) => n.endsWith('.deb'));
  if (!deb) throw new LocalVmError('NOT_FOUND', `apt-get download produced no .deb for ${kernelPackage.name}`);
  const root = join(work, 'kernel');
  log(`unpacking ${deb}`);
  await step(runner, { file: 'dpkg-deb', args: ['-x', join(debDir, deb), root] });
  await rm(join(debDir, deb), { force: true });

  const vmlinuz = (await readdir(join(root, 'boot'))).find((n) => n.startsWith('vmlinuz-'));
  if (!vmlinuz) throw new LocalVmError('NOT_FOUND', `${kernelPackage.name} contains no /boot/vmlinuz-*`);
  return { root, kernelVersion: vmlinuz.slice('vmlinuz-'.length), bzImage: join(root, 'boot', vmlinuz) };
}
