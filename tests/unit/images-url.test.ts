/** Images by URL, the pure parts: URL validation, checksums, SHA256SUMS files, the cache index, the spec fields. */
import { describe, expect, it } from 'vitest';
import { isLocalVmError } from '../../src/errors.js';
import {
  cachedFileName,
  entriesMatching,
  findEntry,
  parseIndex,
  withEntry,
  withoutFiles,
  type DownloadEntry,
  type DownloadIndex,
} from '../../src/images/cacheIndex.js';
import {
  checksumFromSums,
  checksumProblem,
  parseChecksum,
  parseSums,
  sniffImageFormat,
} from '../../src/images/checksum.js';
import { checkPullRequest } from '../../src/images/pull.js';
import { imageUrlProblem, isImageUrl, parseImageUrl, redirectTarget } from '../../src/images/url.js';
import { parseVmSpec, specFingerprint } from '../../src/schema.js';
import { codeOfSync } from '../fixtures/rejection.js';

const HEX256 = 'ab'.repeat(32);
const HEX512 = 'cd'.repeat(64);
const URL1 = 'https://images.example.org/bookworm/debian-12-genericcloud-amd64.qcow2';

function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (error) {
    if (isLocalVmError(error)) return (error.issues ?? []).map((i) => i.property);
    throw error;
  }
  return [];
}

describe('image URLs', () => {
  it('tells a URL from a path or a distro name', () => {
    expect(isImageUrl(URL1)).toBe(true);
    expect(isImageUrl('http://127.0.0.1:8080/a.img')).toBe(true);
    expect(isImageUrl('file:///tmp/a.qcow2')).toBe(true);
    expect(isImageUrl('/images/a.qcow2')).toBe(false);
    expect(isImageUrl('tiny')).toBe(false);
    expect(isImageUrl('ubuntu:noble')).toBe(false);
  });

  it('takes the file name and extension from the last path segment', () => {
    expect(parseImageUrl(URL1)).toMatchObject({ fileName: 'debian-12-genericcloud-amd64.qcow2', ext: 'qcow2' });
    expect(parseImageUrl('http://h/dir/noble-server-cloudimg-amd64.img?x=1')).toMatchObject({
      fileName: 'noble-server-cloudimg-amd64.img',
      ext: 'img',
    });
    expect(parseImageUrl('http://h/a%20b.RAW').fileName).toBe('a b.RAW');
    expect(parseImageUrl('http://h/a%20b.RAW').ext).toBe('raw');
    expect(parseImageUrl('http://h/disk').ext).toBe('img');
  });

  it.each([
    ['file:///tmp/a.qcow2', /http/],
    ['ftp://h/a.qcow2', /http/],
    ['https://user:secret@h/a.qcow2', /credentials/],
    ['https://token@h/a.qcow2', /credentials/],
    ['https://h/', /name a file/],
    ['https://h', /name a file/],
    ['https://h/Fedora.raw.xz', /compressed/],
    ['https://exa mple/a.qcow2', /valid URL/],
  ])('refuses %s', (url, reason) => {
    expect(imageUrlProblem(url)).toMatch(reason);
    expect(codeOfSync(() => parseImageUrl(url))).toBe('VALIDATION');
  });

  it('follows redirects only to http(s) without credentials, relative ones resolved', () => {
    expect(redirectTarget('http://a/x/y.qcow2', '/z/y.qcow2')).toBe('http://a/z/y.qcow2');
    expect(redirectTarget('http://a/x/y.qcow2', 'https://b/y.qcow2')).toBe('https://b/y.qcow2');
    expect(codeOfSync(() => redirectTarget('http://a/y', 'file:///etc/passwd'))).toBe('PROTOCOL');
    expect(codeOfSync(() => redirectTarget('http://a/y', 'http://u:p@b/y'))).toBe('PROTOCOL');
  });
});

describe('checksums', () => {
  it('parses sha256 and sha512, lower-casing the hex', () => {
    expect(parseChecksum(`sha256:${HEX256.toUpperCase()}`)).toEqual({ algorithm: 'sha256', hex: HEX256 });
    expect(parseChecksum(`sha512:${HEX512}`)).toEqual({ algorithm: 'sha512', hex: HEX512 });
  });

  it.each([
    [HEX256, /sha256:<hex>/],
    [`md5:${'a'.repeat(32)}`, /sha256:<hex>/],
    [`sha256:${'a'.repeat(63)}`, /64 hex digits, not 63/],
    [`sha512:${HEX256}`, /128 hex digits/],
    ['sha256:xyz', /sha256:<hex>/],
  ])('refuses %s', (value, reason) => {
    expect(checksumProblem(value)).toMatch(reason);
    expect(codeOfSync(() => parseChecksum(value))).toBe('VALIDATION');
  });

  const SUMS = [
    `${'1'.repeat(64)}  debian-12-genericcloud-amd64.json`,
    `${'2'.repeat(64)}  debian-12-genericcloud-amd64.qcow2`,
    `${'3'.repeat(64)} *debian-12-genericcloud-amd64.raw`,
    '',
    'not a line',
    `SHA256 (noble.img) = ${'4'.repeat(64)}`,
    `${'5'.repeat(128)}  ./sub/big.qcow2`,
  ].join('\n');

  it('parses SHA256SUMS lines in text, binary and BSD form, skipping the rest', () => {
    expect(parseSums(SUMS)).toEqual([
      { hex: '1'.repeat(64), name: 'debian-12-genericcloud-amd64.json' },
      { hex: '2'.repeat(64), name: 'debian-12-genericcloud-amd64.qcow2' },
      { hex: '3'.repeat(64), name: 'debian-12-genericcloud-amd64.raw' },
      { hex: '4'.repeat(64), name: 'noble.img' },
      { hex: '5'.repeat(128), name: 'sub/big.qcow2' },
    ]);
  });

  it('finds the entry of the URL file name, the algorithm from the digest length', () => {
    expect(checksumFromSums(SUMS, 'debian-12-genericcloud-amd64.qcow2', 'u')).toEqual({
      algorithm: 'sha256',
      hex: '2'.repeat(64),
    });
    expect(checksumFromSums(SUMS, 'big.qcow2', 'u')).toEqual({ algorithm: 'sha512', hex: '5'.repeat(128) });
    expect(codeOfSync(() => checksumFromSums(SUMS, 'other.qcow2', 'u'))).toBe('NOT_FOUND');
    const twice = `${'a'.repeat(64)}  x.img\n${'b'.repeat(64)}  x.img\n`;
    expect(codeOfSync(() => checksumFromSums(twice, 'x.img', 'u'))).toBe('VALIDATION');
  });

  it('knows qcow2 and raw from the first bytes and refuses formats QEMU would misread as raw', () => {
    expect(sniffImageFormat(Uint8Array.from([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]))).toBe('qcow2');
    expect(sniffImageFormat(Buffer.from('\0\0\0\0\0\0\0\0'))).toBe('raw');
    expect(sniffImageFormat(Buffer.from('KDMV\x01\0\0\0'))).toEqual({ unsupported: 'vmdk' });
    expect(sniffImageFormat(Uint8Array.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0]))).toEqual({
      unsupported: 'xz-compressed',
    });
    expect(sniffImageFormat(Uint8Array.from([0x1f, 0x8b, 8]))).toEqual({ unsupported: 'gzip-compressed' });
  });
});

describe('the download cache index', () => {
  const entry = (over: Partial<DownloadEntry> = {}): DownloadEntry => ({
    id: HEX256.slice(0, 12),
    file: cachedFileName({ algorithm: 'sha256', hex: HEX256 }, 'qcow2'),
    url: URL1,
    checksum: `sha256:${HEX256}`,
    sizeBytes: 10,
    format: 'qcow2',
    fetchedAt: '2025-01-01T00:00:00.000Z',
    ...over,
  });

  it('names files by the checksum they were verified against', () => {
    expect(cachedFileName({ algorithm: 'sha512', hex: HEX512 }, 'img')).toBe(`sha512-${HEX512}.img`);
  });

  it('reads back what it wrote; anything unreadable is an empty index', () => {
    const index: DownloadIndex = withEntry({ version: 1, entries: [] }, entry());
    expect(parseIndex(JSON.stringify(index))).toEqual(index);
    expect(parseIndex(undefined).entries).toEqual([]);
    expect(parseIndex('{torn').entries).toEqual([]);
    expect(parseIndex(JSON.stringify({ version: 2, entries: [entry()] })).entries).toEqual([]);
    // An entry whose file name could escape the directory is dropped.
    expect(parseIndex(JSON.stringify({ version: 1, entries: [entry({ file: '../../etc/passwd' })] })).entries).toEqual(
      [],
    );
  });

  it('replaces the entry of the same file, removes by file', () => {
    const a = withEntry({ version: 1, entries: [] }, entry());
    const b = withEntry(a, entry({ url: 'http://mirror/x.qcow2', fetchedAt: '2025-02-01T00:00:00.000Z' }));
    expect(b.entries).toHaveLength(1);
    expect(b.entries[0]?.url).toBe('http://mirror/x.qcow2');
    expect(withoutFiles(b, [entry().file]).entries).toEqual([]);
  });

  it('finds by checksum (any URL), or by URL and checksum URL (the first download pinned)', () => {
    const sums = 'https://images.example.org/bookworm/SHA512SUMS';
    const older = entry({ checksumUrl: sums });
    const newer = entry({
      file: `sha256-${'ef'.repeat(32)}.qcow2`,
      checksum: `sha256:${'ef'.repeat(32)}`,
      checksumUrl: sums,
      fetchedAt: '2025-03-01T00:00:00.000Z',
    });
    const index = withEntry(withEntry({ version: 1, entries: [] }, older), newer);
    expect(findEntry(index, { url: 'http://other/x', checksum: { algorithm: 'sha256', hex: HEX256 } })).toBe(older);
    expect(findEntry(index, { url: URL1, checksum: { algorithm: 'sha256', hex: '00'.repeat(32) } })).toBeUndefined();
    expect(findEntry(index, { url: URL1, checksumUrl: sums })).toBe(newer);
    expect(findEntry(index, { url: URL1, checksumUrl: `${sums}.other` })).toBeUndefined();
    expect(findEntry(index, { url: URL1 })).toBeUndefined();
  });

  it('matches `image rm` references by id or hex prefix, URL, or file name', () => {
    const index = withEntry({ version: 1, entries: [] }, entry());
    expect(entriesMatching(index, HEX256.slice(0, 12))).toHaveLength(1);
    expect(entriesMatching(index, HEX256.slice(0, 8).toUpperCase())).toHaveLength(1);
    expect(entriesMatching(index, URL1)).toHaveLength(1);
    expect(entriesMatching(index, entry().file)).toHaveLength(1);
    expect(entriesMatching(index, 'abc')).toHaveLength(0);
    expect(entriesMatching(index, 'https://other/x.qcow2')).toHaveLength(0);
  });
});

describe('pull requests and the spec fields', () => {
  it('require exactly one checksum for a URL, with a hint on how to get one', () => {
    expect(codeOfSync(() => checkPullRequest({ url: URL1 }))).toBe('VALIDATION');
    try {
      checkPullRequest({ url: URL1 });
    } catch (error) {
      expect(isLocalVmError(error) && error.hint).toMatch(/SHA256SUMS/);
    }
    expect(
      codeOfSync(() => checkPullRequest({ url: URL1, checksum: `sha256:${HEX256}`, checksumUrl: 'https://h/SUMS' })),
    ).toBe('VALIDATION');
    expect(codeOfSync(() => checkPullRequest({ url: URL1, checksumUrl: 'ftp://h/SUMS' }))).toBe('VALIDATION');
    expect(checkPullRequest({ url: URL1, checksum: `sha256:${HEX256}` }).checksum?.hex).toBe(HEX256);
  });

  it('accepts a URL image with a checksum or a checksum URL', () => {
    expect(parseVmSpec({ name: 'vm', image: URL1, imageChecksum: `sha256:${HEX256}` }).imageChecksum).toBe(
      `sha256:${HEX256}`,
    );
    expect(parseVmSpec({ name: 'vm', image: URL1, imageChecksumUrl: 'https://h/SHA256SUMS' }).image).toBe(URL1);
  });

  it.each([
    [{ image: URL1 }, 'imageChecksum'],
    [{ image: URL1, imageChecksum: `sha256:${HEX256}`, imageChecksumUrl: 'https://h/S' }, 'imageChecksumUrl'],
    [{ image: URL1, imageChecksum: 'sha256:00' }, 'imageChecksum'],
    [{ image: URL1, imageChecksumUrl: 'file:///S' }, 'imageChecksumUrl'],
    [{ image: 'https://u:p@h/a.qcow2', imageChecksum: `sha256:${HEX256}` }, 'image'],
    [{ image: 'file:///a.qcow2', imageChecksum: `sha256:${HEX256}` }, 'image'],
    [{ image: '/images/a.qcow2', imageChecksum: `sha256:${HEX256}` }, 'imageChecksum'],
    [{ imageChecksumUrl: 'https://h/S' }, 'imageChecksumUrl'],
  ])('refuses %j at %s', (patch, property) => {
    expect(issuesOf(() => parseVmSpec({ name: 'vm', ...patch }))).toContain(property);
  });

  it('keeps the fingerprint of specs without a URL image, and tells checksums apart', () => {
    const plain = parseVmSpec({ name: 'vm', image: '/a.qcow2' });
    // The value this spec had before the URL fields existed (adoption compares fingerprints).
    expect(specFingerprint(plain)).toBe('462fbf693f4d3b10');
    const a = parseVmSpec({ name: 'vm', image: URL1, imageChecksum: `sha256:${HEX256}` });
    const b = parseVmSpec({ name: 'vm', image: URL1, imageChecksum: `sha256:${'ef'.repeat(32)}` });
    expect(specFingerprint(a)).not.toBe(specFingerprint(b));
  });
});
