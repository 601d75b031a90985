/**
 * Image URLs, validated before anything is fetched. Pure: no I/O.
 *
 * A URL image is `http://` or `https://` only (no `file:`, `ftp:`, `data:`), carries no
 * credentials (they would land in vm.json, the cache index and every log line), and names a
 * file: the last path segment is what a SHA256SUMS entry is matched by and what gives the
 * cached file its extension.
 */
import { LocalVmError, type ValidationIssue } from '../errors.js';

export interface ImageUrl {
  /** The URL as given, normalised by WHATWG URL parsing. */
  href: string;
  /** The last path segment, percent-decoded (`debian-12-genericcloud-amd64.qcow2`). */
  fileName: string;
  /** The cached file's extension: the file name's last suffix when it is a plain word, else `img`. */
  ext: string;
}

const COMPRESSED = /\.(xz|gz|bz2|zst|zip|tar|tgz)$/i;

/** True when `image` is meant as a URL (the schema then validates it with parseImageUrl). */
export function isImageUrl(image: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(image);
}

/** Why `value` is not a usable image URL, or undefined when it is. Pure. */
export function imageUrlProblem(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'is not a valid URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    return `must be http:// or https://, not ${url.protocol}//`;
  if (url.username || url.password) return 'must not carry credentials (user:password@): they would be recorded';
  const fileName = lastSegment(url);
  if (!fileName)
    return 'must name a file (the last path segment), e.g. https://host/debian-12-genericcloud-amd64.qcow2';
  if (COMPRESSED.test(fileName)) return 'names a compressed file: decompress it first and give the qcow2 or raw image';
  return undefined;
}

function lastSegment(url: URL): string {
  const raw = url.pathname.split('/').pop() ?? '';
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/** Parses an image URL; VALIDATION (property `property`) saying what is wrong. Pure. */
export function parseImageUrl(value: string, property = 'image'): ImageUrl {
  const problem = imageUrlProblem(value);
  if (problem) {
    throw new LocalVmError('VALIDATION', `image URL ${value} ${problem}`, { issues: [{ property, reason: problem }] });
  }
  const url = new URL(value);
  const fileName = lastSegment(url);
  const ext = /\.([a-z0-9]{1,8})$/i.exec(fileName)?.[1]?.toLowerCase() ?? 'img';
  return { href: url.href, fileName, ext };
}

/** Where a redirect points, resolved against `from`; VALIDATION when it leaves http(s) or adds credentials. */
export function redirectTarget(from: string, location: string): string {
  let next: URL;
  try {
    next = new URL(location, from);
  } catch {
    throw new LocalVmError('PROTOCOL', `${from} redirected to an invalid URL: ${location}`);
  }
  if (next.protocol !== 'http:' && next.protocol !== 'https:') {
    throw new LocalVmError('PROTOCOL', `${from} redirected to ${next.protocol}// (only http and https are followed)`);
  }
  if (next.username || next.password)
    throw new LocalVmError('PROTOCOL', `${from} redirected to a URL with credentials`);
  return next.href;
}

/** The spec's image fields together: a URL needs exactly one checksum field, the checksum fields need a URL. Pure. */
export function imageSpecIssues(spec: {
  image?: string | undefined;
  imageChecksum?: string | undefined;
  imageChecksumUrl?: string | undefined;
}): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  const add = (property: string, reason: string) => issues.push({ property, reason });
  if (spec.image === undefined || !isImageUrl(spec.image)) {
    if (spec.imageChecksum !== undefined) add('imageChecksum', 'is only for an image given by URL');
    if (spec.imageChecksumUrl !== undefined) add('imageChecksumUrl', 'is only for an image given by URL');
    return issues;
  }
  const problem = imageUrlProblem(spec.image);
  if (problem) add('image', problem);
  if (spec.imageChecksum === undefined && spec.imageChecksumUrl === undefined)
    add(
      'imageChecksum',
      'is required for an image URL: give imageChecksum (sha256:<hex> from the SHA256SUMS published beside the image) or imageChecksumUrl (that SHA256SUMS URL)',
    );
  if (spec.imageChecksum !== undefined && spec.imageChecksumUrl !== undefined)
    add('imageChecksumUrl', 'give imageChecksum or imageChecksumUrl, not both');
  return issues;
}
