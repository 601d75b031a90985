/**
 * Building the embedded default guest image `tiny`: a Debian kernel plus an initramfs of
 * static busybox and qemu-guest-agent, built offline from the host's packages into the
 * cache dir and keyed by the hash of everything that goes into it.
 */
import { mkdirPrivate } from '../../../host/privateDir.js';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LocalVmConfig } from '../../../config.js';
import { LocalVmError } from '../../../errors.js';
import type { CommandRunner } from '../../../runner.js';
import {
  IMAGE_JSON,
  findTinyWhere,
  imagesDir,
  loadTiny,
  publish,
  removeStaleTemps,
  tinyImageHash,
  type ImageRecord,
  type TinyImage,
} from './cache.js';
import { elfInterpreter } from './elf.js';
import { GUEST_MODULE_DIR, INIT_TEMPLATES } from './init.js';
import { packInitramfs, parseLddOutput, stageUserland } from './initramfs.js';
import { fetchKernel, resolveKernelPackage, type KernelPackage } from './kernelPackage.js';
import { EARLY_MODULES, LATE_MODULES, stageModules } from './modules.js';
import { HOST_BUSYBOX, HOST_QEMU_GA, installHint, readHostBinary, sha256File, step } from './steps.js';
import { extractVmlinux } from './vmlinux.js';

export interface BuildOptions {
  config: LocalVmConfig;
  runner: CommandRunner;
  force?: boolean;
  log?: (line: string) => void;
}

/** Bump when the build procedure changes in a way the hashed inputs do not capture. */
export const BUILDER_VERSION = 1;

export const TINY_APPEND = 'console=ttyS0 quiet acpi=noirq panic=-1 rdinit=/init';

interface HostInputs {
  busybox: Buffer;
  libraries: string[];
  hashFor(kernelPackage: KernelPackage): string;
}

interface Inputs extends Omit<HostInputs, 'hashFor'> {
  kernelPackage: KernelPackage;
  hash: string;
}

/** The host's half of the hash inputs: the binaries and scripts that go into the initramfs. */
async function gatherHostInputs(runner: CommandRunner): Promise<HostInputs> {
  const busybox = await readHostBinary(HOST_BUSYBOX);
  if (elfInterpreter(busybox) !== undefined) {
    throw new LocalVmError(
      'TOOL_NOT_FOUND',
      `${HOST_BUSYBOX} is dynamically linked; the tiny image needs static busybox`,
      {
        hint: installHint('busybox'),
      },
    );
  }
  await readHostBinary(HOST_QEMU_GA);
  const ldd = await step(runner, { file: 'ldd', args: [HOST_QEMU_GA] });
  const libraries = parseLddOutput(ldd.stdout);
  const files: { path: string; sha256: string }[] = [];
  for (const path of [HOST_BUSYBOX, HOST_QEMU_GA, ...libraries]) files.push({ path, sha256: await sha256File(path) });
  return {
    busybox,
    libraries,
    hashFor: (kernelPackage) =>
      tinyImageHash({
        builderVersion: BUILDER_VERSION,
        kernelPackage,
        files,
        templates: INIT_TEMPLATES,
        append: TINY_APPEND,
        modules: [...EARLY_MODULES, ...LATE_MODULES],
      }),
  };
}

/**
 * Builds `tiny` into `<cacheDir>/images/tiny-<hash>/`; a no-op returning the cached image when
 * the content hash matches. Builds in a temp dir renamed into place, so a crash never leaves a
 * half image that looks complete. Concurrent builders are safe: the first rename wins. When apt
 * cannot name the current kernel but an image built from the same host binaries is cached, that
 * image is returned (unless `force`).
 */
export async function buildTinyImage(options: BuildOptions): Promise<TinyImage> {
  const { config, runner, force = false } = options;
  const log = options.log ?? (() => {});
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new LocalVmError(
      'UNSUPPORTED',
      `building the tiny image needs an x86_64 Linux host (this is ${process.platform}/${process.arch})`,
      {
        hint: 'build it on a Debian or Ubuntu x86_64 machine, or use your own qcow2 image',
      },
    );
  }
  const host = await gatherHostInputs(runner);
  let kernelPackage: KernelPackage;
  try {
    kernelPackage = await resolveKernelPackage(imagesDir(config), runner);
  } catch (error) {
    // apt cannot say which kernel is current (lists removed, as in many container images):
    // trust the kernel a cached image was built with, if its host inputs still match.
    const fallback = force
      ? undefined
      : await findTinyWhere(config, (r) => !!r.kernelPackage && host.hashFor(r.kernelPackage) === r.hash);
    if (!fallback) throw error;
    log(`apt cannot name the current kernel (${(error as Error).message}); using the cached image ${fallback.hash}`);
    return fallback;
  }
  const inputs: Inputs = {
    busybox: host.busybox,
    libraries: host.libraries,
    kernelPackage,
    hash: host.hashFor(kernelPackage),
  };
  const finalDir = join(imagesDir(config), `tiny-${inputs.hash}`);
  if (!force) {
    const cached = await loadTiny(finalDir);
    if (cached) return cached;
  }

  // Check every tool before the 70 MB download, so a missing one fails fast.
  for (const tool of ['apt-get', 'dpkg-deb', 'xz', 'cpio']) {
    await step(runner, { file: tool, args: ['--version'] });
  }
  await mkdirPrivate(imagesDir(config));
  await removeStaleTemps(config);
  const work = join(imagesDir(config), `.tmp-tiny-${inputs.hash}-${process.pid}-${randomBytes(4).toString('hex')}`);
  const out = join(work, 'out');
  await mkdir(out, { recursive: true });
  try {
    const record = await buildInto(work, out, inputs, runner, log);
    await writeFile(join(out, IMAGE_JSON), JSON.stringify(record, null, 2) + '\n');
    await publish(out, finalDir, work, force);
    const image = await loadTiny(finalDir);
    if (!image) throw new LocalVmError('INTERNAL', `the tiny image at ${finalDir} is incomplete after the build`);
    log(`tiny image ready: ${finalDir}`);
    return image;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function buildInto(
  work: string,
  out: string,
  inputs: Inputs,
  runner: CommandRunner,
  log: (line: string) => void,
): Promise<ImageRecord> {
  const { kernelPackage } = inputs;
  const { root, kernelVersion, bzImage } = await fetchKernel(work, kernelPackage, runner, log);

  let kernelFile = 'vmlinux';
  let bootFormat: TinyImage['bootFormat'] = 'pvh-vmlinux';
  const extracted = await extractVmlinux(bzImage, work, runner);
  if (extracted) {
    await rename(extracted, join(out, kernelFile));
  } else {
    log('could not extract a PVH-bootable vmlinux; falling back to the bzImage (boots about 2x slower under TCG)');
    kernelFile = 'bzImage';
    bootFormat = 'bzimage';
    await copyFile(bzImage, join(out, kernelFile));
  }

  log('collecting kernel modules');
  const staging = join(work, 'initramfs');
  const moduleOrder = await stageModules(
    join(root, 'lib', 'modules', kernelVersion),
    join(staging, GUEST_MODULE_DIR),
    work,
    runner,
  );
  await rm(root, { recursive: true, force: true });

  log('assembling the initramfs');
  await stageUserland(staging, { busybox: inputs.busybox, libraries: inputs.libraries, ...moduleOrder }, runner);
  const initrdFile = 'initramfs.cpio.gz';
  await packInitramfs(staging, work, join(out, initrdFile), runner);

  return {
    name: 'tiny',
    hash: inputs.hash,
    kernel: kernelFile,
    initrd: initrdFile,
    append: TINY_APPEND,
    kernelVersion,
    builtAt: new Date().toISOString(),
    bootFormat,
    builderVersion: BUILDER_VERSION,
    kernelPackage,
  };
}
