/**
 * The cloud-init NoCloud seed: `user-data` and `meta-data` on a disk labelled `cidata`.
 * An ISO 9660 image is what every QEMU build and every cloud-init reads; it is written by
 * whichever packaged ISO tool this host has (xorriso, genisoimage, mkisofs: the same
 * mkisofs flags). Without one, QEMU's vvfat driver can show the seed directory as a FAT
 * disk instead — but several distributions build QEMU without vvfat, so the ISO comes first.
 */
import { join } from 'node:path';
import type { LocalVmConfig } from '../../config.js';
import { findTool } from '../../host/tools.js';
import type { Command } from '../../runner.js';

/** The seed as the guest gets it: an ISO image file, or the directory through vvfat. */
export type SeedDisk = { kind: 'iso'; path: string } | { kind: 'vvfat'; dir: string };

const ISO_TOOLS: { tool: string; prefix: string[] }[] = [
  { tool: 'xorriso', prefix: ['-as', 'mkisofs'] },
  { tool: 'genisoimage', prefix: [] },
  { tool: 'mkisofs', prefix: [] },
];

/** The ISO tool on this host's PATH, if any. */
export function findIsoTool(config: Pick<LocalVmConfig, 'searchPath'>): { file: string; prefix: string[] } | undefined {
  for (const t of ISO_TOOLS) {
    const file = findTool(config, t.tool);
    if (file) return { file, prefix: t.prefix };
  }
  return undefined;
}

/** The seed image of a VM whose directory is `dir`. */
export function seedImageFor(dir: string): string {
  return join(dir, 'seed.iso');
}

/**
 * The argv that writes the seed ISO: volume id `cidata`, Joliet and Rock Ridge names so
 * `user-data` keeps its name, the two files from `seedDir`. Pure.
 */
export function seedIsoCommand(tool: { file: string; prefix: string[] }, seedDir: string, output: string): Command {
  return {
    file: tool.file,
    args: [
      ...tool.prefix,
      '-quiet',
      '-output',
      output,
      '-volid',
      'cidata',
      '-joliet',
      '-rock',
      join(seedDir, 'user-data'),
      join(seedDir, 'meta-data'),
    ],
  };
}
