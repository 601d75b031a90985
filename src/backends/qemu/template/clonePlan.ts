/**
 * The plan of a clone create: the same plan → apply path as any create, with the template's
 * files in place of a boot. Everything that can refuse (unknown template, a memory other than
 * the template's, a QEMU or layout that changed, a truncated or corrupt state file) is
 * checked here, before anything is written.
 */
import { randomUUID } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { LocalVmError } from '../../../errors.js';
import { exists } from '../../../host/fs.js';
import { FROM_TEMPLATE, specFingerprint, type VmSpec } from '../../../schema.js';
import { buildQemuCommand } from '../cmdline.js';
import type { QemuHost } from '../host.js';
import { launchFor, STATE_DISK_BYTES, stateDiskFor } from '../layout.js';
import type { PlanMode, QemuPlan, QemuStep } from '../plan.js';
import { qemuImg } from '../qemuImg.js';
import { QEMU_BACKEND } from '../register.js';
import { RECORD_VERSION, vmsDir, type VmRecord } from '../state.js';
import { compatibilityDiff, depsOf, incompatible } from './compat.js';
import { macFor } from './restore.js';
import {
  blankPath,
  bootFilesOf,
  bootIdentity,
  fileSha256,
  qemuVersion,
  readTemplate,
  templatePaths,
  type TemplateRecord,
} from './store.js';

const IMG_TIMEOUT_MS = 60_000;

/** The clone's spec: what the template fixes (image, memory, cpus, arch, accel) taken from it. VALIDATION on a contradiction. */
function cloneSpec(spec: VmSpec, t: TemplateRecord): VmSpec {
  const issues: { property: string; reason: string }[] = [];
  const fixed = (property: 'memory' | 'cpus', unit: string) => {
    if (spec[property] !== FROM_TEMPLATE && spec[property] !== t.spec[property])
      issues.push({
        property,
        reason: `a clone has its template's ${property}: template ${t.name} has ${t.spec[property]}${unit} (its RAM file and device state are that machine's); omit ${property} or give ${t.spec[property]}`,
      });
  };
  fixed('memory', ' MiB');
  fixed('cpus', '');
  if (spec.disks.length > 0)
    issues.push({ property: 'disks', reason: `a clone has its template's disks; add more after it is created` });
  if (spec.diskSize !== undefined)
    issues.push({ property: 'diskSize', reason: `a clone has its template's disk size` });
  if (issues.length > 0) {
    throw new LocalVmError('VALIDATION', `VM spec of clone ${spec.name} contradicts template ${t.name}`, {
      vm: spec.name,
      issues,
    });
  }
  return {
    ...spec,
    image: t.spec.image,
    memory: t.spec.memory,
    cpus: t.spec.cpus,
    arch: t.spec.arch,
    accel: t.spec.accel,
    disks: t.spec.disks,
  };
}

/** A truncated or altered state file is refused before a clone is made from it. */
async function checkState(t: TemplateRecord, file: string, ram: string, vm: string): Promise<void> {
  const st = await stat(file).catch(() => undefined);
  const damaged = (why: string) =>
    new LocalVmError('CONFLICT', `template ${t.name}'s device state ${file} ${why}`, {
      vm,
      hint: `rebuild it: localvm template delete ${t.name} && localvm template create ${t.name} ...`,
      details: { template: t.name },
    });
  if (!st) throw damaged('is missing');
  if (st.size !== t.stateBytes) throw damaged(`is ${st.size} bytes, ${t.stateBytes} were saved (truncated?)`);
  if ((await fileSha256(file)) !== t.stateSha256) throw damaged('does not match its recorded sha256 (corrupt)');
  for (const f of [ram, ...t.disks.map((d) => d.path)]) {
    if (!(await exists(f))) throw damaged(`is there, but ${f} is missing`);
  }
}

/**
 * Plans creating clone `spec.name` of template `spec.template`. `hold`: restore it and keep
 * it paused (no `cont`, no personalisation): memory, no CPU, until hold.ts resumes it.
 */
export async function planCloneCreate(
  host: QemuHost,
  spec: VmSpec & { template: string },
  mode: PlanMode,
  options: { hold?: boolean } = {},
): Promise<QemuPlan> {
  const name = spec.name;
  const p = host.paths(name);
  if (await exists(p.dir)) {
    throw new LocalVmError('ALREADY_EXISTS', `a QEMU VM named ${name} already exists`, {
      vm: name,
      hint: `delete it first (localvm delete ${name}) or use another name`,
    });
  }
  const t = await readTemplate(host.config.stateDir, spec.template, name);
  const tp = templatePaths(host.config.stateDir, t.name);
  const cspec = cloneSpec(spec, t);
  const record: VmRecord = {
    version: RECORD_VERSION,
    name,
    spec: cspec,
    fingerprint: specFingerprint(spec),
    createdAt: new Date().toISOString(),
    phase: 'creating',
    desiredState: 'running',
    boot: t.boot.kind === 'kernel' ? t.boot : { ...t.boot, image: p.overlay, format: 'qcow2' },
    arch: (t.deps.arch as VmRecord['arch']) ?? host.hostArch,
    disks: t.disks
      .filter((d) => d.id !== 'root')
      .map((d) => ({ id: d.id, path: join(p.dir, basename(d.path)), format: 'qcow2' })),
    stateDisk: stateDiskFor(p.dir),
    // The template's seed, shared read-only: cloud-init ran before the freeze (see template/seed.ts).
    seedImage: t.seedImage,
    seedDir: t.seedDir,
    paths: p,
    template: {
      name: t.name,
      role: 'clone',
      ramFile: tp.ram,
      memory: cspec.memory,
      vmgenid: randomUUID(),
      ...(t.ramId !== undefined ? { ramId: t.ramId } : {}),
      ...(t.identityPort ? { identityPort: true } : {}),
      ...(t.identityHelper ? { identityHelper: true } : {}),
    },
  };
  const accel = await host.chooseAccel(cspec, record.arch, mode);
  const launch = launchFor(record, accel.accel, host.config.qemuBinary, { incoming: true });
  const command = buildQemuCommand(launch);
  const now = depsOf(
    launch,
    await qemuVersion(host.runner, launch.qemuBinary ?? `qemu-system-${launch.arch}`),
    await bootIdentity(bootFilesOf(t.spec, t.boot)),
  );
  const changes = compatibilityDiff(t.deps, now);
  if (changes.length > 0) throw incompatible(t.name, name, changes);
  await checkState(t, tp.state, tp.ram, name);

  const img = (c: ReturnType<typeof qemuImg.create>): QemuStep => ({
    summary: `${c.file} ${c.args.join(' ')}`,
    command: c,
    action: { kind: 'run', timeoutMs: IMG_TIMEOUT_MS },
  });
  // A blank the template made is copied (no process start); a template from before blanks
  // existed gets qemu-img, as a boot would.
  const fromBlank = async (file: string, to: string, c: ReturnType<typeof qemuImg.create>): Promise<QemuStep> => {
    const from = blankPath(tp, file);
    return (await exists(from))
      ? { summary: `copy ${from} to ${to} (a blank made with the template)`, action: { kind: 'copy-blank', from, to } }
      : img(c);
  };
  const dir = (path: string, exclusive: boolean): QemuStep => ({
    summary: `create directory ${path} (mode 0700)`,
    action: { kind: 'mkdir', path, exclusive },
  });
  const steps: QemuStep[] = [
    dir(vmsDir(host.config.stateDir), false),
    dir(p.dir, true),
    ...(p.socketDir ? [dir(p.socketDir, false)] : []),
    { summary: `write ${p.record} (phase creating, clone of ${t.name})`, action: { kind: 'write-record', record } },
    { summary: `create ${p.consoleLog} (mode 0600)`, action: { kind: 'touch', path: p.consoleLog } },
  ];
  for (const d of t.disks) {
    const to = d.id === 'root' ? p.overlay : join(p.dir, basename(d.path));
    steps.push(
      await fromBlank(
        basename(d.path),
        to,
        qemuImg.create({ path: to, format: 'qcow2', backing: { path: d.path, format: 'qcow2' } }),
      ),
    );
  }
  if (record.stateDisk)
    steps.push(
      await fromBlank(
        'state.qcow2',
        record.stateDisk,
        qemuImg.create({ path: record.stateDisk, format: 'qcow2', size: STATE_DISK_BYTES }),
      ),
    );
  steps.push(
    { summary: `remove stale sockets ${p.qmpSocket} ${p.qgaSocket}`, action: { kind: 'remove-runtime', paths: p } },
    {
      summary: `start QEMU waiting for template ${t.name}'s state (${accel.reason})`,
      command,
      action: { kind: 'launch', record, accel },
    },
    {
      summary:
        `restore ${tp.state} (${t.stateBytes} bytes) over QMP migrate-incoming, RAM from ${tp.ram} (private copy-on-write), ` +
        (options.hold ? 'then hold it paused' : 'then cont'),
      action: { kind: 'restore', record, stateFile: tp.state, template: t.name, hold: options.hold === true },
    },
  );
  if (!options.hold) steps.push(personalizeStep(record, name));
  return { backend: QEMU_BACKEND, operation: 'create', vm: name, steps };
}

/**
 * The step that makes a running clone its own machine: clock, hostname and (unless `mac` is
 * false) a MAC of its own, in one guest process.
 */
export function personalizeStep(
  record: VmRecord,
  name: string,
  options: { mac?: boolean; held?: boolean } = {},
): QemuStep {
  const mac = options.mac === false ? undefined : macFor(name);
  // A held clone's identity port is open only in the process that restored it.
  const via = record.template?.identityHelper
    ? `through the helper parked in template ${record.template.name} (no guest process${options.held ? '; one agent guest process if another process restored it' : ''})`
    : 'through the agent, one guest process';
  return {
    summary: `${via}: set the guest clock, hostname ${name}${mac ? `, MAC ${mac}` : ''}`,
    action: { kind: 'personalize', record, hostname: name, mac },
  };
}
