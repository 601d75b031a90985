/**
 * Registers the OrbStack backend: Linux machines of OrbStack on macOS, through `orbctl`.
 * `auto` prefers it on macOS when `orbctl` is on PATH (rank 10, above QEMU): OrbStack's
 * machines are the most pleasant Linux VMs there. It runs distro images only.
 */
import { registerBackend } from '../registry.js';
import { findTool } from '../../host/tools.js';

export const ORBSTACK_BACKEND = 'orbstack';

/** An OrbStack image: a distro with an optional version (`ubuntu:noble`). */
export const ORB_IMAGE_PATTERN = /^([a-z][a-z0-9-]*)(?::([A-Za-z0-9][A-Za-z0-9._-]*))?$/;

registerBackend({
  name: ORBSTACK_BACKEND,
  summary: 'OrbStack machines on macOS, through orbctl',
  capabilities: [],
  availability(config) {
    return findTool(config, 'orbctl')
      ? { available: true, reason: 'orbctl on PATH' }
      : {
          available: false,
          reason: 'orbctl not on PATH',
          hint: 'install OrbStack (macOS) from orbstack.dev, or choose another backend',
        };
  },
  autoRank: (config) => (config.platform === 'darwin' ? 10 : undefined),
  // Distro names (`ubuntu:noble`), never a disk image path.
  acceptsImage: (image) => ORB_IMAGE_PATTERN.test(image),
  async create(host) {
    const { createOrbstackBackend } = await import('./backend.js');
    return createOrbstackBackend(host);
  },
});
