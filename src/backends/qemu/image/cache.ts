/**
 * The image cache, `<cacheDir>/images/<name>-<hash>/` with an `image.json` record: the
 * content key, finding and listing images, and publishing a finished build atomically.
 */
import { createHash } from 'node:crypto';
import { readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { LocalVmConfig } from '../../../config.js';
import type { KernelPackage } from './kernelPackage.js';
import { readable } from './steps.js';

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

export interface ImageRecord {
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

export const IMAGE_JSON = 'image.json';
const STALE_TMP_MS = 2 * 60 * 60 * 1000;

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

export function imagesDir(config: LocalVmConfig): string {
  return join(config.cacheDir, 'images');
}

export async function readImageRecord(dir: string): Promise<ImageRecord | undefined> {
  let record: ImageRecord;
  try {
    record = JSON.parse(await readFile(join(dir, IMAGE_JSON), 'utf8')) as ImageRecord;
  } catch {
    return undefined;
  }
  if (typeof record !== 'object' || record === null || typeof record.hash !== 'string') return undefined;
  return record;
}

/** The tiny image in `dir`, or undefined unless its record and both boot files are there. */
export async function loadTiny(dir: string): Promise<TinyImage | undefined> {
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
  if (!(await readable(image.kernel)) || !(await readable(image.initrd))) return undefined;
  return image;
}

async function dirSize(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return total;
}

/** Image directories in the cache; dot-names (temps, memos) are not images. */
export async function imageDirs(config: LocalVmConfig): Promise<string[]> {
  try {
    const entries = await readdir(imagesDir(config), { withFileTypes: true });
    return entries
      .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
      .map((e) => join(imagesDir(config), e.name));
  } catch {
    return [];
  }
}

const newestFirst = <T extends { builtAt: string }>(items: T[]): T[] =>
  items.sort((a, b) => b.builtAt.localeCompare(a.builtAt));

/** The cached tiny image, or undefined when it has not been built (never builds). The newest build wins. */
export async function findTinyImage(config: LocalVmConfig): Promise<TinyImage | undefined> {
  const images: TinyImage[] = [];
  for (const dir of await imageDirs(config)) {
    const image = await loadTiny(dir);
    if (image) images.push(image);
  }
  return newestFirst(images)[0];
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
  return newestFirst(entries);
}

/** The newest cached tiny image whose record satisfies `matches` (and whose files are there). */
export async function findTinyWhere(
  config: LocalVmConfig,
  matches: (record: ImageRecord) => boolean,
): Promise<TinyImage | undefined> {
  const found: TinyImage[] = [];
  for (const dir of await imageDirs(config)) {
    const record = await readImageRecord(dir);
    if (record?.name !== 'tiny' || !matches(record)) continue;
    const image = await loadTiny(dir);
    if (image) found.push(image);
  }
  return newestFirst(found)[0];
}

/**
 * Moves a finished build `out` to `finalDir` by rename, so a crash never leaves a half image
 * that looks complete. With `force` the old image is moved aside into `work` first.
 */
export async function publish(out: string, finalDir: string, work: string, force: boolean): Promise<void> {
  if (force && (await readable(finalDir))) {
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

/** Removes build temps that crashed builders left over two hours ago. */
export async function removeStaleTemps(config: LocalVmConfig): Promise<void> {
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
