/**
 * Registers the QEMU backend: daemonized QEMU processes on this host. Available wherever a
 * `qemu-system-*` binary can be found; `auto`'s fallback everywhere (rank 1), and the only
 * backend that runs the embedded `tiny` image and local disk images.
 */
import { registerBackend } from '../registry.js';
import { findTool } from '../../host/tools.js';
import { hostArch } from '../../host/arch.js';
import { qemuBinaryFor } from './layout.js';

export const QEMU_BACKEND = 'qemu';

registerBackend({
  name: QEMU_BACKEND,
  summary: 'QEMU processes on this host (KVM, HVF or software emulation)',
  capabilities: ['qmp', 'snapshots', 'disks', 'volumes', 'ssh'],
  embeddedImages: ['tiny'],
  // Always available: its VMs live in the state directory, readable on any host. A missing
  // binary is said here and reported by the launch itself as TOOL_NOT_FOUND with a hint.
  availability(config) {
    const binary = qemuBinaryFor(config.qemuBinary, hostArch());
    const found = binary.includes('/') || findTool(config, binary) !== undefined;
    return { available: true, reason: found ? `${binary} found` : `${binary} not on PATH yet` };
  },
  autoRank: () => 1,
  async create(host) {
    const { createQemuBackend } = await import('./backend.js');
    return createQemuBackend(host);
  },
});
