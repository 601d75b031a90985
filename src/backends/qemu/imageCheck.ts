/**
 * Is this file a disk image? A pure verdict over a file's first bytes and its size, so that
 * `--image /etc/passwd` is refused instead of booting as a "raw disk": qemu-img calls every
 * file it cannot name raw, and raw has no magic of its own.
 *
 * The rule: a qcow2 (magic `QFI\xfb`, version 2 or 3) is accepted. A raw file must look like
 * a disk: whole 512-byte sectors, at least 1 MiB, and at its start a partition table (MBR or
 * GPT), a known file system, or nothing at all (a blank disk, as `qemu-img create -f raw` or
 * `truncate` makes it). Anything else is refused and the verdict says what was found;
 * a raw disk without any of these converts to qcow2 (`qemu-img convert -f raw -O qcow2`),
 * which is accepted as it is.
 */

/** How many leading bytes the verdict looks at (btrfs keeps its superblock at 64 KiB). */
export const IMAGE_HEAD_BYTES = 72 * 1024;
export const MIN_RAW_BYTES = 1024 * 1024;
const SECTOR = 512;

export type ImageVerdict =
  { ok: true; format: 'qcow2' | 'raw'; found: string } | { ok: false; found: string; hint: string };

const CONVERT_HINT = 'give a qcow2 or raw disk image (convert others with qemu-img convert -O qcow2 SRC DST.qcow2)';

function at(head: Uint8Array, offset: number, magic: string | number[]): boolean {
  const bytes = typeof magic === 'string' ? Buffer.from(magic, 'latin1') : Buffer.from(magic);
  if (head.length < offset + bytes.length) return false;
  return Buffer.from(head.buffer, head.byteOffset + offset, bytes.length).equals(bytes);
}

/** Image formats QEMU knows that are not ours, by their magic at offset 0. */
const FOREIGN_IMAGES: [string | number[], string][] = [
  ['KDMV', 'a VMDK image'],
  ['# Disk DescriptorFile', 'a VMDK descriptor'],
  ['vhdxfile', 'a VHDX image'],
  ['conectix', 'a VHD (vpc) image'],
  ['QED\0', 'a QED image'],
  [[0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe], 'a LUKS-encrypted volume'],
  ['WithoutFreeSpace', 'a Parallels image'],
  ['WithouFreSpacExt', 'a Parallels image'],
];

/** Files people mistake for images: compressed downloads, archives, kernels. */
const NOT_IMAGES: [number, string | number[], string, string][] = [
  [0, [0x1f, 0x8b], 'a gzip-compressed file', 'decompress it first (gunzip -k FILE)'],
  [0, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], 'an xz-compressed file', 'decompress it first (unxz -k FILE)'],
  [0, [0x28, 0xb5, 0x2f, 0xfd], 'a zstd-compressed file', 'decompress it first (unzstd FILE)'],
  [0, 'BZh', 'a bzip2-compressed file', 'decompress it first (bunzip2 -k FILE)'],
  [0, 'PK\x03\x04', 'a zip archive', 'unpack the disk image from it first'],
  [257, 'ustar', 'a tar archive', 'unpack the disk image from it first (tar -xf FILE)'],
  [0, '\x7fELF', 'an ELF executable', 'boot a kernel with `kernel` (and `initrd`), not `image`'],
];

/** What a raw disk starts with, when it starts with something we know. */
function rawContent(head: Uint8Array): string | undefined {
  if (at(head, 512, 'EFI PART') || at(head, 4096, 'EFI PART')) return 'a GPT partition table';
  if (at(head, 1080, [0x53, 0xef])) return 'an ext2/3/4 file system';
  if (at(head, 0, 'XFSB')) return 'an XFS file system';
  if (at(head, 0x10040, '_BHRfS_M')) return 'a btrfs file system';
  if (at(head, 0, 'hsqs')) return 'a squashfs file system';
  if (at(head, 0x8001, 'CD001')) return 'an ISO 9660 file system';
  if (at(head, 512, 'LABELONE')) return 'an LVM physical volume';
  // Last: an MBR, and every boot sector (FAT, NTFS), end in 0x55 0xAA.
  if (at(head, 510, [0x55, 0xaa])) return 'an MBR partition table or boot sector';
  if (head.length > 0 && head.every((b) => b === 0)) return 'a blank disk (all zeros)';
  return undefined;
}

/** What the first bytes are, for the refusal, without quoting them. */
function describeStart(head: Uint8Array): string {
  const start = head.subarray(0, 24);
  const text = start.every((b) => b === 0x09 || b === 0x0a || b === 0x0d || (b >= 0x20 && b < 0x7f));
  // Never echo the text itself: the file may be anything the caller can read (/etc/shadow).
  if (text) return 'a text file';
  return `unrecognised data (starting ${Buffer.from(head.subarray(0, 8)).toString('hex')})`;
}

/**
 * The verdict on a file of `size` bytes whose first bytes are `head` (at least
 * IMAGE_HEAD_BYTES of them, or the whole file when it is shorter). Pure.
 */
export function checkImageBytes(head: Uint8Array, size: number): ImageVerdict {
  if (size === 0) return { ok: false, found: 'an empty file', hint: CONVERT_HINT };
  if (at(head, 0, [0x51, 0x46, 0x49, 0xfb])) {
    const version = head.length >= 8 ? Buffer.from(head.buffer, head.byteOffset).readUInt32BE(4) : 0;
    if (version === 2 || version === 3) return { ok: true, format: 'qcow2', found: `a qcow2 (v${version}) image` };
    return { ok: false, found: `a qcow image of version ${version}`, hint: CONVERT_HINT };
  }
  for (const [magic, what] of FOREIGN_IMAGES) {
    if (at(head, 0, magic)) return { ok: false, found: what, hint: CONVERT_HINT };
  }
  for (const [offset, magic, what, hint] of NOT_IMAGES) {
    if (at(head, offset, magic)) return { ok: false, found: what, hint };
  }
  const content = rawContent(head);
  const rawHint =
    'give a qcow2 or raw disk image; a raw disk localvm does not recognise is taken once converted: qemu-img convert -f raw -O qcow2 FILE FILE.qcow2';
  if (size < MIN_RAW_BYTES) {
    return {
      ok: false,
      found: `${content ?? describeStart(head)} of ${size} bytes (a raw disk is at least 1 MiB)`,
      hint: rawHint,
    };
  }
  if (size % SECTOR !== 0) {
    return {
      ok: false,
      found: `${content ?? describeStart(head)} of ${size} bytes, not a whole number of 512-byte sectors`,
      hint: rawHint,
    };
  }
  if (!content) {
    return {
      ok: false,
      found: `no partition table or known file system (${describeStart(head)})`,
      hint: rawHint,
    };
  }
  return { ok: true, format: 'raw', found: `a raw disk (${content})` };
}
