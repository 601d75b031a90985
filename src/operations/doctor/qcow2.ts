/**
 * The backing file named in a qcow2 header, read without running `qemu-img` (one process
 * per overlay would cost doctor its budget). Header layout (qcow2 spec, all big-endian):
 * magic "QFI\xfb" at 0, backing_file_offset (u64) at 8, backing_file_size (u32) at 16.
 */
import { open } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';

const MAGIC = 0x514649fb;

/** Where the backing file name lies in a qcow2 header; null for no backing file, undefined when not qcow2. Pure. */
export function qcow2BackingRange(header: Uint8Array): { offset: number; size: number } | null | undefined {
  if (header.length < 20) return undefined;
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  if (view.getUint32(0) !== MAGIC) return undefined;
  const offset = Number(view.getBigUint64(8));
  const size = view.getUint32(16);
  if (offset === 0 || size === 0) return null;
  // A name longer than 1023 bytes is not something qemu-img writes.
  if (size > 1023 || !Number.isSafeInteger(offset)) return undefined;
  return { offset, size };
}

/** The backing file's path as QEMU resolves it (relative names are relative to the image's directory). Pure. */
export function resolveBacking(imagePath: string, name: string): string {
  return isAbsolute(name) ? name : resolve(dirname(imagePath), name);
}

/** The absolute backing file path of the qcow2 at `path`; undefined when it has none or is unreadable. */
export async function readQcow2Backing(path: string): Promise<string | undefined> {
  let fh;
  try {
    fh = await open(path, 'r');
    const header = new Uint8Array(20);
    await fh.read(header, 0, 20, 0);
    const range = qcow2BackingRange(header);
    if (!range) return undefined;
    const name = new Uint8Array(range.size);
    const { bytesRead } = await fh.read(name, 0, range.size, range.offset);
    if (bytesRead !== range.size) return undefined;
    return resolveBacking(path, Buffer.from(name).toString('utf8'));
  } catch {
    return undefined;
  } finally {
    await fh?.close();
  }
}
