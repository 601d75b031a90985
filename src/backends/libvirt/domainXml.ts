/**
 * VmSpec → libvirt domain XML, pure. The guest is the QEMU backend's guest: direct kernel
 * boot for tiny (its kernel, initrd and command line, uploaded as volumes), a root disk from
 * a per-VM overlay volume otherwise, the serial console to a file, the guest-agent channel,
 * a virtio RNG and a user-mode NIC (passt with `<portForward>` when the spec forwards ports).
 * Every value goes through `el`, which escapes it.
 */
import type { Arch, PortForward } from '../../schema.js';
import { el, render, type XmlNode } from './xml.js';

export type DomainType = 'kvm' | 'qemu';

export interface DomainDisk {
  /** Volume name in `pool`. */
  volume: string;
  /** Guest device (`vda`, `vdb`, ...). */
  target: string;
  format: 'qcow2' | 'raw';
  readonly?: boolean | undefined;
  /** Boot order of the root disk when the VM boots from it. */
  bootOrder?: number | undefined;
}

export interface DomainInputs {
  name: string;
  type: DomainType;
  arch: Arch;
  cpus: number;
  memoryMib: number;
  /** Direct kernel boot: paths on the libvirt host (volumes of the pool). */
  kernel?: { kernel: string; initrd?: string | undefined; cmdline?: string | undefined } | undefined;
  pool: string;
  disks: DomainDisk[];
  /** The serial console's file on the libvirt host. */
  consoleLog: string;
  ports: PortForward[];
  /** `<localvm:vm>` (see metadata.ts). */
  metadata: XmlNode;
}

/** The `<disk>` element of one volume, also used alone by attach-device/detach-device. */
export function diskNode(pool: string, d: DomainDisk): XmlNode {
  return el(
    'disk',
    { type: 'volume', device: 'disk' },
    el('driver', { name: 'qemu', type: d.format, discard: 'unmap' }),
    el('source', { pool, volume: d.volume }),
    el('target', { dev: d.target, bus: 'virtio' }),
    d.readonly ? el('readonly') : undefined,
    d.bootOrder !== undefined ? el('boot', { order: d.bootOrder }) : undefined,
  );
}

/** One user-mode NIC. Forwards need the passt backend: plain SLIRP in libvirt has none. */
function interfaceNode(ports: PortForward[]): XmlNode {
  if (ports.length === 0) return el('interface', { type: 'user' }, el('model', { type: 'virtio' }));
  return el(
    'interface',
    { type: 'user' },
    el('backend', { type: 'passt' }),
    el('model', { type: 'virtio' }),
    ...ports.map((p) =>
      el('portForward', { proto: p.protocol, address: p.bind }, el('range', { start: p.host, to: p.guest })),
    ),
  );
}

/** The domain definition of `d`, as `virsh define` reads it. Pure. */
export function domainXml(d: DomainInputs): string {
  const x86 = d.arch === 'x86_64';
  const k = d.kernel;
  return render(
    el(
      'domain',
      { type: d.type },
      el('name', {}, d.name),
      el('metadata', {}, d.metadata),
      el('memory', { unit: 'MiB' }, String(d.memoryMib)),
      el('vcpu', {}, String(d.cpus)),
      el(
        'os',
        {},
        el('type', { arch: d.arch, ...(x86 ? {} : { machine: 'virt' }) }, 'hvm'),
        k ? el('kernel', {}, k.kernel) : undefined,
        k?.initrd !== undefined ? el('initrd', {}, k.initrd) : undefined,
        k?.cmdline !== undefined ? el('cmdline', {}, k.cmdline) : undefined,
      ),
      // ACPI is what delivers the power button of a graceful shutdown (aarch64 `virt` needs UEFI for it).
      x86 ? el('features', {}, el('acpi'), el('apic')) : undefined,
      // TCG's default CPU models are old (aarch64's is 32-bit): take everything it can emulate.
      el('cpu', { mode: d.type === 'kvm' ? 'host-passthrough' : 'maximum' }),
      el('on_poweroff', {}, 'destroy'),
      el('on_reboot', {}, 'restart'),
      el('on_crash', {}, 'destroy'),
      el(
        'devices',
        {},
        ...d.disks.map((disk) => diskNode(d.pool, disk)),
        el('serial', { type: 'file' }, el('source', { path: d.consoleLog }), el('target', { port: 0 })),
        el('channel', { type: 'unix' }, el('target', { type: 'virtio', name: 'org.qemu.guest_agent.0' })),
        interfaceNode(d.ports),
        el('rng', { model: 'virtio' }, el('backend', { model: 'random' }, '/dev/urandom')),
        el('memballoon', { model: 'none' }),
      ),
    ),
  );
}

/** The guest device of the `index`th virtio disk: vda, vdb, ... vdz. */
export function diskTarget(index: number): string {
  if (index < 0 || index >= 26) throw new RangeError(`no virtio disk name for index ${index}`);
  return `vd${String.fromCharCode(97 + index)}`;
}
