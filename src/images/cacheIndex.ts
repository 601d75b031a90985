/**
 * The download cache: `<cacheDir>/downloads/<algorithm>-<hex>.<ext>` files, named by the
 * checksum they were verified against, and `index.json` saying where each came from. The
 * index functions are pure; reading and updating the file are the two I/O functions at the end.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import type { LocalVmConfig } from '../config.js';
import { withLock } from '../host/lock.js';
import { mkdirPrivate } from '../host/privateDir.js';
import { formatChecksum, type Checksum } from './checksum.js';

export interface DownloadEntry {
  /** Short id for `image rm`: the first 12 hex digits of the checksum. */
  id: string;
  /** File name inside the downloads directory. */
  file: string;
  /** The URL it was last fetched from. */
  url: string;
  /** What the file was verified against (`sha256:<hex>`); also its name. */
  checksum: string;
  /** The SHA256SUMS URL the checksum came from, when it came from one. */
  checksumUrl?: string | undefined;
  sizeBytes: number;
  format: 'qcow2' | 'raw';
  fetchedAt: string;
}

export interface DownloadIndex {
  version: 1;
  entries: DownloadEntry[];
}

export const INDEX_FILE = 'index.json';
const INDEX_LOCK_MS = 30_000;

export function downloadsDir(config: Pick<LocalVmConfig, 'cacheDir'>): string {
  return join(config.cacheDir, 'downloads');
}

/** The cached file's name for content verified against `checksum`. Pure. */
export function cachedFileName(checksum: Checksum, ext: string): string {
  return `${checksum.algorithm}-${checksum.hex}.${ext}`;
}

const emptyIndex = (): DownloadIndex => ({ version: 1, entries: [] });

function isEntry(e: unknown): e is DownloadEntry {
  const x = e as Partial<DownloadEntry> | null;
  return (
    typeof x === 'object' &&
    x !== null &&
    typeof x.file === 'string' &&
    /^sha(256|512)-[0-9a-f]+\.[a-z0-9]+$/.test(x.file) &&
    typeof x.url === 'string' &&
    typeof x.checksum === 'string' &&
    typeof x.sizeBytes === 'number' &&
    (x.format === 'qcow2' || x.format === 'raw') &&
    typeof x.fetchedAt === 'string'
  );
}

/**
 * The index in `text`. An unreadable index is an empty one: its files are then unknown and
 * downloaded again (by rename over the same name), never trusted without a record. Entries
 * that do not have the expected shape are dropped. Pure.
 */
export function parseIndex(text: string | undefined): DownloadIndex {
  if (text === undefined) return emptyIndex();
  try {
    const value = JSON.parse(text) as Partial<DownloadIndex>;
    if (value.version !== 1 || !Array.isArray(value.entries)) return emptyIndex();
    return { version: 1, entries: value.entries.filter(isEntry) };
  } catch {
    return emptyIndex();
  }
}

/** `index` with `entry` recorded (replacing the entry of the same file). Pure. */
export function withEntry(index: DownloadIndex, entry: DownloadEntry): DownloadIndex {
  return { version: 1, entries: [...index.entries.filter((e) => e.file !== entry.file), entry] };
}

/** `index` without the entries of `files`. Pure. */
export function withoutFiles(index: DownloadIndex, files: readonly string[]): DownloadIndex {
  return { version: 1, entries: index.entries.filter((e) => !files.includes(e.file)) };
}

/**
 * The entry for `url` verified against `checksum`, or (without a checksum) the newest entry
 * fetched from `url` whose checksum came from `checksumUrl`: a checksum file's answer is
 * pinned by the first verified download. Pure.
 */
export function findEntry(
  index: DownloadIndex,
  want: { url: string; checksum?: Checksum | undefined; checksumUrl?: string | undefined },
): DownloadEntry | undefined {
  const candidates = want.checksum
    ? index.entries.filter((e) => e.checksum === formatChecksum(want.checksum as Checksum))
    : want.checksumUrl
      ? index.entries.filter((e) => e.url === want.url && e.checksumUrl === want.checksumUrl)
      : [];
  return candidates.sort((a, b) => b.fetchedAt.localeCompare(a.fetchedAt))[0];
}

/** Entries `ref` names: an id (or a longer prefix of the checksum's hex), a file name, or a URL. Pure. */
export function entriesMatching(index: DownloadIndex, ref: string): DownloadEntry[] {
  const r = ref.trim();
  if (/^[0-9a-f]{6,}$/i.test(r)) {
    return index.entries.filter((e) => (e.checksum.split(':')[1] ?? '').startsWith(r.toLowerCase()));
  }
  return index.entries.filter((e) => e.url === r || e.file === r);
}

/** Newest first, for listing. Pure. */
export function listEntries(index: DownloadIndex): DownloadEntry[] {
  return [...index.entries].sort((a, b) => b.fetchedAt.localeCompare(a.fetchedAt));
}

/** Reads the index (empty when there is none). */
export async function readIndex(dir: string): Promise<DownloadIndex> {
  return parseIndex(await readFile(join(dir, INDEX_FILE), 'utf8').catch(() => undefined));
}

/**
 * Read-modify-write of the index under a file lock, written atomically (temp + rename), so
 * two pulls finishing together both land. `change` may do more (remove files) under the lock.
 */
export async function updateIndex<T>(
  dir: string,
  change: (index: DownloadIndex) => Promise<{ index: DownloadIndex; result: T }>,
): Promise<T> {
  await mkdirPrivate(dir);
  return withLock(join(dir, '.index.lock'), { timeoutMs: INDEX_LOCK_MS, what: 'download index' }, async () => {
    const { index, result } = await change(await readIndex(dir));
    await writeFileAtomic(join(dir, INDEX_FILE), `${JSON.stringify(index, null, 2)}\n`, { mode: 0o600 });
    return result;
  });
}
