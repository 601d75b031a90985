/**
 * CPU architecture names. localvm names guest architectures as QEMU does (`x86_64`,
 * `aarch64`); Node names the host's `x64`/`arm64`, OrbStack and Debian say `amd64`/`arm64`.
 * One table, so the mapping is spelled once.
 */
import type { Arch } from '../schema.js';

const FROM_NODE: Record<string, Arch> = { x64: 'x86_64', arm64: 'aarch64' };
const TO_DEBIAN: Record<Arch, 'amd64' | 'arm64'> = { x86_64: 'amd64', aarch64: 'arm64' };

/** The guest architecture matching a Node `process.arch` value (x86_64 for anything unknown). */
export function archFromNode(nodeArch: string): Arch {
  return FROM_NODE[nodeArch] ?? 'x86_64';
}

/** This host's architecture, QEMU-named. */
export function hostArch(): Arch {
  return archFromNode(process.arch);
}

/** `amd64`/`arm64` (Debian's and OrbStack's names) for a QEMU-named architecture. */
export function debianArch(arch: Arch): 'amd64' | 'arm64' {
  return TO_DEBIAN[arch];
}

/** The QEMU name for `amd64`/`arm64`/`x86_64`/`aarch64`; other strings are returned as they are. */
export function archFromAlias(arch: string): string {
  return arch === 'amd64' ? 'x86_64' : arch === 'arm64' ? 'aarch64' : arch;
}
