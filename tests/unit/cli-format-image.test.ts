/** The image formatters of the CLI: the list with downloads, the pull line, the progress line. */
import { describe, expect, it } from 'vitest';
import { formatDownloadProgress, formatImageTable, formatPulled, shortChecksum } from '../../src/cli/format.js';

const download = {
  id: 'abababababab',
  url: 'https://h/debian-12-genericcloud-amd64.qcow2',
  path: '/c/downloads/sha256-ab.qcow2',
  sizeBytes: 3 * 1024 * 1024,
  checksum: `sha256:${'ab'.repeat(32)}`,
  format: 'qcow2',
  fetchedAt: '2025-01-01T00:00:00.000Z',
};

describe('image formatters', () => {
  it('lists downloads with id, size, checksum and URL beside tiny builds', () => {
    const tiny = {
      name: 'tiny',
      hash: '0123456789abcdef',
      sizeBytes: 2048,
      builtAt: 'b',
      kernelVersion: '6.1',
      dir: '/d',
    };
    const text = formatImageTable([tiny], [download]);
    expect(text).toMatch(/^NAME\s+HASH/);
    expect(text).toContain('tiny  0123456789ab');
    expect(text).toMatch(
      /abababababab\s+3\.0 MiB\s+qcow2\s+sha256:abababababab…\s+2025-01-01T00:00:00\.000Z\s+https:\/\/h\//,
    );
    expect(formatImageTable([], [])).toMatch(/^no images .*image pull/);
    // Tiny-only output is what it was.
    expect(formatImageTable([tiny])).toBe(
      'NAME  HASH          SIZE     KERNEL  BUILT\ntiny  0123456789ab  2.0 KiB  6.1     b\n',
    );
  });

  it('says where a pulled image is and whether it was fetched now', () => {
    expect(formatPulled({ ...download, downloaded: false })).toBe(
      '/c/downloads/sha256-ab.qcow2 (3.0 MiB, qcow2, already cached, sha256:abababababab…)\n',
    );
    expect(shortChecksum('sha256:abc')).toBe('sha256:abc');
  });

  it('draws progress with the share done and the rate', () => {
    expect(formatDownloadProgress(50 * 1024 * 1024, 200 * 1024 * 1024, 1000)).toBe('50 MiB of 200 MiB (25%), 50 MiB/s');
    expect(formatDownloadProgress(1000, undefined, 0)).toBe('1000 B');
  });
});
