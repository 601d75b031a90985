/**
 * The uncompressed ELF vmlinux inside a Debian bzImage: QEMU boots it directly via PVH,
 * which halves boot time under TCG compared with the bzImage.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CommandRunner } from '../../../runner.js';
import { hasPvhNote, isElf } from './elf.js';
import { readable } from './steps.js';

const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

/** Offset of the first XZ stream header at or after `from` in `data`, or -1. */
export function findXzStreamOffset(data: Uint8Array, from = 0): number {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).indexOf(XZ_MAGIC, from);
}

/**
 * The bzImage's embedded XZ payload, decompressed into `work`; returns its path, or
 * undefined unless it is a PVH-bootable ELF.
 */
export async function extractVmlinux(
  bzImage: string,
  work: string,
  runner: CommandRunner,
): Promise<string | undefined> {
  const data = await readFile(bzImage);
  // The magic can in principle occur before the real payload; try the first few candidates.
  let offset = findXzStreamOffset(data);
  for (let attempt = 0; attempt < 4 && offset >= 0; attempt++) {
    const xzPath = join(work, 'vmlinux.xz');
    const outPath = join(work, 'vmlinux');
    await writeFile(xzPath, data.subarray(offset));
    // --single-stream: the bzImage continues after the payload; that tail is not XZ.
    const r = await runner.run({ file: 'xz', args: ['-d', '-f', '--single-stream', xzPath] }, { timeoutMs: 300_000 });
    if (r.exitCode === 0 && (await readable(outPath))) {
      const vmlinux = await readFile(outPath);
      if (isElf(vmlinux) && hasPvhNote(vmlinux)) return outPath;
    }
    await rm(xzPath, { force: true });
    await rm(outPath, { force: true });
    offset = findXzStreamOffset(data, offset + 1);
  }
  return undefined;
}
