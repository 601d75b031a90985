/**
 * Images by URL on libvirt: the download goes through the same verified cache as QEMU's
 * (src/images), here on this machine, and the cached file is then uploaded into each host's
 * pool like a local image (named by content, so once per host). A dry run never downloads:
 * it uses the cached file when there is one, else says what the create would download.
 */
import type { LocalVmConfig } from '../../config.js';
import {
  findCachedImage,
  formatChecksum,
  isImageUrl,
  parseImageUrl,
  pullImage,
  pullRequestOf,
  resolveChecksum,
  SUMS_TIMEOUT_MS,
} from '../../images/index.js';
import type { VmSpec } from '../../schema.js';

/** The local file a URL image is (cached), or the download a create would make first. */
export type UrlImage = { path: string } | { pending: { url: string; checksum: string } };

/**
 * undefined when `spec.image` is not a URL. With `download` (a real create) the image is
 * pulled into the cache (verified) when it is not there yet; without (a dry run) only the cache
 * and a checksum URL are read.
 */
export async function urlImage(spec: VmSpec, config: LocalVmConfig, download: boolean): Promise<UrlImage | undefined> {
  if (!isImageUrl(spec.image)) return undefined;
  const req = pullRequestOf(spec);
  if (download) return { path: (await pullImage(config, req)).path };
  const cached = await findCachedImage(config, req);
  if (cached) return { path: cached.path };
  const checksum = await resolveChecksum(req, { timeoutMs: SUMS_TIMEOUT_MS });
  return { pending: { url: parseImageUrl(spec.image).href, checksum: formatChecksum(checksum) } };
}
