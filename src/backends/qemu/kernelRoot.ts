/**
 * Planning `kernel` together with `image` (read-only): the image's first guest bytes are read
 * (a raw file directly, a qcow2 through qemu-io) so that an `append` without `root=` gets the
 * root device the image's layout implies (rootDisk.ts decides).
 */
import { open } from 'node:fs/promises';
import { runChecked, type CommandRunner } from '../../runner.js';
import type { VmSpec } from '../../schema.js';
import type { DirectKernel, ImageFormat } from './cmdline.js';
import type { BootRecord } from './state.js';
import { parseQemuIoHex, qemuIoHead, rootAppend, rootLayout, hasRoot, ROOT_HEAD_BYTES } from './rootDisk.js';

async function guestHead(runner: CommandRunner, image: string, format: ImageFormat): Promise<Buffer> {
  if (format === 'qcow2') {
    const r = await runChecked(runner, qemuIoHead(image, format, ROOT_HEAD_BYTES), { timeoutMs: 30_000 });
    return parseQemuIoHex(r.stdout);
  }
  const file = await open(image, 'r');
  try {
    const buffer = Buffer.alloc(ROOT_HEAD_BYTES);
    const { bytesRead } = await file.read(buffer, 0, ROOT_HEAD_BYTES, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await file.close();
  }
}

/**
 * The direct kernel boot of `spec` on root disk `image` (the user's image, under the VM's
 * overlay), or `{}` when the spec boots no kernel. VALIDATION naming `append` when it has no
 * `root=` and the image's layout cannot be told (or the image is not downloaded yet).
 */
export async function kernelOnRoot(
  runner: CommandRunner,
  spec: VmSpec,
  image: string,
  format: ImageFormat,
): Promise<{ kernel?: DirectKernel }> {
  if (!spec.kernel) return {};
  const k = { kernel: spec.kernel, ...(spec.initrd !== undefined ? { initrd: spec.initrd } : {}) };
  if (hasRoot(spec.append)) return { kernel: { ...k, append: spec.append } };
  let why: string | undefined;
  const head = await guestHead(runner, image, format).catch((error: unknown) => {
    why =
      (error as NodeJS.ErrnoException).code === 'ENOENT'
        ? 'the image is not downloaded yet'
        : `its first bytes could not be read: ${(error as Error).message.split('\n')[0]}`;
    return Buffer.alloc(0);
  });
  return { kernel: { ...k, append: rootAppend(spec.append, rootLayout(head), image, why) } };
}

/** The boot of a VM whose root disk is `overlay` over the user's `image`: the disk, and the kernel that boots it if any. */
export async function rootBoot(
  runner: CommandRunner,
  spec: VmSpec,
  overlay: string,
  image: string,
  format: ImageFormat,
): Promise<BootRecord> {
  return { kind: 'disk', image: overlay, format: 'qcow2', ...(await kernelOnRoot(runner, spec, image, format)) };
}

/** Every file a boot needs: kernel and initrd (direct boots), the root disk (disk boots). Pure. */
export function bootFiles(boot: BootRecord): string[] {
  const k = boot.kind === 'kernel' ? boot : boot.kernel;
  return [...(k ? [k.kernel, ...(k.initrd ? [k.initrd] : [])] : []), ...(boot.kind === 'disk' ? [boot.image] : [])];
}
