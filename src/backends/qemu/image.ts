/**
 * The embedded default guest image `tiny`: a Debian kernel plus an initramfs holding static
 * busybox and qemu-guest-agent, built offline from the host's packages into the cache dir.
 * Every process goes through the injected CommandRunner; parsers and the ELF/XZ helpers
 * below are pure and unit-tested.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import {
  access,
  chmod,
  copyFile,
  mkdir,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { gzip as gzipCallback, constants as zlibConstants } from 'node:zlib';
import type { LocalVmConfig } from '../../config.js';
import { LocalVmError, isLocalVmError } from '../../errors.js';
import { commandError, type Command, type CommandRunner, type RunOptions, type RunResult } from '../../runner.js';
import { GUEST_MODULE_DIR, INIT_TEMPLATES, renderInitFiles } from './image-init.js';

const gzip = promisify(gzipCallback);

export interface TinyImage {
  name: 'tiny';
  dir: string;
  kernel: string;
  initrd: string;
  append: string;
  hash: string;
  kernelVersion: string;
  builtAt: string;
  bootFormat: 'pvh-vmlinux' | 'bzimage';
}

export interface ImageEntry {
  name: string;
  dir: string;
  hash: string;
  sizeBytes: number;
  builtAt: string;
  kernelVersion: string;
}

export interface BuildOptions {
  config: LocalVmConfig;
  runner: CommandRunner;
  force?: boolean;
  log?: (line: string) => void;
}

/** Bump when the build procedure changes in a way the hashed inputs do not capture. */
export const BUILDER_VERSION = 1;

export const TINY_APPEND = 'console=ttyS0 quiet acpi=noirq panic=-1 rdinit=/init';

/** Loaded by /init before the agent starts: the agent's virtio-serial port needs them. */
export const EARLY_MODULES = [
  'virtio_ring',
  'virtio_pci_modern_dev',
  'virtio_pci_legacy_dev',
  'virtio',
  'virtio_pci',
  'virtio_console',
] as const;

/** Loaded in the background while the agent starts. */
export const LATE_MODULES = [
  'virtio_blk',
  'failover',
  'net_failover',
  'virtio_net',
  'virtio_rng',
  'button',
  'evdev',
  'jbd2',
  'mbcache',
  'crc16',
  // ext4 does not declare it, but cannot mount without a crc32c implementation.
  'crc32c_generic',
  'ext4',
] as const;

export const KERNEL_METAPACKAGE = 'linux-image-amd64';
const HOST_BUSYBOX = '/bin/busybox';
const HOST_QEMU_GA = '/usr/sbin/qemu-ga';
const IMAGE_JSON = 'image.json';
const KERNEL_RESOLVE_MEMO = '.tiny-kernel-package.json';
const STALE_TMP_MS = 2 * 60 * 60 * 1000;

/** The Debian package that provides each host tool, for TOOL_NOT_FOUND hints. */
const TOOL_PACKAGES: Record<string, string> = {
  'apt-get': 'apt',
  'apt-cache': 'apt',
  'dpkg-deb': 'dpkg',
  cpio: 'cpio',
  xz: 'xz-utils',
  busybox: 'busybox-static',
  [HOST_BUSYBOX]: 'busybox-static',
  'qemu-ga': 'qemu-guest-agent',
  [HOST_QEMU_GA]: 'qemu-guest-agent',
  ldd: 'libc-bin',
};

// ---------------------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------------------

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

const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

/** Offset of the first XZ stream header at or after `from` in `data`, or -1. */
export function findXzStreamOffset(data: Uint8Array, from = 0): number {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).indexOf(XZ_MAGIC, from);
}

/** True when `data` starts with the ELF magic. */
export function isElf(data: Uint8Array): boolean {
  return data.length >= 4 && data[0] === 0x7f && data[1] === 0x45 && data[2] === 0x4c && data[3] === 0x46;
}

function elf64(data: Uint8Array): Buffer | undefined {
  // Only 64-bit little-endian ELF matters here (x86_64 kernels, modules, host binaries).
  if (!isElf(data) || data.length < 64 || data[4] !== 2 || data[5] !== 1) return undefined;
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

function inRange(buf: Buffer, offset: number, size: number): boolean {
  return offset >= 0 && size >= 0 && offset + size <= buf.length;
}

/** The bytes of the named section of a 64-bit little-endian ELF file, or undefined. */
export function elfSection(data: Uint8Array, name: string): Buffer | undefined {
  const buf = elf64(data);
  if (!buf) return undefined;
  const shoff = Number(buf.readBigUInt64LE(0x28));
  const shentsize = buf.readUInt16LE(0x3a);
  const shnum = buf.readUInt16LE(0x3c);
  const shstrndx = buf.readUInt16LE(0x3e);
  if (shentsize < 64 || !inRange(buf, shoff, shentsize * shnum) || shstrndx >= shnum) return undefined;
  const header = (i: number) => {
    const at = shoff + i * shentsize;
    return {
      name: buf.readUInt32LE(at),
      offset: Number(buf.readBigUInt64LE(at + 24)),
      size: Number(buf.readBigUInt64LE(at + 32)),
    };
  };
  const strtab = header(shstrndx);
  if (!inRange(buf, strtab.offset, strtab.size)) return undefined;
  for (let i = 0; i < shnum; i++) {
    const h = header(i);
    const nameStart = strtab.offset + h.name;
    const nameEnd = buf.indexOf(0, nameStart);
    if (nameEnd < 0 || nameEnd > strtab.offset + strtab.size) continue;
    if (buf.toString('latin1', nameStart, nameEnd) !== name) continue;
    return inRange(buf, h.offset, h.size) ? buf.subarray(h.offset, h.offset + h.size) : undefined;
  }
  return undefined;
}

interface ProgramHeader {
  type: number;
  offset: number;
  size: number;
}

function programHeaders(buf: Buffer): ProgramHeader[] {
  const phoff = Number(buf.readBigUInt64LE(0x20));
  const phentsize = buf.readUInt16LE(0x36);
  const phnum = buf.readUInt16LE(0x38);
  if (phentsize < 56 || !inRange(buf, phoff, phentsize * phnum)) return [];
  const out: ProgramHeader[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    out.push({
      type: buf.readUInt32LE(at),
      offset: Number(buf.readBigUInt64LE(at + 8)),
      size: Number(buf.readBigUInt64LE(at + 32)),
    });
  }
  return out;
}

const PT_INTERP = 3;
const PT_NOTE = 4;

/** The program interpreter (dynamic loader) of an ELF executable; undefined when static. */
export function elfInterpreter(data: Uint8Array): string | undefined {
  const buf = elf64(data);
  if (!buf) return undefined;
  const interp = programHeaders(buf).find((p) => p.type === PT_INTERP);
  if (!interp || !inRange(buf, interp.offset, interp.size)) return undefined;
  return buf.toString('latin1', interp.offset, interp.offset + interp.size).replace(/\0+$/, '');
}

/** True when a kernel ELF carries the Xen PHYS32_ENTRY note that QEMU's PVH boot needs. */
export function hasPvhNote(data: Uint8Array): boolean {
  const buf = elf64(data);
  if (!buf) return false;
  const XEN_ELFNOTE_PHYS32_ENTRY = 18;
  for (const ph of programHeaders(buf)) {
    if (ph.type !== PT_NOTE || !inRange(buf, ph.offset, ph.size)) continue;
    let at = ph.offset;
    const end = ph.offset + ph.size;
    while (at + 12 <= end) {
      const namesz = buf.readUInt32LE(at);
      const descsz = buf.readUInt32LE(at + 4);
      const type = buf.readUInt32LE(at + 8);
      const name = buf.toString('latin1', at + 12, at + 12 + Math.max(0, namesz - 1));
      if (name === 'Xen' && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
      at += 12 + align4(namesz) + align4(descsz);
    }
  }
  return false;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** The modules a kernel module depends on, from its `.modinfo` section's `depends=` field. */
export function parseModinfoDepends(modinfo: Uint8Array): string[] {
  const text = Buffer.from(modinfo.buffer, modinfo.byteOffset, modinfo.byteLength).toString('latin1');
  for (const entry of text.split('\0')) {
    if (!entry.startsWith('depends=')) continue;
    return entry
      .slice('depends='.length)
      .split(',')
      .map((d) => normalizeModuleName(d.trim()))
      .filter((d) => d !== '');
  }
  return [];
}

/** Module names treat `-` and `_` alike (`virtio-rng.ko` is module `virtio_rng`). */
export function normalizeModuleName(name: string): string {
  return name.replace(/\.ko(\.(xz|gz|zst))?$/, '').replaceAll('-', '_');
}

/**
 * Orders `modules` so that each comes after everything it depends on; ties keep the input
 * order. Throws INTERNAL on a cycle or on a dependency missing from `depends`.
 */
export function orderModules(modules: readonly string[], depends: ReadonlyMap<string, readonly string[]>): string[] {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, path: string[]) => {
    const s = state.get(name);
    if (s === 'done') return;
    if (s === 'visiting') {
      throw new LocalVmError('INTERNAL', `kernel module dependency cycle: ${[...path, name].join(' -> ')}`);
    }
    const deps = depends.get(name);
    if (!deps) {
      throw new LocalVmError(
        'INTERNAL',
        `kernel module ${name} is unknown (needed by ${path.join(' -> ') || 'the image'})`,
      );
    }
    state.set(name, 'visiting');
    for (const d of deps) visit(d, [...path, name]);
    state.set(name, 'done');
    order.push(name);
  };
  for (const m of modules) visit(m, []);
  return order;
}

/** Deterministic content key of the image from its inputs (first 16 hex of a sha256). */
export function tinyImageHash(inputs: {
  builderVersion: number;
  kernelPackage: KernelPackage;
  files: ReadonlyArray<{ path: string; sha256: string }>;
  templates: ReadonlyArray<{ path: string; content: string }>;
  append: string;
  modules: readonly string[];
}): string {
  const h = createHash('sha256');
  const field = (label: string, value: string) => h.update(`${label}\0${value.length}\0${value}\0`);
  field('builder', String(inputs.builderVersion));
  field('kernel', `${inputs.kernelPackage.name}=${inputs.kernelPackage.version}`);
  for (const f of inputs.files) field(`file:${f.path}`, f.sha256);
  for (const t of inputs.templates) field(`template:${t.path}`, t.content);
  field('append', inputs.append);
  field('modules', inputs.modules.join(','));
  return h.digest('hex').slice(0, 16);
}

// ---------------------------------------------------------------------------------------
// Records on disk
// ---------------------------------------------------------------------------------------

interface ImageRecord {
  name: 'tiny';
  hash: string;
  /** File names relative to the image dir, so the cache can move. */
  kernel: string;
  initrd: string;
  append: string;
  kernelVersion: string;
  builtAt: string;
  bootFormat: TinyImage['bootFormat'];
  builderVersion: number;
  kernelPackage: KernelPackage;
}

function imagesDir(config: LocalVmConfig): string {
  return join(config.cacheDir, 'images');
}

async function readImageRecord(dir: string): Promise<ImageRecord | undefined> {
  let record: ImageRecord;
  try {
    record = JSON.parse(await readFile(join(dir, IMAGE_JSON), 'utf8')) as ImageRecord;
  } catch {
    return undefined;
  }
  if (typeof record !== 'object' || record === null || typeof record.hash !== 'string') return undefined;
  return record;
}

async function loadTiny(dir: string): Promise<TinyImage | undefined> {
  const r = await readImageRecord(dir);
  if (!r || r.name !== 'tiny') return undefined;
  const image: TinyImage = {
    name: 'tiny',
    dir,
    kernel: join(dir, r.kernel),
    initrd: join(dir, r.initrd),
    append: r.append,
    hash: r.hash,
    kernelVersion: r.kernelVersion,
    builtAt: r.builtAt,
    bootFormat: r.bootFormat,
  };
  if (!(await exists(image.kernel)) || !(await exists(image.initrd))) return undefined;
  return image;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path, fsConstants.R_OK);
    return true;
  } catch {
    return false;
  }
}

async function dirSize(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return total;
}

async function imageDirs(config: LocalVmConfig): Promise<string[]> {
  try {
    const entries = await readdir(imagesDir(config), { withFileTypes: true });
    return entries
      .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
      .map((e) => join(imagesDir(config), e.name));
  } catch {
    return [];
  }
}

/** The cached tiny image, or undefined when it has not been built (never builds). The newest build wins. */
export async function findTinyImage(config: LocalVmConfig): Promise<TinyImage | undefined> {
  const images: TinyImage[] = [];
  for (const dir of await imageDirs(config)) {
    const image = await loadTiny(dir);
    if (image) images.push(image);
  }
  return images.sort((a, b) => b.builtAt.localeCompare(a.builtAt))[0];
}

/** Every complete image in the cache, newest first. */
export async function listImages(config: LocalVmConfig): Promise<ImageEntry[]> {
  const entries: ImageEntry[] = [];
  for (const dir of await imageDirs(config)) {
    const r = await readImageRecord(dir);
    if (!r) continue;
    entries.push({
      name: r.name,
      dir,
      hash: r.hash,
      sizeBytes: await dirSize(dir),
      builtAt: r.builtAt,
      kernelVersion: r.kernelVersion,
    });
  }
  return entries.sort((a, b) => b.builtAt.localeCompare(a.builtAt));
}

// ---------------------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------------------

function installHint(tool: string): string {
  return `apt-get install -y ${TOOL_PACKAGES[tool] ?? tool}`;
}

function toolMissing(tool: string, cause?: unknown): LocalVmError {
  return new LocalVmError('TOOL_NOT_FOUND', `${tool} is needed to build the tiny image but was not found`, {
    hint: installHint(tool),
    cause,
  });
}

/** Runs a build step; missing tools get an install hint, failures become COMMAND_FAILED. */
async function step(
  runner: CommandRunner,
  cmd: Command,
  options: RunOptions & { hint?: string } = {},
): Promise<RunResult> {
  const { hint, ...runOptions } = options;
  let result: RunResult;
  try {
    result = await runner.run(cmd, { timeoutMs: 600_000, ...runOptions });
  } catch (error) {
    if (isLocalVmError(error, 'TOOL_NOT_FOUND')) throw toolMissing(cmd.file, error);
    throw error;
  }
  if (result.exitCode === 0 && !result.timedOut) return result;
  const error = commandError(result);
  if (!hint) throw error;
  throw new LocalVmError(error.code, error.message, { hint, command: error.command, cause: error });
}

async function sha256File(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

async function readHostBinary(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    throw toolMissing(path, error);
  }
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

async function resolveKernelPackage(config: LocalVmConfig, runner: CommandRunner): Promise<KernelPackage> {
  const memoPath = join(imagesDir(config), KERNEL_RESOLVE_MEMO);
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
  await mkdir(imagesDir(config), { recursive: true });
  const tmp = `${memoPath}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify({ fingerprint, kernelPackage }) + '\n');
  await rename(tmp, memoPath);
  return kernelPackage;
}

interface Inputs {
  kernelPackage: KernelPackage;
  busybox: Buffer;
  libraries: string[];
  hash: string;
}

interface HostInputs {
  busybox: Buffer;
  libraries: string[];
  hashFor(kernelPackage: KernelPackage): string;
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
 * A cached image whose host inputs still match, trusting the kernel it was built with. Used
 * when apt cannot say which kernel is current (lists removed, as in many container images).
 */
async function findCurrentWithAnyKernel(config: LocalVmConfig, host: HostInputs): Promise<TinyImage | undefined> {
  const matches: TinyImage[] = [];
  for (const dir of await imageDirs(config)) {
    const record = await readImageRecord(dir);
    if (record?.name !== 'tiny' || !record.kernelPackage) continue;
    if (host.hashFor(record.kernelPackage) !== record.hash) continue;
    const image = await loadTiny(dir);
    if (image) matches.push(image);
  }
  return matches.sort((a, b) => b.builtAt.localeCompare(a.builtAt))[0];
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
    kernelPackage = await resolveKernelPackage(config, runner);
  } catch (error) {
    const fallback = force ? undefined : await findCurrentWithAnyKernel(config, host);
    if (!fallback) throw error;
    log(`apt cannot name the current kernel (${(error as Error).message}); using the cached image ${fallback.hash}`);
    return fallback;
  }
  const inputs: Inputs = { ...host, kernelPackage, hash: host.hashFor(kernelPackage) };
  const finalDir = join(imagesDir(config), `tiny-${inputs.hash}`);
  if (!force) {
    const cached = await loadTiny(finalDir);
    if (cached) return cached;
  }

  // Check every tool before the 70 MB download, so a missing one fails fast.
  for (const tool of ['apt-get', 'dpkg-deb', 'xz', 'cpio']) {
    await step(runner, { file: tool, args: ['--version'] });
  }
  await mkdir(imagesDir(config), { recursive: true });
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

async function publish(out: string, finalDir: string, work: string, force: boolean): Promise<void> {
  if (force && (await exists(finalDir))) {
    // Move the old one aside first: rename cannot replace a non-empty directory.
    await rename(finalDir, join(work, 'previous'));
  }
  try {
    await rename(out, finalDir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // Another builder published the same content first; theirs is as good as ours.
    if ((code === 'ENOTEMPTY' || code === 'EEXIST') && (await loadTiny(finalDir))) return;
    throw error;
  }
}

async function removeStaleTemps(config: LocalVmConfig): Promise<void> {
  const dir = imagesDir(config);
  for (const name of await readdir(dir)) {
    if (!name.startsWith('.tmp-')) continue;
    try {
      const s = await stat(join(dir, name));
      if (Date.now() - s.mtimeMs > STALE_TMP_MS) await rm(join(dir, name), { recursive: true, force: true });
    } catch {
      // another process removed it
    }
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
  const kernelVersion = vmlinuz.slice('vmlinuz-'.length);
  const bzImage = join(root, 'boot', vmlinuz);

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
  await stageUserland(staging, inputs, runner, moduleOrder.early, moduleOrder.late);
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
  const initrdFile = 'initramfs.cpio.gz';
  await writeFile(
    join(out, initrdFile),
    await gzip(await readFile(cpioPath), { level: zlibConstants.Z_BEST_COMPRESSION }),
  );

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

/** The bzImage's embedded XZ payload, decompressed; undefined unless it is a PVH-bootable ELF. */
async function extractVmlinux(bzImage: string, work: string, runner: CommandRunner): Promise<string | undefined> {
  const data = await readFile(bzImage);
  // The magic can in principle occur before the real payload; try the first few candidates.
  let offset = findXzStreamOffset(data);
  for (let attempt = 0; attempt < 4 && offset >= 0; attempt++) {
    const xzPath = join(work, 'vmlinux.xz');
    const outPath = join(work, 'vmlinux');
    await writeFile(xzPath, data.subarray(offset));
    // --single-stream: the bzImage continues after the payload; that tail is not XZ.
    const r = await runner.run({ file: 'xz', args: ['-d', '-f', '--single-stream', xzPath] }, { timeoutMs: 300_000 });
    if (r.exitCode === 0 && (await exists(outPath))) {
      const vmlinux = await readFile(outPath);
      if (isElf(vmlinux) && hasPvhNote(vmlinux)) return outPath;
    }
    await rm(xzPath, { force: true });
    await rm(outPath, { force: true });
    offset = findXzStreamOffset(data, offset + 1);
  }
  return undefined;
}

async function indexModules(moduleRoot: string): Promise<Map<string, string>> {
  const index = new Map<string, string>();
  for (const entry of await readdir(moduleRoot, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !/\.ko(\.(xz|gz))?$/.test(entry.name)) continue;
    index.set(normalizeModuleName(entry.name), join(entry.parentPath, entry.name));
  }
  return index;
}

/** Copies the wanted modules (and their dependencies), uncompressed, into `dest`; returns load order. */
async function stageModules(
  moduleRoot: string,
  dest: string,
  work: string,
  runner: CommandRunner,
): Promise<{ early: string[]; late: string[] }> {
  const index = await indexModules(moduleRoot);
  await mkdir(dest, { recursive: true });
  const depends = new Map<string, string[]>();
  const queue: string[] = [...EARLY_MODULES, ...LATE_MODULES];
  while (queue.length > 0) {
    const name = queue.shift() as string;
    if (depends.has(name)) continue;
    const source = index.get(name);
    if (!source) throw new LocalVmError('NOT_FOUND', `kernel module ${name} is not in the kernel package`);
    const target = join(dest, `${name}.ko`);
    await decompressModule(source, target, work, runner);
    const modinfo = elfSection(await readFile(target), '.modinfo');
    if (!modinfo) throw new LocalVmError('INTERNAL', `${source} has no .modinfo section`);
    const deps = parseModinfoDepends(modinfo);
    depends.set(name, deps);
    queue.push(...deps);
  }
  const early = orderModules(EARLY_MODULES, depends);
  const all = orderModules([...EARLY_MODULES, ...LATE_MODULES], depends);
  return { early, late: all.filter((m) => !early.includes(m)) };
}

async function decompressModule(source: string, target: string, work: string, runner: CommandRunner): Promise<void> {
  const compressed = /\.(xz|gz)$/.exec(source)?.[1];
  if (!compressed) {
    await copyFile(source, target);
    return;
  }
  // busybox insmod cannot read compressed modules.
  const tmp = join(work, `module.ko.${compressed}`);
  await copyFile(source, tmp);
  await step(runner, { file: compressed === 'xz' ? 'xz' : 'gzip', args: ['-d', '-f', tmp] });
  await rename(tmp.slice(0, -(compressed.length + 1)), target);
}

async function stageUserland(
  staging: string,
  inputs: Inputs,
  runner: CommandRunner,
  early: string[],
  late: string[],
): Promise<void> {
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
  await writeFile(join(staging, 'bin/busybox'), inputs.busybox, { mode: 0o755 });
  const applets = parseBusyboxApplets((await step(runner, { file: HOST_BUSYBOX, args: ['--list-full'] })).stdout);
  for (const applet of applets) {
    const path = join(staging, applet);
    if (await exists(path)) continue;
    await mkdir(dirname(path), { recursive: true });
    await symlink(relative(dirname(path), join(staging, 'bin/busybox')), path);
  }
  await copyFile(HOST_QEMU_GA, join(staging, 'usr/sbin/qemu-ga'));
  await chmod(join(staging, 'usr/sbin/qemu-ga'), 0o755);
  // Libraries go where ldd found them, so the loader's default search path finds them.
  for (const lib of inputs.libraries) {
    const target = join(staging, lib);
    await mkdir(dirname(target), { recursive: true });
    await copyFile(lib, target);
  }
  for (const file of renderInitFiles(early, late)) {
    const target = join(staging, file.path);
    await mkdir(dirname(target), { recursive: true });
    await rm(target, { force: true });
    await writeFile(target, file.content, { mode: file.mode });
    await chmod(target, file.mode);
  }
}

/** Relative paths under `root`, each directory before its contents, sorted for reproducibility. */
async function listTree(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true });
  return entries.map((e) => e.split('\\').join('/')).sort();
}
