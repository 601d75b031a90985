/**
 * Registers the libvirt backend: VMs defined in a libvirt daemon, on this machine
 * (qemu:///system, qemu:///session) or another one over SSH (qemu+ssh://). Available where
 * `virsh` is on PATH; `auto` never picks it (a daemon and its URI are a deliberate choice).
 */
import { registerBackend } from '../registry.js';
import { findTool } from '../../host/tools.js';

export const LIBVIRT_BACKEND = 'libvirt';

registerBackend({
  name: LIBVIRT_BACKEND,
  summary: 'VMs of a libvirt daemon, local or over SSH (virsh -c URI)',
  capabilities: ['snapshots', 'disks'],
  hosts: true,
  availability(config) {
    return findTool(config, 'virsh')
      ? { available: true, reason: 'virsh on PATH' }
      : {
          available: false,
          reason: 'virsh not on PATH',
          hint: 'install libvirt-clients (and libvirt-daemon-driver-qemu on the VM host)',
        };
  },
  autoRank: () => undefined,
  async create(host) {
    const { createLibvirtBackend } = await import('./backend.js');
    return createLibvirtBackend(host);
  },
});
