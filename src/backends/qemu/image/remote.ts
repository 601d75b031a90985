/**
 * QEMU and images by URL: planning resolves a URL to its cached download, or plans a
 * `download` step (a dry run never downloads); applying that step pulls and verifies the
 * image; and which VMs use a cached file as their overlay's backing file (so `image rm`
 * can refuse).
 */
import { resolve } from 'node:path';
import type { LocalVmConfig } from '../../../config.js';
import { LocalVmError } from '../../../errors.js';
import {
  cachedPathFor,
  findCachedImage,
  formatChecksum,
  isImageUrl,
  parseImageUrl,
  pullImage,
  pullRequestOf,
  resolveChecksum,
  SUMS_TIMEOUT_MS,
  type DownloadEntry,
} from '../../../images/index.js';
import { parseQemuImgInfo } from '../../../parsers.js';
import type { CommandRunner } from '../../../runner.js';
import type { VmSpec } from '../../../schema.js';
import type { QemuHost } from '../host.js';
import type { QemuStep } from '../plan.js';
import { qemuImg } from '../qemuImg.js';
import { listVmNames, readRecord, vmPaths } from '../state.js';

/** The plan step that downloads a URL image into the cache (a QemuAction, executed by apply.ts). */
export interface DownloadAction {
  kind: 'download';
  url: string;
  /** Resolved while planning, so what a dry run prints is what is verified. */
  checksum: string;
  checksumUrl?: string | undefined;
  /** The cached file it becomes. */
  path: string;
  /** The format planned from the file name, checked against the bytes. */
  format: 'qcow2' | 'raw';
}

export interface RemoteImagePlan {
  /** Planned like a local image's boot (resolveBoot): the overlay replaces `image` in the record. */
  boot: { kind: 'disk'; image: string; format: 'qcow2' };
  /** The cached file, the overlay's backing file (there once the download step ran). */
  image: string;
  format: 'qcow2' | 'raw';
  /** The download, when the image is not cached yet; runs before anything else is written. */
  steps: QemuStep[];
}

/**
 * Where the root disk of `spec` comes from when its image is a URL; undefined otherwise (with
 * `kernel` too: the kernel then boots the image as its root disk, see kernelRoot.ts). Reads the
 * cache only, and a checksum URL when nothing is cached for it yet; never downloads the image.
 * An uncached image's format is taken from its name (`.raw` is raw, anything else qcow2, as
 * cloud images are published) and checked once the bytes are there.
 */
export async function planRemoteImage(host: QemuHost, spec: VmSpec): Promise<RemoteImagePlan | undefined> {
  if (!isImageUrl(spec.image)) return undefined;
  const req = pullRequestOf(spec);
  const boot = { kind: 'disk', image: '', format: 'qcow2' } as const;
  const cached = await findCachedImage(host.config, req);
  if (cached) return { boot, image: cached.path, format: cached.format, steps: [] };
  const checksum = await resolveChecksum(req, { timeoutMs: SUMS_TIMEOUT_MS });
  const url = parseImageUrl(spec.image);
  const path = cachedPathFor(host.config, url.href, checksum);
  const format = url.ext === 'raw' ? 'raw' : 'qcow2';
  const action: DownloadAction = {
    kind: 'download',
    url: url.href,
    checksum: formatChecksum(checksum),
    checksumUrl: spec.imageChecksumUrl,
    path,
    format,
  };
  const summary = `download ${url.href} → ${path} (verified against ${action.checksum}, ${format})`;
  return { boot, image: path, format, steps: [{ summary, action }] };
}

/** Executes a `download` step: pulls and verifies the image into the cache (a no-op when it is there). */
export async function applyDownload(host: QemuHost, vm: string, a: DownloadAction): Promise<void> {
  const started = performance.now();
  let lastLogged = 0;
  const image = await pullImage(
    host.config,
    // The checksum was resolved when planning: what was printed is what is verified.
    { url: a.url, checksum: a.checksum },
    {
      onProgress: (p) => {
        if (performance.now() - lastLogged < 5_000) return;
        lastLogged = performance.now();
        const of = p.totalBytes ? ` of ${p.totalBytes}` : '';
        host.log(`${vm}: downloading ${a.url}: ${p.receivedBytes}${of} bytes`);
      },
    },
  );
  if (image.path !== a.path || image.format !== a.format) {
    throw new LocalVmError(
      'VALIDATION',
      `${a.url} turned out to be ${image.format}, not ${a.format} as its name says`,
      {
        vm,
        hint: 'the verified image is cached now: run the create again and it is planned with its real format',
        details: { planned: a.path, cached: image.path },
      },
    );
  }
  const seconds = (performance.now() - started) / 1000;
  if (image.downloaded)
    host.log(`${vm}: downloaded ${image.sizeBytes} bytes in ${seconds.toFixed(1)} s → ${image.path}`);
}

/**
 * Names of the QEMU VMs whose overlay has `path` as its backing file: from each VM record,
 * its overlay is read with `qemu-img info` (the truth, also for a VM given the cached path
 * directly); when an overlay cannot be read, a record asking for the same download counts.
 */
export async function vmsUsingImage(
  config: LocalVmConfig,
  runner: CommandRunner,
  path: string,
  entry: Pick<DownloadEntry, 'url' | 'checksum' | 'checksumUrl'>,
): Promise<string[]> {
  const users: string[] = [];
  for (const name of await listVmNames(config.stateDir)) {
    const record = await readRecord(vmPaths(config.stateDir, config.runDir, name).record).catch(() => undefined);
    if (!record) continue;
    const spec = record.spec;
    const asked =
      spec.image === entry.url &&
      (spec.imageChecksum === entry.checksum ||
        (spec.imageChecksumUrl !== undefined && spec.imageChecksumUrl === entry.checksumUrl));
    if (record.boot.kind !== 'disk') continue;
    const info = await runner
      .run(qemuImg.info(record.boot.image), { timeoutMs: 30_000 })
      .then((r) => (r.exitCode === 0 ? parseQemuImgInfo(r.stdout) : undefined))
      .catch(() => undefined);
    const backing = info?.fullBackingFile ?? info?.backingFile;
    if (info ? backing !== undefined && resolve(record.paths.dir, backing) === resolve(path) : asked) users.push(name);
  }
  return users;
}
