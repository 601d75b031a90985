/**
 * The checks on the files a VM boots from, made while planning a create, before anything is
 * written: each must be a regular file (not a directory, not /dev/zero), and a disk image
 * must look like one (the pure verdict of imageCheck.ts over its first bytes). Read-only.
 */
import type { Stats } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { LocalVmError } from '../../errors.js';
import { checkImageBytes, IMAGE_HEAD_BYTES } from './imageCheck.js';

/** What a path that is not a regular file is, for the refusal of `property` (image, kernel, initrd). Pure. */
export function fileKind(st: Stats, property: string): string {
  if (st.isDirectory()) return 'is a directory';
  const not = property === 'image' ? 'not a disk image file' : 'not a regular file';
  if (st.isCharacterDevice()) return `is a character device, ${not}`;
  if (st.isBlockDevice()) return `is a block device, ${not}`;
  if (st.isFIFO()) return `is a named pipe, ${not}`;
  if (st.isSocket()) return `is a socket, ${not}`;
  return 'is not a regular file';
}

function invalid(vm: string, property: string, path: string, reason: string, hint?: string): LocalVmError {
  return new LocalVmError('VALIDATION', `${property} ${path} ${reason}`, { vm, hint, issues: [{ property, reason }] });
}

const errnoOf = (error: unknown) => (error as NodeJS.ErrnoException).code ?? String(error);

/**
 * `path` (the spec's `property`: image, kernel, initrd) as a regular file: NOT_FOUND when
 * it is absent, VALIDATION naming `property` when it is something else or cannot be read.
 */
export async function checkBootFile(vm: string, property: string, path: string): Promise<Stats> {
  let st: Stats;
  try {
    st = await stat(path);
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') {
      throw new LocalVmError('NOT_FOUND', `${property} ${path} does not exist`, {
        vm,
        hint: property === 'image' ? 'give `tiny`, or the path of a qcow2/raw disk image' : undefined,
      });
    }
    throw invalid(vm, property, path, `cannot be read (${errnoOf(error)})`);
  }
  if (!st.isFile()) throw invalid(vm, property, path, fileKind(st, property));
  return st;
}

/**
 * The format of the disk image at `path` as its first bytes show it; VALIDATION naming
 * `image` and saying what was found when it does not look like a disk image.
 */
export async function checkDiskImage(vm: string, path: string): Promise<'qcow2' | 'raw'> {
  const st = await checkBootFile(vm, 'image', path);
  let file: FileHandle | undefined;
  let head: Uint8Array;
  try {
    file = await open(path, 'r');
    const buffer = Buffer.alloc(IMAGE_HEAD_BYTES);
    const { bytesRead } = await file.read(buffer, 0, IMAGE_HEAD_BYTES, 0);
    head = buffer.subarray(0, bytesRead);
  } catch (error) {
    throw invalid(vm, 'image', path, `cannot be read (${errnoOf(error)})`);
  } finally {
    await file?.close();
  }
  const verdict = checkImageBytes(head, st.size);
  if (!verdict.ok) throw invalid(vm, 'image', path, `is not a disk image: found ${verdict.found}`, verdict.hint);
  return verdict.format;
}
