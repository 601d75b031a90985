/**
 * QEMU plans: what create, start, stop and delete will do, from read-only observations
 * (the record, the process, the image's format as `qemu-img info` reports it, the cached
 * accelerator verdict). `apply.ts` executes exactly these steps; `--dry-run` prints them.
 */
import { join, resolve } from 'node:path';
import { LocalVmError } from '../../errors.js';
import { exists } from '../../host/fs.js';
import { parseQemuImgInfo } from '../../parsers.js';
import type { Plan, PlanStep } from '../../plan.js';
import { runChecked, type Command } from '../../runner.js';
import { specFingerprint, type VmSpec } from '../../schema.js';
import type { AccelChoice } from './accel.js';
import { buildQemuCommand } from './cmdline.js';
import { checkBootFile, checkDiskImage } from './bootFile.js';
import type { QemuHost } from './host.js';
import { bootFiles, rootBoot } from './kernelRoot.js';
import { diskLayout, launchFor, seedDirFor, STATE_DISK_BYTES, stateDiskFor } from './layout.js';
import { observe, type Observed } from './observe.js';
import { qemuImg } from './qemuImg.js';
import { QEMU_BACKEND } from './register.js';
import { findIsoTool, seedImageFor, seedIsoCommand } from './seed.js';
import { planRemoteImage, type DownloadAction } from './image/remote.js';
import { RECORD_VERSION, vmsDir, type BootRecord, type VmPaths, type VmRecord } from './state.js';
import { planSsh, sshSteps, withFreeSshPort } from './ssh/plan.js';
import { planCloneCreate } from './template/clonePlan.js';
import type { CloneAction } from './template/restore.js';

/** What a step does, for the executor. Kept out of `summary`: records hold user-data. */
export type QemuAction =
  | { kind: 'mkdir'; path: string; exclusive: boolean }
  | { kind: 'write-record'; record: VmRecord }
  | { kind: 'touch'; path: string }
  | DownloadAction
  | {
      kind: 'write-seed';
      dir: string;
      /** The user's user-data (none: only ours, when the seed is there for SSH). */
      userData: string | undefined;
      metaData: string;
      /** Merge the VM's public key (`<keyFile>.pub`, written by an earlier step) into the user-data. */
      sshKey?: { keyFile: string; user: string } | undefined;
    }
  | { kind: 'run'; timeoutMs: number }
  | { kind: 'launch'; record: VmRecord; accel: AccelChoice }
  | { kind: 'remove-runtime'; paths: VmPaths }
  | { kind: 'drop-agent'; socket: string }
  | { kind: 'qmp'; command: string; optional: boolean; paths: VmPaths }
  | {
      kind: 'await-exit';
      pid: number;
      timeoutMs: number;
      /** Press the power button again this often while waiting: a guest still booting drops presses. */
      repressMs?: number | undefined;
      paths?: VmPaths | undefined;
    }
  | { kind: 'kill'; pid: number }
  | { kind: 'mark-stopped'; record: VmRecord }
  | { kind: 'remove'; paths: string[] }
  | CloneAction
  | { kind: 'none' };

export interface QemuStep extends PlanStep {
  action: QemuAction;
  otherwise?: QemuStep[] | undefined;
}

export type QemuPlan = Plan<QemuStep>;

/** Planning for a dry run reads caches only; planning for a real run may probe KVM. */
export interface PlanMode {
  probe: boolean;
}

/** How long a forced stop waits for QEMU to go after `quit`. */
const QUIT_WAIT_MS = 2_000;
const IMG_TIMEOUT_MS = 60_000;
/**
 * How often a graceful stop presses the power button again: the ACPI button driver of a
 * guest that is still booting is not bound yet, and the kernel drops a press it cannot deliver.
 */
const REPRESS_MS = 1_000;

const note = (summary: string): QemuStep => ({ summary, action: { kind: 'none' } });
const runStep = (command: Command): QemuStep => ({
  summary: `${command.file} ${command.args.join(' ')}`,
  command,
  action: { kind: 'run', timeoutMs: IMG_TIMEOUT_MS },
});

function alreadyExists(name: string): LocalVmError {
  return new LocalVmError('ALREADY_EXISTS', `a QEMU VM named ${name} already exists`, {
    vm: name,
    hint: `delete it first (localvm delete ${name}) or use another name`,
  });
}

/** Where the VM boots from, and the user image to put an overlay on; every boot file a regular file. */
async function resolveBoot(host: QemuHost, spec: VmSpec): Promise<{ boot: BootRecord; image?: string }> {
  if (spec.kernel) {
    await checkBootFile(spec.name, 'kernel', spec.kernel);
    if (spec.initrd) await checkBootFile(spec.name, 'initrd', spec.initrd);
    // With an image (not the default tiny) the kernel boots it as its root disk (kernelRoot.ts).
    const image = spec.image === 'tiny' ? undefined : resolve(spec.image);
    if (image) await checkBootFile(spec.name, 'image', image);
    return { boot: { kind: 'kernel', kernel: spec.kernel, initrd: spec.initrd, append: spec.append }, image };
  }
  if (spec.image === 'tiny') {
    const tiny = await host.findImage(host.config);
    if (!tiny) {
      throw new LocalVmError('NOT_FOUND', 'the tiny guest image has not been built', {
        vm: spec.name,
        hint: 'build it once with `localvm image build`',
      });
    }
    return { boot: { kind: 'kernel', kernel: tiny.kernel, initrd: tiny.initrd, append: spec.append ?? tiny.append } };
  }
  const image = resolve(spec.image);
  await checkBootFile(spec.name, 'image', image);
  return { boot: { kind: 'disk', image: '', format: 'qcow2' }, image };
}

/**
 * The image's real format, as qemu-img reads it (read-only, `--force-share`), which must be
 * the one its bytes show (imageCheck.ts): qemu-img calls any file it cannot name raw, so
 * without this `--image /etc/passwd` would boot as a raw disk.
 */
async function imageFormat(host: QemuHost, name: string, image: string): Promise<'qcow2' | 'raw'> {
  const sniffed = await checkDiskImage(name, image);
  const info = parseQemuImgInfo((await runChecked(host.runner, qemuImg.info(image), { timeoutMs: 30_000 })).stdout);
  if (info.format !== 'qcow2' && info.format !== 'raw') {
    throw new LocalVmError('VALIDATION', `image ${image} is ${info.format}; qcow2 or raw expected`, {
      vm: name,
      issues: [{ property: 'image', reason: `unsupported format ${info.format}` }],
    });
  }
  if (info.format !== sniffed) {
    throw new LocalVmError(
      'VALIDATION',
      `image ${image} looks like ${sniffed} but qemu-img reads it as ${info.format}`,
      {
        vm: name,
        issues: [{ property: 'image', reason: `qemu-img reads it as ${info.format}, its first bytes say ${sniffed}` }],
      },
    );
  }
  return info.format;
}

/** Boot files of a record must still exist (the tiny image may have been pruned). */
async function checkBootFiles(name: string, boot: BootRecord): Promise<void> {
  const files = bootFiles(boot);
  for (const f of files) {
    if (!(await exists(f))) {
      throw new LocalVmError('NOT_FOUND', `boot file ${f} of VM ${name} does not exist`, {
        vm: name,
        hint: 'rebuild the image (`localvm image build`) or recreate the VM',
      });
    }
  }
}

/** The steps that launch QEMU for `record` (whose process is not running). */
async function launchSteps(host: QemuHost, record: VmRecord, mode: PlanMode): Promise<QemuStep[]> {
  const p = record.paths;
  const accel = await host.chooseAccel(record.spec, record.arch, mode);
  const command = buildQemuCommand(launchFor(record, accel.accel, host.config.qemuBinary));
  return [
    { summary: `remove stale sockets ${p.qmpSocket} ${p.qgaSocket}`, action: { kind: 'remove-runtime', paths: p } },
    ...(p.socketDir
      ? [
          {
            summary: `create directory ${p.socketDir} (mode 0700)`,
            action: { kind: 'mkdir', path: p.socketDir, exclusive: false },
          } as QemuStep,
        ]
      : []),
    { summary: `start QEMU (${accel.reason})`, command, action: { kind: 'launch', record, accel } },
  ];
}

/** Plans creating `spec`. ALREADY_EXISTS when the name is taken; NOT_FOUND for missing boot files. */
export async function planCreate(host: QemuHost, spec: VmSpec, mode: PlanMode): Promise<QemuPlan> {
  // A clone restores its template instead of booting (see template/clonePlan.ts).
  if (spec.template !== undefined) return planCloneCreate(host, { ...spec, template: spec.template }, mode);
  const name = spec.name;
  const p = host.paths(name);
  if (await exists(p.dir)) throw alreadyExists(name);
  // Everything that can fail on bad input is checked before anything is written.
  // An image by URL: its cached download, or a download step first (never while planning).
  const remote = await planRemoteImage(host, spec);
  const { boot, image } = remote ?? (await resolveBoot(host, spec));
  const backingFormat = remote ? remote.format : image ? await imageFormat(host, name, image) : undefined;
  const disks = diskLayout(spec, p.dir);
  const ssh = await planSsh(spec, p.dir, image !== undefined || remote !== undefined);
  const seedDir = seedDirFor(spec, p.dir) ?? (ssh ? join(p.dir, 'seed') : undefined);
  const isoTool = seedDir !== undefined ? findIsoTool(host.config) : undefined;
  const record: VmRecord = {
    version: RECORD_VERSION,
    name,
    spec,
    fingerprint: specFingerprint(spec),
    createdAt: new Date().toISOString(),
    phase: 'creating',
    desiredState: 'running',
    boot: image && backingFormat ? await rootBoot(host.runner, spec, p.overlay, image, backingFormat) : boot,
    arch: spec.arch ?? host.hostArch,
    disks,
    seedDir,
    seedImage: seedDir !== undefined && isoTool ? seedImageFor(p.dir) : undefined,
    stateDisk: stateDiskFor(p.dir),
    paths: p,
    ...(ssh ? { ssh } : {}),
  };
  const steps: QemuStep[] = [
    ...(remote?.steps ?? []),
    {
      summary: `create directory ${vmsDir(host.config.stateDir)} (mode 0700)`,
      action: { kind: 'mkdir', path: vmsDir(host.config.stateDir), exclusive: false },
    },
    { summary: `create directory ${p.dir} (mode 0700)`, action: { kind: 'mkdir', path: p.dir, exclusive: true } },
    // A run dir that is not ours is refused before anything else is written.
    ...(p.socketDir
      ? [
          {
            summary: `create directory ${p.socketDir} (mode 0700)`,
            action: { kind: 'mkdir', path: p.socketDir, exclusive: false },
          } as QemuStep,
        ]
      : []),
    { summary: `write ${p.record} (phase creating)`, action: { kind: 'write-record', record } },
    // The console log exists from the start, so `console` works even if QEMU never runs.
    { summary: `create ${p.consoleLog} (mode 0600)`, action: { kind: 'touch', path: p.consoleLog } },
  ];
  if (ssh) steps.push(...sshSteps(name, ssh, runStep));
  if (record.seedDir) {
    const bytes = spec.userData !== undefined ? Buffer.byteLength(spec.userData) : 0;
    steps.push({
      summary: `write the cloud-init seed ${record.seedDir}/{user-data,meta-data} (${bytes} bytes of user-data${ssh ? `, merged with the SSH key for ${ssh.user}` : ''}, mode 0600)`,
      action: {
        kind: 'write-seed',
        dir: record.seedDir,
        userData: spec.userData,
        sshKey: ssh ? { keyFile: ssh.keyFile, user: ssh.user } : undefined,
        // instance-id changes with the spec, so cloud-init runs again when the VM is recreated differently.
        metaData: `instance-id: ${name}-${record.fingerprint}\nlocal-hostname: ${name}\n`,
      },
    });
  }
  if (record.seedDir && record.seedImage && isoTool) {
    // Created 0600 first: the ISO tool rewrites the file and keeps its mode.
    steps.push(
      { summary: `create ${record.seedImage} (mode 0600)`, action: { kind: 'touch', path: record.seedImage } },
      runStep(seedIsoCommand(isoTool, record.seedDir, record.seedImage)),
    );
  }
  const img = runStep;
  if (image && backingFormat) {
    steps.push(
      img(
        qemuImg.create({
          path: p.overlay,
          format: 'qcow2',
          backing: { path: image, format: backingFormat },
          size: spec.diskSize,
        }),
      ),
    );
  }
  if (record.stateDisk)
    steps.push(img(qemuImg.create({ path: record.stateDisk, format: 'qcow2', size: STATE_DISK_BYTES })));
  for (const [i, d] of spec.disks.entries()) {
    const disk = disks[i];
    if (disk) steps.push(img(qemuImg.create({ path: disk.path, format: 'qcow2', size: d.size })));
  }
  steps.push(...(await launchSteps(host, record, mode)));
  return { backend: QEMU_BACKEND, operation: 'create', vm: name, steps };
}

/** Plans starting a VM from its record; nothing to do when it runs. */
export async function planStart(host: QemuHost, o: Observed & { record: VmRecord }, mode: PlanMode): Promise<QemuPlan> {
  const name = o.record.name;
  if (o.state.state === 'running')
    return { backend: QEMU_BACKEND, operation: 'start', vm: name, steps: [note(`${name} is running: nothing to do`)] };
  await checkBootFiles(name, o.record.boot);
  const record = await withFreeSshPort(o.record);
  return { backend: QEMU_BACKEND, operation: 'start', vm: name, steps: await launchSteps(host, record, mode) };
}

/** The steps that stop a running QEMU: graceful (power button) unless forced, then quit, then SIGKILL. */
function stopSteps(
  o: Observed & { record: VmRecord },
  options: { force?: boolean | undefined; timeoutMs?: number | undefined },
): QemuStep[] {
  const record = o.record;
  const p = record.paths;
  const steps: QemuStep[] = [];
  const pid = o.state.pid;
  if (o.state.state === 'running' && pid !== undefined) {
    steps.push({
      summary: `close guest-agent connections to ${p.qgaSocket}`,
      action: { kind: 'drop-agent', socket: p.qgaSocket },
    });
    const kill: QemuStep = { summary: `SIGKILL QEMU (pid ${pid})`, action: { kind: 'kill', pid } };
    const force: QemuStep[] = [
      { summary: `QMP quit on ${p.qmpSocket}`, action: { kind: 'qmp', command: 'quit', optional: true, paths: p } },
      {
        summary: `wait up to ${QUIT_WAIT_MS} ms for QEMU (pid ${pid}) to exit`,
        action: { kind: 'await-exit', pid, timeoutMs: QUIT_WAIT_MS },
        otherwise: [kill],
      },
    ];
    if (options.force) {
      steps.push(...force);
    } else {
      const timeoutMs = options.timeoutMs ?? record.spec.timeouts.stopMs;
      steps.push(
        {
          summary: `QMP system_powerdown on ${p.qmpSocket}`,
          action: { kind: 'qmp', command: 'system_powerdown', optional: true, paths: p },
        },
        {
          summary: `wait up to ${timeoutMs} ms for QEMU (pid ${pid}) to power off`,
          action: { kind: 'await-exit', pid, timeoutMs, repressMs: REPRESS_MS, paths: p },
          otherwise: force,
        },
      );
    }
  }
  steps.push(
    { summary: `remove stale sockets ${p.qmpSocket} ${p.qgaSocket}`, action: { kind: 'remove-runtime', paths: p } },
    { summary: `write ${p.record} (stopped)`, action: { kind: 'mark-stopped', record } },
  );
  return steps;
}

export async function planStop(
  o: Observed & { record: VmRecord },
  options: { force?: boolean | undefined; timeoutMs?: number | undefined } = {},
): Promise<QemuPlan> {
  const name = o.record.name;
  const steps =
    o.state.state === 'running'
      ? stopSteps(o, options)
      : [note(`${name} is stopped: nothing to do`), ...stopSteps(o, options)];
  return { backend: QEMU_BACKEND, operation: 'stop', vm: name, steps };
}

/** Stop (graceful), then start again from the same record. */
export async function planRestart(
  host: QemuHost,
  o: Observed & { record: VmRecord },
  mode: PlanMode,
): Promise<QemuPlan> {
  await checkBootFiles(o.record.name, o.record.boot);
  const steps = [...stopSteps(o, {}), ...(await launchSteps(host, o.record, mode))];
  return { backend: QEMU_BACKEND, operation: 'restart', vm: o.record.name, steps };
}

/** Plans deleting a VM: kill QEMU, remove its directory, socket dir and lock files. */
export async function planDelete(host: QemuHost, name: string): Promise<QemuPlan> {
  const o = await observe(host, name);
  if (!o.exists)
    return {
      backend: QEMU_BACKEND,
      operation: 'delete',
      vm: name,
      steps: [note(`${name} does not exist: nothing to do`)],
    };
  const steps: QemuStep[] = [
    {
      summary: `close guest-agent connections to ${o.paths.qgaSocket}`,
      action: { kind: 'drop-agent', socket: o.paths.qgaSocket },
    },
  ];
  if (o.state.state === 'running' && o.state.pid !== undefined) {
    steps.push({ summary: `SIGKILL QEMU (pid ${o.state.pid})`, action: { kind: 'kill', pid: o.state.pid } });
  }
  const dirs = [o.paths.dir, ...(o.paths.socketDir ? [o.paths.socketDir] : [])];
  steps.push({ summary: `remove ${dirs.join(' and ')}`, action: { kind: 'remove', paths: dirs } });
  // The lifecycle lock is held by this delete and removed when it is released.
  const locks = host.lockPaths(name).filter((l) => l !== host.lockPath(name, 'lifecycle'));
  steps.push({ summary: `remove lock files ${locks.join(' ')}`, action: { kind: 'remove', paths: locks } });
  return { backend: QEMU_BACKEND, operation: 'delete', vm: name, steps };
}
