/**
 * The volumes of the `localvm` pool and their names. Base images are uploaded once per host
 * and named by content (`img-<hash>.<part>`), so a second VM from the same image uploads
 * nothing. A VM's own volumes are `<vm>.<part>`: VM names have no dots, so the prefix `<vm>.`
 * is exactly that VM's, and deleting a VM deletes exactly those.
 */
import { el, render } from './xml.js';

export type VolumeFormat = 'qcow2' | 'raw';

export interface VolumeSpec {
  name: string;
  capacityBytes: number;
  format: VolumeFormat;
  /** A copy-on-write overlay of this file (a base volume's path on the host). */
  backing?: { path: string; format: VolumeFormat } | undefined;
}

/** The `vol-create` XML of `v`. Pure. */
export function volumeXml(v: VolumeSpec): string {
  return render(
    el(
      'volume',
      {},
      el('name', {}, v.name),
      el('capacity', { unit: 'bytes' }, String(v.capacityBytes)),
      el('target', {}, el('format', { type: v.format })),
      v.backing
        ? el('backingStore', {}, el('path', {}, v.backing.path), el('format', { type: v.backing.format }))
        : undefined,
    ),
  );
}

/** A base volume: content-addressed, shared by every VM on the host. */
export function baseVolume(hash: string, part: string): string {
  return `img-${hash}.${part}`;
}

/** One of VM `vm`'s own volumes. */
export function vmVolume(vm: string, part: string): string {
  return `${vm}.${part}`;
}

/** The part name of extra disk `disk`. */
export function diskPart(disk: string): string {
  return `disk-${disk}.qcow2`;
}

/** The volumes among `names` that belong to VM `vm`. */
export function volumesOf(vm: string, names: readonly string[]): string[] {
  return names.filter((n) => n.startsWith(`${vm}.`));
}

/**
 * Size of the per-VM state volume of a VM that boots a kernel directly: internal snapshots
 * need a qcow2 disk to hold the RAM state (it grows past the virtual size as needed).
 */
export const STATE_VOLUME_BYTES = 64 * 1024 * 1024;
