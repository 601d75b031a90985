/**
 * How a VM spec becomes files and a QEMU command line: the disk names, the cloud-init seed
 * location, and the launch. Pure, and shared by the backend and `--dry-run`, so what a dry
 * run prints is what a create runs.
 */
import { basename, join } from 'node:path';
import { LocalVmError } from '../../errors.js';
import type { QemuAccel, QemuLaunch } from './cmdline.js';
import type { Arch, VmSpec } from '../../schema.js';
import { identitySocketOf, type BootRecord, type TemplateLink, type VmPaths } from './state.js';
import { volumeId, type VmDiskAttachment } from './volumeStore.js';

/** `config.qemuBinary` is the binary itself or a directory holding `qemu-system-<arch>`. */
export function qemuBinaryFor(configured: string | undefined, arch: Arch): string {
  if (!configured) return `qemu-system-${arch}`;
  return basename(configured).startsWith('qemu-system') ? configured : join(configured, `qemu-system-${arch}`);
}

/** The qcow2 files of the spec's extra disks, inside the VM directory. */
export function diskLayout(spec: VmSpec, dir: string): { id: string; path: string; format: 'qcow2' }[] {
  return spec.disks.map((d) => ({ id: `disk-${d.name}`, path: join(dir, `disk-${d.name}.qcow2`), format: 'qcow2' }));
}

/**
 * Virtual size of the per-VM vmstate disk. `savevm` needs a writable qcow2 to hold the
 * RAM state, and qcow2 stores vmstate beyond the virtual end, so the size only has to be
 * non-zero; the file grows by each snapshot's RAM image.
 */
export const STATE_DISK_BYTES = 64 * 1024 * 1024;

/** The vmstate disk of a VM whose directory is `dir`. */
export function stateDiskFor(dir: string): string {
  return join(dir, 'state.qcow2');
}

/** The cloud-init NoCloud seed directory, when the spec carries user-data. */
export function seedDirFor(spec: VmSpec, dir: string): string | undefined {
  return spec.userData === undefined ? undefined : join(dir, 'seed');
}

export interface LaunchInputs {
  name: string;
  spec: VmSpec;
  arch: Arch;
  boot: BootRecord;
  disks: QemuLaunch['disks'];
  /** Standalone disks attached to the VM, added after its own disks at every launch. */
  attachedDisks?: VmDiskAttachment[] | undefined;
  seedDir?: string | undefined;
  seedImage?: string | undefined;
  stateDisk?: string | undefined;
  paths: VmPaths;
  template?: TemplateLink | undefined;
  /** Guest port 22 is forwarded to 127.0.0.1:`port` (see ssh/). */
  ssh?: { port: number } | undefined;
}

/**
 * The QEMU launch of a VM: the one place a VM record becomes a command line. A template's
 * source and its clones keep RAM in the template's file (shared on the source, private on a
 * clone) and carry a VM generation id; `incoming` makes a clone wait for its device state.
 */
export function launchFor(
  vm: LaunchInputs,
  accel: QemuAccel,
  qemuBinary: string | undefined,
  options: { incoming?: boolean } = {},
): QemuLaunch {
  const { boot, paths: p } = vm;
  // QEMU would grow (ftruncate) the template's RAM file for a larger memory: never launch that.
  if (vm.template && vm.template.memory !== vm.spec.memory) {
    throw new LocalVmError(
      'VALIDATION',
      `${vm.name} is a clone of template ${vm.template.name}: its memory is the template's ${vm.template.memory} MiB`,
      {
        vm: vm.name,
        issues: [{ property: 'memory', reason: `must be ${vm.template.memory} (the template's RAM file)` }],
      },
    );
  }
  return {
    name: vm.name,
    arch: vm.arch,
    accel,
    cpus: vm.spec.cpus,
    memory: vm.spec.memory,
    boot:
      boot.kind === 'kernel'
        ? {
            kind: 'kernel',
            kernel: boot.kernel,
            ...(boot.initrd ? { initrd: boot.initrd } : {}),
            ...(boot.append !== undefined ? { append: boot.append } : {}),
          }
        : boot,
    ports: vm.ssh
      ? [...vm.spec.ports, { host: vm.ssh.port, guest: 22, protocol: 'tcp', bind: '127.0.0.1' }]
      : vm.spec.ports,
    isolated: vm.spec.isolated,
    disks: [
      ...vm.disks,
      ...(vm.attachedDisks ?? []).map((d) => ({
        id: volumeId(d.disk),
        path: d.path,
        format: 'qcow2' as const,
        ...(d.readonly ? { readonly: true } : {}),
      })),
    ],
    ...(vm.seedDir ? { seedDir: vm.seedDir } : {}),
    ...(vm.seedImage ? { seedImage: vm.seedImage } : {}),
    ...(vm.stateDisk ? { stateDisk: vm.stateDisk } : {}),
    paths: { dir: p.dir, qmpSocket: p.qmpSocket, qgaSocket: p.qgaSocket, consoleLog: p.consoleLog, pidFile: p.pidFile },
    qemuBinary: qemuBinaryFor(qemuBinary, vm.arch),
    ...(vm.template
      ? {
          memoryFile: {
            path: vm.template.ramFile,
            share: vm.template.role === 'source',
            ...(vm.template.ramId !== undefined ? { id: vm.template.ramId } : {}),
          },
          vmgenid: vm.template.vmgenid,
          ...(options.incoming ? { incoming: true } : {}),
          ...(vm.template.identityPort ? { identitySocket: identitySocketOf(p) } : {}),
        }
      : {}),
  };
}
