/**
 * `--dry-run create`: the commands a create would run, computed without calling the
 * backend. The QEMU backend writes the VM's directory (record, overlay) before it runs
 * anything, so running it against a recording runner would still touch disk; instead the
 * plan is built with the same pure builders the backend uses (buildQemuCommand, qemu-img,
 * orbctl) from paths derived from the config. Only the image cache and the cached KVM
 * verdict are read; nothing is written.
 */
import { readFile } from 'node:fs/promises';
import { arch as hostArch, release } from 'node:os';
import { join } from 'node:path';
import { buildQemuCommand, createOrbctl, qemuImg, type QemuAccel } from '../commandBuilder.js';
import type { LocalVmConfig } from '../config.js';
import type { Command } from '../runner.js';
import type { VmInfo } from '../backend.js';
import type { VmSpec } from '../schema.js';
import { resolveAccel } from '../backends/qemu/accel.js';
import { findTinyImage, TINY_APPEND } from '../backends/qemu/image/index.js';
import { readRecord, vmPaths, type BootRecord } from '../backends/qemu/state.js';
import { diskLayout, launchFor, seedDirFor, STATE_DISK_BYTES, stateDiskFor } from '../backends/qemu/layout.js';
import { orbCreatePlan } from '../backends/orbstack/index.js';

export interface QemuPlanInputs {
  accel: QemuAccel;
  /** The built tiny image, or placeholders when it is not built yet. */
  tiny: { kernel: string; initrd: string; append: string };
  /** `qemu-system-*` override (config.qemuBinary: the binary or a directory holding it). */
  qemuBinary?: string | undefined;
  /** Guest architecture when the spec names none (the host's). */
  defaultArch?: 'x86_64' | 'aarch64';
}

/** The commands creating `spec` on QEMU would run, in order. Pure. */
export function planQemuCreate(spec: VmSpec, config: LocalVmConfig, inputs: QemuPlanInputs): Command[] {
  const paths = vmPaths(config.stateDir, config.runDir, spec.name);
  const commands: Command[] = [];
  let boot: BootRecord;
  if (spec.kernel !== undefined) {
    boot = { kind: 'kernel', kernel: spec.kernel, initrd: spec.initrd, append: spec.append };
  } else if (spec.image === 'tiny') {
    boot = { kind: 'kernel', kernel: inputs.tiny.kernel, initrd: inputs.tiny.initrd, append: inputs.tiny.append };
  } else {
    // The backend asks qemu-img for the format; a dry run runs nothing, so it goes by the name.
    const format = spec.image.endsWith('.raw') || spec.image.endsWith('.img') ? 'raw' : 'qcow2';
    commands.push(qemuImg.create({ path: paths.overlay, backing: { path: spec.image, format }, size: spec.diskSize }));
    boot = { kind: 'disk', image: paths.overlay, format: 'qcow2' };
  }
  const disks = diskLayout(spec, paths.dir);
  for (const [i, d] of disks.entries()) commands.push(qemuImg.create({ path: d.path, size: spec.disks[i]?.size }));
  const arch = spec.arch ?? inputs.defaultArch ?? 'x86_64';
  const stateDisk = stateDiskFor(paths.dir);
  commands.push(qemuImg.create({ path: stateDisk, size: STATE_DISK_BYTES }));
  const vm = { name: spec.name, spec, arch, boot, disks, seedDir: seedDirFor(spec, paths.dir), stateDisk, paths };
  commands.push(buildQemuCommand(launchFor(vm, inputs.accel, inputs.qemuBinary)));
  return commands;
}

/** The orbctl commands creating `spec` on OrbStack would run. Pure (user-data goes to a temp file). */
export function planOrbstackCreate(spec: VmSpec): Command[] {
  const orb = createOrbctl();
  const plan = orbCreatePlan(spec);
  const image = plan.version ? `${plan.distro}:${plan.version}` : plan.distro;
  const commands = [
    orb.create({
      image,
      name: spec.name,
      arch: plan.arch,
      user: plan.user,
      ...(spec.userData !== undefined ? { userDataFile: '<temp>/user-data' } : {}),
    }),
  ];
  if (plan.cpus !== undefined) commands.push(orb.configSet(spec.name, 'cpu', plan.cpus));
  if (plan.memoryMib !== undefined) commands.push(orb.configSet(spec.name, 'memory_mib', plan.memoryMib));
  if (plan.diskBytes !== undefined) commands.push(orb.configSet(spec.name, 'disk_bytes', plan.diskBytes));
  return commands;
}

/** The accelerator `auto` would pick, from the cached KVM verdict only (a probe would run QEMU). */
async function plannedAccel(spec: VmSpec, config: LocalVmConfig): Promise<QemuAccel> {
  const requested = spec.accel !== 'auto' ? spec.accel : config.accel;
  const choice = await resolveAccel(requested, {
    platform: config.platform,
    hostArch: hostArch(),
    guestArch: spec.arch ?? hostQemuArch(),
    probeKvm: async () => {
      try {
        const cached = JSON.parse(await readFile(join(config.cacheDir, 'accel.json'), 'utf8')) as {
          kernelRelease?: string;
          verdict?: { usable: boolean; reason: string };
        };
        if (cached.kernelRelease === release() && cached.verdict) return cached.verdict;
      } catch {
        // no verdict cached
      }
      return { usable: false, reason: 'KVM not probed yet (dry run), assuming tcg' };
    },
  });
  return choice.accel;
}

/** The plan for creating `spec` on `backend`, reading only caches. */
export async function planCreate(
  spec: VmSpec,
  backend: 'qemu' | 'orbstack',
  config: LocalVmConfig,
): Promise<Command[]> {
  if (backend === 'orbstack') return planOrbstackCreate(spec);
  const tiny = spec.image === 'tiny' && spec.kernel === undefined ? await findTinyImage(config) : undefined;
  const placeholder = join(config.cacheDir, 'images', 'tiny-<not built: run localvm image build>');
  return planQemuCreate(spec, config, {
    accel: await plannedAccel(spec, config),
    tiny: tiny ?? { kernel: join(placeholder, 'vmlinux'), initrd: join(placeholder, 'initrd.gz'), append: TINY_APPEND },
    qemuBinary: config.qemuBinary,
    defaultArch: hostQemuArch(),
  });
}

function hostQemuArch(): 'x86_64' | 'aarch64' {
  return hostArch() === 'arm64' ? 'aarch64' : 'x86_64';
}

/** One step of a dry-run plan: a command that would run, or what would be said over a socket. */
export type PlanStep = { command: Command } | { note: string };

export type LifecycleVerb = 'start' | 'stop' | 'restart' | 'delete';

/**
 * What `verb` would do to the existing VM `info`, for `--dry-run`: the exact argv of every
 * process it would start (QEMU itself, orbctl), and a note for each QMP step, since stopping
 * a QEMU VM runs no process. Reads the VM's record and the caches; writes nothing.
 */
export async function planLifecycle(
  verb: LifecycleVerb,
  info: VmInfo,
  config: LocalVmConfig,
  stopTimeoutMs: number,
  options: { force?: boolean | undefined } = {},
): Promise<PlanStep[]> {
  const name = info.name;
  if (info.backend === 'orbstack') {
    const orb = createOrbctl();
    const stop: PlanStep[] = [
      { command: orb.stop(name) },
      { note: `if it has not stopped after ${stopTimeoutMs} ms: ${formatArgv(orb.stop(name, { force: true }))}` },
    ];
    if (verb === 'start')
      return info.state === 'running'
        ? [{ note: `${name} is running: nothing to do` }]
        : [{ command: orb.start(name) }];
    if (verb === 'stop') {
      if (info.state === 'stopped') return [{ note: `${name} is stopped: nothing to do` }];
      return options.force ? [{ command: orb.stop(name, { force: true }) }] : stop;
    }
    if (verb === 'restart') return [{ command: orb.restart(name) }];
    return [{ command: orb.delete(name, { force: true }) }];
  }
  const paths = vmPaths(config.stateDir, config.runDir, name);
  const running = info.state === 'running';
  const stopSteps = (graceful: boolean): PlanStep[] =>
    !running
      ? []
      : graceful
        ? [
            { note: `QMP system_powerdown on ${paths.qmpSocket}` },
            { note: `if QEMU (pid ${info.pid}) has not exited after ${stopTimeoutMs} ms: QMP quit, then SIGKILL` },
          ]
        : [{ note: `SIGKILL QEMU (pid ${info.pid})` }];
  const startSteps = async (): Promise<PlanStep[]> => {
    const record = await readRecord(paths.record);
    if (!record) return [{ note: `${name} has no record at ${paths.record}: it cannot be started` }];
    const accel = await plannedAccel(record.spec, config);
    return [
      { note: `remove stale sockets ${paths.qmpSocket} ${paths.qgaSocket}` },
      { command: buildQemuCommand(launchFor(record, accel, config.qemuBinary)) },
    ];
  };
  if (verb === 'start') return running ? [{ note: `${name} is running: nothing to do` }] : startSteps();
  if (verb === 'stop') return running ? stopSteps(!options.force) : [{ note: `${name} is stopped: nothing to do` }];
  if (verb === 'restart') return [...stopSteps(true), ...(await startSteps())];
  return [...stopSteps(false), { note: `remove ${paths.dir}${paths.socketDir ? ` and ${paths.socketDir}` : ''}` }];
}

function formatArgv(cmd: Command): string {
  return [cmd.file, ...cmd.args].join(' ');
}
