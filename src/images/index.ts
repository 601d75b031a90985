/**
 * Images by URL: validated URLs and checksums (url.ts, checksum.ts, pure), the download
 * cache and its index (cacheIndex.ts), verified atomic downloads (download.ts), and the
 * operations on them (pull.ts).
 */
export { isImageUrl, parseImageUrl, imageUrlProblem, type ImageUrl } from './url.js';
export {
  checksumFromSums,
  checksumProblem,
  formatChecksum,
  parseChecksum,
  parseSums,
  sniffImageFormat,
  type Checksum,
  type ChecksumAlgorithm,
  type SumsEntry,
} from './checksum.js';
export { downloadsDir, type DownloadEntry } from './cacheIndex.js';
export { type DownloadOptions, type DownloadProgress, type FetchOptions } from './download.js';
export {
  cachedPathFor,
  findCachedImage,
  listDownloads,
  pullImage,
  pullRequestOf,
  removeDownload,
  resolveChecksum,
  SUMS_TIMEOUT_MS,
  type CachedImage,
  type PullRequest,
} from './pull.js';
