/**
 * What a template's restore depends on, and the check that a clone's launch still matches it.
 * Pure: the launch is normalised (names, paths, ports and the generation id are per-VM and
 * not part of the device state) and hashed, so a changed device layout is one differing field.
 */
import { createHash } from 'node:crypto';
import { LocalVmError } from '../../../errors.js';
import { buildQemuCommand, machineType, type QemuLaunch } from '../cmdline.js';

/** Everything a restore needs to be the same as when the template was frozen. */
export interface TemplateDeps {
  qemuBinary: string;
  /** First line of `qemu-system-* --version`. */
  qemuVersion: string;
  arch: string;
  machine: string;
  accel: string;
  cpu: string;
  /** MiB: the RAM file's size. */
  memory: number;
  cpus: number;
  /** sha256 of the normalised launch argv (see layoutSignature). */
  layout: string;
  /** Identity of the boot files the guest was started from (path, size, mtime). */
  image: string;
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** The CPU model QEMU gives this launch (the builder's choice, see cmdline.ts). */
export function cpuModel(launch: Pick<QemuLaunch, 'arch' | 'accel'>): string {
  if (launch.accel !== 'tcg') return 'host';
  return launch.arch === 'aarch64' ? 'cortex-a57' : 'qemu64';
}

/**
 * The device layout of a launch: its argv with every per-VM part (name, paths, port
 * forwards, network restriction, RAM sharing, generation id, `-incoming`) replaced by a
 * placeholder, hashed. Two launches with the same signature have the same devices in the
 * same order, which is what a migration stream needs. Pure.
 */
export function layoutSignature(launch: QemuLaunch): string {
  const boot = launch.boot;
  const normal: QemuLaunch = {
    ...launch,
    name: 'vm',
    ports: [],
    isolated: false,
    boot:
      boot.kind === 'kernel'
        ? {
            kind: 'kernel',
            kernel: '/boot/kernel',
            ...(boot.initrd !== undefined ? { initrd: '/boot/initrd' } : {}),
            ...(boot.append !== undefined ? { append: boot.append } : {}),
          }
        : { ...boot, image: '/boot/disk' },
    disks: launch.disks.map((d) => ({ ...d, path: `/disk/${d.id}` })),
    // The seed QEMU shows the guest: the ISO when there is one (cmdline.ts), else the directory.
    seedDir: launch.seedDir === undefined || launch.seedImage !== undefined ? undefined : '/seed',
    seedImage: launch.seedImage === undefined ? undefined : '/seed.iso',
    stateDisk: launch.stateDisk === undefined ? undefined : '/state',
    paths: { dir: '/vm', qmpSocket: '/vm/qmp', qgaSocket: '/vm/qga', consoleLog: '/vm/console', pidFile: '/vm/pid' },
    qemuBinary: 'qemu',
    memoryFile: launch.memoryFile === undefined ? undefined : { ...launch.memoryFile, path: '/ram', share: true },
    vmgenid: launch.vmgenid === undefined ? undefined : '00000000-0000-0000-0000-000000000000',
    identitySocket: launch.identitySocket === undefined ? undefined : '/vm/id',
    incoming: false,
  };
  return sha256(buildQemuCommand(normal).args.join('\0'));
}

/** The dependencies of `launch`, given the QEMU version and boot-file identity read on this host. Pure. */
export function depsOf(launch: QemuLaunch, qemuVersion: string, image: string): TemplateDeps {
  return {
    qemuBinary: launch.qemuBinary ?? `qemu-system-${launch.arch}`,
    qemuVersion,
    arch: launch.arch,
    machine: machineType(launch.arch),
    accel: launch.accel,
    cpu: cpuModel(launch),
    memory: launch.memory,
    cpus: launch.cpus,
    layout: layoutSignature(launch),
    image,
  };
}

export interface DepChange {
  field: keyof TemplateDeps;
  recorded: string | number;
  now: string | number;
}

/** Which recorded dependencies differ from what a restore would use now. Pure. */
export function compatibilityDiff(recorded: TemplateDeps, now: TemplateDeps): DepChange[] {
  const fields = Object.keys(now) as (keyof TemplateDeps)[];
  return fields
    .filter((field) => recorded[field] !== now[field])
    .map((field) => ({ field, recorded: recorded[field] ?? '(not recorded)', now: now[field] }));
}

const FIELD_WORDS: Record<keyof TemplateDeps, string> = {
  qemuBinary: 'QEMU binary',
  qemuVersion: 'QEMU version',
  arch: 'architecture',
  machine: 'machine type',
  accel: 'accelerator',
  cpu: 'CPU model',
  memory: 'RAM size (MiB)',
  cpus: 'CPU count',
  layout: 'device layout',
  image: 'boot files',
};

/** The CONFLICT for a template that this host can no longer restore, naming each change and the way out. */
export function incompatible(template: string, vm: string, changes: DepChange[]): LocalVmError {
  const said = changes.map((c) => `${FIELD_WORDS[c.field]}: template has ${c.recorded}, now ${c.now}`).join('; ');
  return new LocalVmError('CONFLICT', `template ${template} cannot be restored here: ${said}`, {
    vm,
    hint: `rebuild it: localvm template delete ${template} && localvm template create ${template} ...`,
    details: { template, changes },
  });
}
