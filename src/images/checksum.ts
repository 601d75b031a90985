/**
 * Checksums of downloaded images: `sha256:<hex>` / `sha512:<hex>`, and the SHA256SUMS /
 * SHA512SUMS files publishers put next to their images. Pure: no I/O.
 */
import { LocalVmError } from '../errors.js';

export type ChecksumAlgorithm = 'sha256' | 'sha512';

export interface Checksum {
  algorithm: ChecksumAlgorithm;
  /** Lower-case hex. */
  hex: string;
}

const HEX_LENGTH: Record<ChecksumAlgorithm, number> = { sha256: 64, sha512: 128 };

/** Why `value` is not `sha256:<64 hex>` or `sha512:<128 hex>`, or undefined. Pure. */
export function checksumProblem(value: string): string | undefined {
  const m = /^(sha256|sha512):([0-9a-fA-F]+)$/.exec(value.trim());
  if (!m) return 'must be sha256:<hex> or sha512:<hex>';
  const algorithm = m[1] as ChecksumAlgorithm;
  if ((m[2] ?? '').length !== HEX_LENGTH[algorithm])
    return `a ${algorithm} checksum has ${HEX_LENGTH[algorithm]} hex digits, not ${(m[2] ?? '').length}`;
  return undefined;
}

/** Parses `sha256:<hex>`; VALIDATION naming `property` when it is not one. Pure. */
export function parseChecksum(value: string, property = 'imageChecksum'): Checksum {
  const problem = checksumProblem(value);
  if (problem)
    throw new LocalVmError('VALIDATION', `checksum "${value}" ${problem}`, { issues: [{ property, reason: problem }] });
  const [algorithm, hex] = value.trim().split(':') as [ChecksumAlgorithm, string];
  return { algorithm, hex: hex.toLowerCase() };
}

export function formatChecksum(c: Checksum): string {
  return `${c.algorithm}:${c.hex}`;
}

export interface SumsEntry {
  hex: string;
  /** The file name as listed (a leading `*` of binary mode and `./` removed). */
  name: string;
}

/**
 * Parses a SHA256SUMS/SHA512SUMS file in the coreutils format (`<hex>  <name>`, `<hex> *<name>`);
 * also the BSD tag form `SHA256 (<name>) = <hex>`. Lines that are neither (blank lines, PGP armour
 * around a signed file, comments) are skipped. Pure.
 */
export function parseSums(text: string): SumsEntry[] {
  const entries: SumsEntry[] = [];
  for (const line of text.split(/\r?\n/)) {
    const gnu = /^([0-9a-fA-F]{64}|[0-9a-fA-F]{128}) [ *](.+)$/.exec(line);
    const bsd = /^SHA(?:256|512) \((.+)\) = ([0-9a-fA-F]{64}|[0-9a-fA-F]{128})$/.exec(line);
    const hex = gnu?.[1] ?? bsd?.[2];
    const name = gnu?.[2] ?? bsd?.[1];
    if (hex && name) entries.push({ hex: hex.toLowerCase(), name: name.trim().replace(/^\.\//, '') });
  }
  return entries;
}

/**
 * The checksum listed for `fileName` in a sums file's text. The algorithm follows the digest's
 * length. NOT_FOUND when the file is not listed, VALIDATION when it is listed twice differently.
 */
export function checksumFromSums(text: string, fileName: string, sumsUrl: string): Checksum {
  const matches = parseSums(text).filter((e) => e.name === fileName || e.name.split('/').pop() === fileName);
  const distinct = [...new Set(matches.map((m) => m.hex))];
  if (distinct.length === 0) {
    throw new LocalVmError('NOT_FOUND', `${sumsUrl} lists no checksum for ${fileName}`, {
      hint: 'check that the checksum file belongs to this image (same directory, same release)',
    });
  }
  if (distinct.length > 1)
    throw new LocalVmError('VALIDATION', `${sumsUrl} lists ${fileName} with different checksums`);
  const hex = distinct[0] as string;
  return { algorithm: hex.length === 64 ? 'sha256' : 'sha512', hex };
}

/**
 * The format of a disk image from its first bytes. qcow2 images start with `QFI\xfb`; other
 * container formats and compressed files are refused (QEMU would boot them as raw bytes);
 * anything else is raw, as QEMU itself would take it. Pure.
 */
export function sniffImageFormat(head: Uint8Array): 'qcow2' | 'raw' | { unsupported: string } {
  const starts = (...bytes: number[]) => bytes.every((b, i) => head[i] === b);
  if (starts(0x51, 0x46, 0x49, 0xfb)) return 'qcow2';
  const text = Buffer.from(head.subarray(0, 8)).toString('latin1');
  if (text.startsWith('KDMV')) return { unsupported: 'vmdk' };
  if (text.startsWith('vhdxfile')) return { unsupported: 'vhdx' };
  if (text.startsWith('QED\0')) return { unsupported: 'qed' };
  if (starts(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) return { unsupported: 'xz-compressed' };
  if (starts(0x1f, 0x8b)) return { unsupported: 'gzip-compressed' };
  if (starts(0x28, 0xb5, 0x2f, 0xfd)) return { unsupported: 'zstd-compressed' };
  return 'raw';
}
