/**
 * A kernel booted directly with an image as its root disk (`kernel` + `image`): the image is
 * the first virtio disk (`/dev/vda`), and an `append` without `root=` gets the one the
 * image's layout implies: `root=/dev/vda1` for a partitioned disk (cloud images put their
 * root file system in partition 1), `root=/dev/vda` for a bare file system. The layout comes
 * from the image's first bytes: read directly from a raw file, through `qemu-io` (read-only,
 * `--force-share`) from a qcow2, whose guest bytes are not its file bytes. The decisions and
 * the parser of qemu-io's hex dump are pure; reading is the caller's (plan.ts).
 */
import { positional } from '../../argv.js';
import { LocalVmError } from '../../errors.js';
import type { Command } from '../../runner.js';
import { optionValue, type ImageFormat } from './cmdline.js';

export type RootLayout = 'partitioned' | 'filesystem' | 'unknown';

/** How many leading guest bytes the layout needs (btrfs keeps its superblock at 64 KiB). */
export const ROOT_HEAD_BYTES = 72 * 1024;

function at(head: Uint8Array, offset: number, magic: string | number[]): boolean {
  const bytes = typeof magic === 'string' ? Buffer.from(magic, 'latin1') : Buffer.from(magic);
  return (
    head.length >= offset + bytes.length && Buffer.from(head.subarray(offset, offset + bytes.length)).equals(bytes)
  );
}

/** An MBR whose four entries are well-formed (boot flag 0 or 0x80) and at least one is used. */
function mbrWithPartitions(head: Uint8Array): boolean {
  if (!at(head, 510, [0x55, 0xaa])) return false;
  let used = 0;
  for (let i = 0; i < 4; i++) {
    const entry = 446 + 16 * i;
    const flag = head[entry] ?? 0;
    if (flag !== 0 && flag !== 0x80) return false; // boot code of a FAT/NTFS boot sector, not a table
    if ((head[entry + 4] ?? 0) !== 0) used++;
  }
  return used > 0;
}

/** What the guest sees at the start of the disk: a partition table, a bare file system, or neither. Pure. */
export function rootLayout(head: Uint8Array): RootLayout {
  if (
    at(head, 1080, [0x53, 0xef]) || // ext2/3/4
    at(head, 0, 'XFSB') ||
    at(head, 0x10040, '_BHRfS_M') ||
    at(head, 0, 'hsqs')
  )
    return 'filesystem';
  if (at(head, 512, 'EFI PART') || at(head, 4096, 'EFI PART') || mbrWithPartitions(head)) return 'partitioned';
  return 'unknown';
}

/**
 * The kernel command line for a root disk of `layout`: `append` as given when it names a
 * `root=` (the user's choice), else with the default root appended. VALIDATION naming
 * `append` when the layout is unknown: guessing could boot the wrong file system. Pure.
 */
export function rootAppend(
  append: string | undefined,
  layout: RootLayout,
  image: string,
  why = 'the image has no partition table or file system localvm recognises',
): string {
  const given = append ?? '';
  if (hasRoot(given)) return given;
  if (layout === 'unknown') {
    throw new LocalVmError(
      'VALIDATION',
      `kernel with image ${image}: cannot tell which device holds the root file system (${why})`,
      {
        issues: [{ property: 'append', reason: `needs root=… (${why})` }],
        hint: 'give append with root=/dev/vda1 (first partition) or root=/dev/vda (a bare file system), e.g. --append "console=ttyS0 root=/dev/vda1"',
      },
    );
  }
  const root = layout === 'partitioned' ? 'root=/dev/vda1' : 'root=/dev/vda';
  return given.trim() === '' ? root : `${given} ${root}`;
}

/** True when `append` names the root device itself. Pure. */
export const hasRoot = (append: string | undefined) => /(^|\s)root=/.test(append ?? '');

/** `qemu-io` reading the first `bytes` guest bytes of `image` as a hex dump, read-only, beside running VMs. Pure. */
export function qemuIoHead(image: string, format: ImageFormat, bytes: number, binary = 'qemu-io'): Command {
  const path = positional('image', optionValue('image', image));
  return { file: binary, args: ['-r', '-U', '-f', format, '-c', `read -v 0 ${bytes}`, path] };
}

const HEX_LINE = /^([0-9a-f]{8}):((?: +[0-9a-f]{2}){1,16})/;

/** The bytes of a `qemu-io -c 'read -v …'` hex dump (lines `OFFSET:  xx xx …  ascii`). Pure. */
export function parseQemuIoHex(stdout: string): Buffer {
  const chunks: { offset: number; bytes: number[] }[] = [];
  let end = 0;
  for (const line of stdout.split('\n')) {
    const m = HEX_LINE.exec(line);
    if (!m) continue;
    const offset = Number.parseInt(m[1] ?? '0', 16);
    const bytes = (m[2] ?? '')
      .trim()
      .split(/ +/)
      .map((h) => Number.parseInt(h, 16));
    chunks.push({ offset, bytes });
    end = Math.max(end, offset + bytes.length);
  }
  const out = Buffer.alloc(end);
  for (const c of chunks) out.set(c.bytes, c.offset);
  return out;
}
