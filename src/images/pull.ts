/**
 * Images by URL: pulled once into the download cache, verified, and found again without
 * the network. `findCachedImage` never fetches; `resolveChecksum` may fetch a SHA256SUMS
 * file (a read, nothing written); `pullImage` downloads.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { LocalVmConfig } from '../config.js';
import { LocalVmError } from '../errors.js';
import { mkdirPrivate } from '../host/privateDir.js';
import { checksumFromSums, formatChecksum, parseChecksum, sniffImageFormat, type Checksum } from './checksum.js';
import {
  cachedFileName,
  downloadsDir,
  entriesMatching,
  findEntry,
  listEntries,
  readIndex,
  updateIndex,
  withEntry,
  withoutFiles,
  type DownloadEntry,
} from './cacheIndex.js';
import { downloadVerified, fetchText, type DownloadOptions, type FetchOptions } from './download.js';
import { imageUrlProblem, parseImageUrl } from './url.js';

export interface PullRequest {
  url: string;
  /** `sha256:<hex>` or `sha512:<hex>`. */
  checksum?: string | undefined;
  /** A SHA256SUMS/SHA512SUMS URL listing the image's file name. */
  checksumUrl?: string | undefined;
}

export interface CachedImage extends DownloadEntry {
  /** The cached file (absolute). */
  path: string;
  /** True when this call downloaded it, false when it came from the cache. */
  downloaded: boolean;
}

/** How long planning may spend reading a checksum URL (a SHA256SUMS file is small). */
export const SUMS_TIMEOUT_MS = 30_000;

/** The pull a spec's image URL asks for: the URL and the checksum it gives. */
export function pullRequestOf(spec: {
  image: string;
  imageChecksum?: string | undefined;
  imageChecksumUrl?: string | undefined;
}): PullRequest {
  return { url: spec.image, checksum: spec.imageChecksum, checksumUrl: spec.imageChecksumUrl };
}

const STALE_TMP_MS = 2 * 60 * 60 * 1000;

export const CHECKSUM_HINT =
  'give imageChecksum (`sha256:<hex>`, from the SHA256SUMS file published beside the image) or imageChecksumUrl ' +
  '(the URL of that SHA256SUMS file); on the CLI: image pull --checksum sha256:<hex> or --checksum-url <url>, ' +
  'create --image-checksum sha256:<hex> or --image-checksum-url <url>';

/** Validates a pull request at the door: the URL, and exactly one way of knowing the checksum. Pure. */
export function checkPullRequest(req: PullRequest): { checksum?: Checksum | undefined } {
  parseImageUrl(req.url);
  if (req.checksum === undefined && req.checksumUrl === undefined) {
    throw new LocalVmError('VALIDATION', `a checksum is required to download ${req.url}`, {
      hint: CHECKSUM_HINT,
      issues: [{ property: 'imageChecksum', reason: 'is required for an image URL' }],
    });
  }
  if (req.checksum !== undefined && req.checksumUrl !== undefined) {
    throw new LocalVmError('VALIDATION', 'give either a checksum or a checksum URL, not both', {
      issues: [{ property: 'imageChecksumUrl', reason: 'conflicts with imageChecksum' }],
    });
  }
  if (req.checksumUrl !== undefined) {
    const problem = imageUrlProblem(req.checksumUrl);
    if (problem)
      throw new LocalVmError('VALIDATION', `checksum URL ${req.checksumUrl} ${problem}`, {
        issues: [{ property: 'imageChecksumUrl', reason: problem }],
      });
  }
  return { checksum: req.checksum === undefined ? undefined : parseChecksum(req.checksum) };
}

async function usable(config: LocalVmConfig, entry: DownloadEntry | undefined): Promise<CachedImage | undefined> {
  if (!entry) return undefined;
  const path = join(downloadsDir(config), entry.file);
  const st = await stat(path).catch(() => undefined);
  // A file of another size is not the one that was verified: it is downloaded again.
  if (!st?.isFile() || st.size !== entry.sizeBytes) return undefined;
  return { ...entry, path, downloaded: false };
}

/**
 * The cached, verified file for `req`, or undefined; never touches the network. With a
 * checksum, any file verified against it counts (whichever URL it came from). With a checksum
 * URL, the newest file fetched from this URL with that checksum URL counts: the first
 * verified download is pinned until it is removed (`localvm image rm`).
 */
export async function findCachedImage(config: LocalVmConfig, req: PullRequest): Promise<CachedImage | undefined> {
  const { checksum } = checkPullRequest(req);
  const url = parseImageUrl(req.url).href;
  return usable(
    config,
    findEntry(await readIndex(downloadsDir(config)), { url, checksum, checksumUrl: req.checksumUrl }),
  );
}

/** The checksum `req` asks for: given, or read from its checksum URL (a fetch; nothing is written). */
export async function resolveChecksum(req: PullRequest, options: FetchOptions = {}): Promise<Checksum> {
  const { checksum } = checkPullRequest(req);
  if (checksum) return checksum;
  const sumsUrl = req.checksumUrl as string;
  return checksumFromSums(await fetchText(sumsUrl, options), parseImageUrl(req.url).fileName, sumsUrl);
}

/** Where `req`'s file will be cached once verified against `checksum`. Pure. */
export function cachedPathFor(config: LocalVmConfig, url: string, checksum: Checksum): string {
  return join(downloadsDir(config), cachedFileName(checksum, parseImageUrl(url).ext));
}

/** qcow2 or raw from an image's first bytes; VALIDATION for anything QEMU would misread as raw. */
function acceptedFormat(url: string, head: Uint8Array): 'qcow2' | 'raw' {
  const sniffed = sniffImageFormat(head);
  if (typeof sniffed === 'string') return sniffed;
  throw new LocalVmError('VALIDATION', `${url} is a ${sniffed.unsupported} file, not a qcow2 or raw disk image`, {
    hint: 'localvm boots qcow2 and raw images; convert or decompress it first (qemu-img convert, xz -d)',
    issues: [{ property: 'image', reason: `${sniffed.unsupported} is not supported` }],
  });
}

async function removeStaleTemps(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!name.startsWith('.tmp-')) continue;
    const st = await stat(join(dir, name)).catch(() => undefined);
    // A live download's temp is younger; a killed one's is removed here, and the pull starts over.
    if (st && Date.now() - st.mtimeMs > STALE_TMP_MS) await rm(join(dir, name), { force: true }).catch(() => undefined);
  }
}

/**
 * Downloads `req.url` into the cache unless a verified copy is there, and returns it. The
 * file is hashed while streaming and published only when it matches (see downloadVerified);
 * qcow2 and raw images are accepted, other formats and compressed files refused (VALIDATION).
 */
export async function pullImage(
  config: LocalVmConfig,
  req: PullRequest,
  options: DownloadOptions = {},
): Promise<CachedImage> {
  const cached = await findCachedImage(config, req);
  if (cached) return cached;
  const url = parseImageUrl(req.url);
  const checksum = await resolveChecksum(req, options);
  // The checksum file may name content already cached from another URL.
  const same = await usable(config, findEntry(await readIndex(downloadsDir(config)), { url: url.href, checksum }));
  const dir = downloadsDir(config);
  let format: 'qcow2' | 'raw' = 'raw';
  const file = cachedFileName(checksum, url.ext);
  let downloaded: { sizeBytes: number } | undefined = same;
  if (!downloaded) {
    await mkdirPrivate(dir);
    await removeStaleTemps(dir);
    const result = await downloadVerified(url.href, checksum, dir, file, {
      ...options,
      inspect: (head) => {
        format = acceptedFormat(url.href, head);
        options.inspect?.(head);
      },
    });
    downloaded = { sizeBytes: result.sizeBytes };
  }
  if (same) format = same.format;
  const entry: DownloadEntry = {
    id: checksum.hex.slice(0, 12),
    file,
    url: url.href,
    checksum: formatChecksum(checksum),
    checksumUrl: req.checksumUrl,
    sizeBytes: downloaded.sizeBytes,
    format,
    fetchedAt: new Date().toISOString(),
  };
  await updateIndex(dir, async (index) => ({ index: withEntry(index, entry), result: undefined }));
  return { ...entry, path: join(dir, file), downloaded: !same };
}

/** The downloaded images in the cache, newest first, each with its absolute path. */
export async function listDownloads(config: LocalVmConfig): Promise<(DownloadEntry & { path: string })[]> {
  const dir = downloadsDir(config);
  return listEntries(await readIndex(dir)).map((e) => ({ ...e, path: join(dir, e.file) }));
}

/**
 * Removes the downloaded images `ref` names (an id, a URL, or a file name). NOT_FOUND when it
 * names none; CONFLICT, removing nothing, when `usedBy` reports a VM using one of them (an
 * overlay whose backing file it is).
 */
export async function removeDownload(
  config: LocalVmConfig,
  ref: string,
  usedBy: (path: string, entry: DownloadEntry) => Promise<string[]>,
): Promise<(DownloadEntry & { path: string })[]> {
  const dir = downloadsDir(config);
  const matched = entriesMatching(await readIndex(dir), ref);
  if (matched.length === 0) {
    throw new LocalVmError('NOT_FOUND', `no downloaded image matches ${ref}`, {
      hint: 'localvm image list shows the downloaded images with their ids and URLs',
    });
  }
  return updateIndex(dir, async (index) => {
    const entries = entriesMatching(index, ref).map((e) => ({ ...e, path: join(dir, e.file) }));
    for (const e of entries) {
      const vms = await usedBy(e.path, e);
      if (vms.length > 0) {
        throw new LocalVmError('CONFLICT', `${e.url} (${e.id}) is the backing file of ${vms.join(', ')}`, {
          hint: `delete ${vms.length > 1 ? 'those VMs' : 'that VM'} first (localvm delete ${vms.join(' ')})`,
          details: { path: e.path, vms },
        });
      }
    }
    for (const e of entries) await rm(e.path, { force: true });
    return {
      index: withoutFiles(
        index,
        entries.map((e) => e.file),
      ),
      result: entries,
    };
  });
}
