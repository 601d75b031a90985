/**
 * The `qemu-system-*` command line: a launch description in, `{ file, args }` out. Pure: no
 * I/O, no environment reads, never a shell string. A guard refuses a flag given twice unless
 * QEMU treats it as repeatable (`-drive`, `-device`, `-netdev`), as lima's Cmdline does.
 */
import { invalid } from '../../argv.js';
import { LocalVmError } from '../../errors.js';
import type { Command } from '../../runner.js';
import type { PortForward } from '../../schema.js';
import { assertNoDuplicateFlags } from './cmdlineGuard.js';

export type QemuArch = 'x86_64' | 'aarch64';
export type QemuAccel = 'kvm' | 'tcg' | 'hvf';
export type ImageFormat = 'qcow2' | 'raw';

/** Where a running VM's control files live (all inside `dir`; sockets must stay under 107 bytes). */
export interface QemuPaths {
  dir: string;
  qmpSocket: string;
  qgaSocket: string;
  consoleLog: string;
  pidFile: string;
}

/** A kernel booted directly (`-kernel`), on a disk boot: the disk is its root (see rootDisk.ts). */
export interface DirectKernel {
  kernel: string;
  initrd?: string | undefined;
  append?: string | undefined;
}

/** Everything needed to launch one VM; accel is already resolved (never `auto`). */
export interface QemuLaunch {
  name: string;
  arch: QemuArch;
  accel: QemuAccel;
  cpus: number;
  /** MiB. */
  memory: number;
  boot:
    | { kind: 'kernel'; kernel: string; initrd?: string; append?: string }
    | { kind: 'disk'; image: string; format: ImageFormat; kernel?: DirectKernel | undefined };
  ports: PortForward[];
  /** Guest network restricted to the host (`restrict=on`). */
  isolated: boolean;
  /** `readonly`: the guest sees a read-only disk and QEMU takes only a shared lock on the file. */
  disks: { id: string; path: string; format: ImageFormat; readonly?: boolean | undefined }[];
  /**
   * A directory holding cloud-init `user-data` and `meta-data`, shown to the guest as a
   * read-only FAT disk labelled `cidata` (the NoCloud seed cloud images look for).
   */
  seedDir?: string;
  /** The seed as an ISO 9660 image labelled `cidata` (preferred over `seedDir`: every QEMU reads it). */
  seedImage?: string;
  /**
   * A qcow2 that holds `savevm` state: a drive with no guest device (`if=none`), so the
   * guest sees no extra disk while snapshots of a diskless (kernel-booted) VM still work.
   */
  stateDisk?: string;
  paths: QemuPaths;
  /** Default `qemu-system-${arch}`. */
  qemuBinary?: string;
  /** Appended last; still subject to the duplicate-flag guard. */
  extraArgs?: string[];
  /**
   * Guest RAM as a file (templates and their clones): `share: true` on the VM a template is
   * frozen from (its RAM lands in the file), `false` on a clone (a private copy-on-write view).
   */
  memoryFile?: { path: string; share: boolean; id?: string | undefined } | undefined;
  /** A VM generation id (`-device vmgenid`): a fresh one per clone makes the guest reseed its RNG. */
  vmgenid?: string | undefined;
  /** Wait for a migration stream (`-incoming defer`) instead of booting: a clone restoring. */
  incoming?: boolean | undefined;
  /**
   * A second virtio-serial port, `org.localvm.identity.0`, on this socket: a template's VMs
   * have it, and a helper parked in the template reads each clone's identity from it
   * (template/identity.ts).
   */
  identitySocket?: string | undefined;
}

/** The guest-visible name of the identity port (see QemuLaunch.identitySocket). */
export const IDENTITY_PORT = 'org.localvm.identity.0';

/** The machine type of a launch with RAM in a file (`-machine <type>,memory-backend=ram0`). */
export function machineType(arch: QemuArch): string {
  return arch === 'aarch64' ? 'virt' : 'pc';
}

/**
 * The id QEMU gives a machine's RAM when no backend is named (`default-ram-id` in
 * query-machines). A migration stream names RAM blocks by id, so a file-backed machine that
 * takes in the RAM of a VM launched without one must use this id (see template/fromVm.ts).
 */
export function defaultRamId(arch: QemuArch): string {
  return arch === 'aarch64' ? 'mach-virt.ram' : 'pc.ram';
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export { assertNoDuplicateFlags, REPEATABLE_QEMU_FLAGS } from './cmdlineGuard.js';

/**
 * A value embedded in a QEMU option string (`file=...,format=...`). QEMU splits those on
 * commas (",," escapes one), so a comma in a path would silently inject options: refuse it.
 */
/** @internal shared with qemuImg.ts */
export function optionValue(property: string, value: string): string {
  if (typeof value !== 'string' || value.length === 0) throw invalid(property, 'must be a non-empty string');
  if (value.includes(',')) throw invalid(property, `must not contain "," (QEMU option syntax): ${value}`);
  return value;
}

// sun_path is 108 bytes including the terminating NUL.
/** Longest unix socket path (sun_path is 108 bytes including the NUL). */
export const MAX_SOCKET_PATH = 107;

function socketPath(property: string, value: string): string {
  optionValue(property, value);
  if (Buffer.byteLength(value) > MAX_SOCKET_PATH)
    throw new LocalVmError('VALIDATION', `${property} is longer than ${MAX_SOCKET_PATH} bytes: ${value}`, {
      issues: [{ property, reason: `unix socket paths are limited to ${MAX_SOCKET_PATH} bytes` }],
      hint: 'use a shorter run directory for sockets',
    });
  return value;
}

/** @internal shared with qemuImg.ts */
export function imageFormat(property: string, value: string): ImageFormat {
  if (value !== 'qcow2' && value !== 'raw') throw invalid(property, 'must be qcow2 or raw');
  return value;
}

/** @internal shared with qemuImg.ts */
export function positiveInt(property: string, value: number): string {
  if (!Number.isSafeInteger(value) || value < 1) throw invalid(property, 'must be a positive integer');
  return String(value);
}

// QEMU ids: a letter, then letters, digits, "-", "." and "_" (qemu_opts id_wellformed).
const QEMU_ID = /^[A-Za-z][A-Za-z0-9_.-]{0,127}$/;
// Ids the builder itself uses for the network and agent channel.
const RESERVED_IDS: ReadonlySet<string> = new Set([
  'n0',
  'qga0',
  'lvid0',
  'seed0',
  'vmstate',
  'root',
  'ram0',
  'vmgenid0',
]);

// Shape only: the schema checks the address properly; this keeps option syntax out.
const IPV4 = /^\d{1,3}(?:\.\d{1,3}){3}$/;

function hostfwd(p: PortForward, i: number): string {
  const proto = p.protocol ?? 'tcp';
  if (proto !== 'tcp' && proto !== 'udp') throw invalid(`ports.${i}.protocol`, 'must be tcp or udp');
  const bind = p.bind ?? '127.0.0.1';
  if (!IPV4.test(bind)) throw invalid(`ports.${i}.bind`, 'must be an IPv4 address');
  if (!Number.isInteger(p.host) || p.host < 1 || p.host > 65535) throw invalid(`ports.${i}.host`, 'must be 1-65535');
  if (!Number.isInteger(p.guest) || p.guest < 1 || p.guest > 65535)
    throw invalid(`ports.${i}.guest`, 'must be 1-65535');
  return `,hostfwd=${proto}:${bind}:${p.host}-:${p.guest}`;
}

/**
 * The full `qemu-system-*` argv for a daemonized VM with a QMP socket, a guest-agent
 * channel, user-mode networking and a serial console log. Throws VALIDATION on values
 * that QEMU would misparse (commas in paths, bad ids, duplicate flags in extraArgs).
 */
export function buildQemuCommand(launch: QemuLaunch): Command {
  const { arch, accel, paths } = launch;
  if (arch !== 'x86_64' && arch !== 'aarch64') throw invalid('arch', 'must be x86_64 or aarch64');
  const name = optionValue('name', launch.name);
  // -name has an implied key, so "a=b" would be read as an option named "a".
  if (name.includes('=')) throw invalid('name', 'must not contain "="');
  const args: string[] = ['-name', name];

  // With RAM in a file the machine is named, so the backend can be attached to it; x86 without
  // one keeps QEMU's default (`pc`), which is the same machine.
  const ramId = launch.memoryFile?.id ?? 'ram0';
  if (ramId !== 'ram0' && ramId !== defaultRamId(arch))
    throw invalid('memoryFile.id', `must be ram0 or ${defaultRamId(arch)}`);
  if (launch.memoryFile !== undefined) args.push('-machine', `${machineType(arch)},memory-backend=${ramId}`);
  else if (arch === 'aarch64') args.push('-machine', 'virt');
  switch (accel) {
    case 'tcg':
      // A 64 MiB translation cache instead of the default 1 GiB keeps RSS near guest RAM.
      args.push('-accel', 'tcg,tb-size=64');
      if (arch === 'aarch64') args.push('-cpu', 'cortex-a57');
      break;
    case 'kvm':
    case 'hvf':
      args.push('-accel', accel, '-cpu', 'host');
      break;
    default:
      throw invalid('accel', `must be kvm, tcg or hvf (resolve "auto" before building), got ${String(accel)}`);
  }

  args.push(
    '-m',
    positiveInt('memory', launch.memory),
    ...(launch.memoryFile === undefined
      ? []
      : [
          '-object',
          `memory-backend-file,id=${ramId},size=${launch.memory}M,mem-path=${optionValue('memoryFile.path', launch.memoryFile.path)},share=${launch.memoryFile.share ? 'on' : 'off'}`,
        ]),
    '-smp',
    positiveInt('cpus', launch.cpus),
    // -nographic with -daemonize fails unless the default devices are off.
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
  );

  const boot = launch.boot;
  const direct = (k: DirectKernel, at: string) => {
    args.push('-kernel', optionValue(`${at}.kernel`, k.kernel));
    if (k.initrd !== undefined) args.push('-initrd', optionValue(`${at}.initrd`, k.initrd));
    // The kernel command line is one opaque argv element: commas (console=ttyS0,115200) are fine.
    if (k.append !== undefined) args.push('-append', k.append);
  };
  if (boot.kind === 'kernel') {
    direct(boot, 'boot');
  } else if (boot.kind === 'disk') {
    // A kernel booted directly with the disk as its root: QEMU loads the kernel, the disk is /dev/vda.
    if (boot.kernel !== undefined) direct(boot.kernel, 'boot.kernel');
    // The root disk always boots: SeaBIOS follows PCI slot order unless a bootindex says
    // otherwise, and a seed or extra disk with a boot signature would be tried first.
    args.push(
      '-drive',
      `file=${optionValue('boot.image', boot.image)},format=${imageFormat('boot.format', boot.format)},if=none,id=root`,
      '-device',
      // With -kernel, QEMU's linuxboot option ROM holds bootindex 0 and SeaBIOS boots nothing else.
      boot.kernel === undefined ? 'virtio-blk-pci,drive=root,bootindex=0' : 'virtio-blk-pci,drive=root',
    );
  } else {
    throw invalid('boot.kind', 'must be kernel or disk');
  }

  args.push(
    '-serial',
    `file:${optionValue('paths.consoleLog', paths.consoleLog)}`,
    '-qmp',
    `unix:${socketPath('paths.qmpSocket', paths.qmpSocket)},server=on,wait=off`,
    '-chardev',
    `socket,path=${socketPath('paths.qgaSocket', paths.qgaSocket)},server=on,wait=off,id=qga0`,
    '-device',
    'virtio-serial-pci',
    '-device',
    'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0',
  );
  if (launch.identitySocket !== undefined) {
    args.push(
      '-chardev',
      `socket,path=${socketPath('identitySocket', launch.identitySocket)},server=on,wait=off,id=lvid0`,
      '-device',
      `virtserialport,chardev=lvid0,name=${IDENTITY_PORT}`,
    );
  }

  let netdev = launch.isolated ? 'user,id=n0,restrict=on' : 'user,id=n0';
  for (let i = 0; i < launch.ports.length; i++) netdev += hostfwd(launch.ports[i] as PortForward, i);
  args.push('-netdev', netdev, '-device', 'virtio-net-pci,netdev=n0', '-device', 'virtio-rng-pci');
  if (launch.vmgenid !== undefined) {
    if (!UUID.test(launch.vmgenid)) throw invalid('vmgenid', 'must be a lower-case UUID');
    args.push('-device', `vmgenid,id=vmgenid0,guid=${launch.vmgenid}`);
  }

  const ids = new Set<string>();
  for (let i = 0; i < launch.disks.length; i++) {
    const disk = launch.disks[i] as QemuLaunch['disks'][number];
    if (!QEMU_ID.test(disk.id) || RESERVED_IDS.has(disk.id))
      throw invalid(`disks.${i}.id`, 'must start with a letter, then letters, digits, "-", "." or "_"');
    if (ids.has(disk.id)) throw invalid(`disks.${i}.id`, `"${disk.id}" is used twice`);
    ids.add(disk.id);
    args.push(
      '-drive',
      `file=${optionValue(`disks.${i}.path`, disk.path)},format=${imageFormat(`disks.${i}.format`, disk.format)},if=none,id=${disk.id}${disk.readonly ? ',readonly=on' : ''}`,
      '-device',
      `virtio-blk-pci,drive=${disk.id}`,
    );
  }

  if (launch.stateDisk !== undefined) {
    args.push('-drive', `file=${optionValue('stateDisk', launch.stateDisk)},format=qcow2,if=none,id=vmstate`);
  }

  if (launch.seedImage !== undefined) {
    args.push(
      '-drive',
      `file=${optionValue('seedImage', launch.seedImage)},format=raw,if=none,id=seed0,readonly=on`,
      '-device',
      'virtio-blk-pci,drive=seed0',
    );
  } else if (launch.seedDir !== undefined) {
    // Without an ISO tool on the host, QEMU's vvfat driver shows the directory as a FAT disk.
    args.push(
      '-blockdev',
      `driver=vvfat,node-name=seed0,dir=${optionValue('seedDir', launch.seedDir)},label=cidata,read-only=on`,
      '-device',
      'virtio-blk-pci,drive=seed0',
    );
  }

  // `defer`: the migration source is given over QMP once capabilities are set (see template/).
  if (launch.incoming) args.push('-incoming', 'defer');
  args.push('-daemonize', '-pidfile', optionValue('paths.pidFile', paths.pidFile));

  if (launch.extraArgs !== undefined && launch.extraArgs.length > 0) {
    for (const a of launch.extraArgs) if (typeof a !== 'string') throw invalid('extraArgs', 'must be strings');
    args.push(...launch.extraArgs);
    // Only extra arguments can introduce a duplicate; the fixed part above has none.
    assertNoDuplicateFlags(args);
  }
  return { file: launch.qemuBinary ?? `qemu-system-${arch}`, args };
}
