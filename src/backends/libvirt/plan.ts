/**
 * libvirt plans, pure: from what the backend observed on the host (pool, volumes, domain
 * state, capabilities), the virsh commands an operation runs. The backend applies exactly
 * these steps; `--dry-run` prints them. XML and files written at apply time are named by
 * placeholders in the planned argv (INPUT_FILE, SEED_FILE).
 */
import type { Plan, PlanOperation, PlanStep } from '../../plan.js';
import type { VmSpec } from '../../schema.js';
import type { Command } from '../../runner.js';
import { diskNode, diskTarget, domainXml, type DomainDisk, type DomainType } from './domainXml.js';
import { metadataNode, type LocalVmMetadata } from './metadata.js';
import { LIBVIRT_BACKEND } from './register.js';
import type { LibvirtTarget } from './target.js';
import type { VirshBuilders } from './virsh.js';
import { baseVolume, diskPart, STATE_VOLUME_BYTES, vmVolume, volumeXml, type VolumeFormat } from './volumes.js';

/** Stands for the private temporary file an XML document is written to. */
export const INPUT_FILE = '<temp>/input.xml';
/** Stands for the cloud-init seed ISO built at apply time. */
export const SEED_FILE = '<temp>/seed.iso';

export type LvAction =
  | { kind: 'none' }
  /** Run the command; it must exit 0. `input` is written to INPUT_FILE first. */
  | { kind: 'virsh'; input?: string | undefined; timeoutMs?: number | undefined; creates?: Created | undefined }
  /** Upload a base image once per host: under a lock, skipped when another creator finished it. */
  | { kind: 'base'; volume: string; source: string; sizeBytes: number }
  /** Build the seed ISO from user-data, create its volume and upload it. */
  | { kind: 'seed'; volume: string; userData: string; metaData: string; isoTool: { file: string; prefix: string[] } }
  /** Ask the guest to power off, then wait for `shut off`, asking again each second. */
  | { kind: 'graceful-stop'; timeoutMs: number };

/** What a step made on the host, for undoing a create that failed after it. */
export type Created = { domain: string } | { volume: string };

export interface LvStep extends PlanStep {
  action: LvAction;
  otherwise?: LvStep[] | undefined;
}

export type LvPlan = Plan<LvStep>;

export type BootSource =
  | {
      kind: 'kernel';
      kernel: { source: string; hash: string; sizeBytes: number };
      initrd?: { source: string; hash: string; sizeBytes: number } | undefined;
      cmdline?: string | undefined;
    }
  | {
      kind: 'image';
      image: { source: string; hash: string; sizeBytes: number; format: VolumeFormat; virtualBytes: number };
    };

export interface CreateObservation {
  target: LibvirtTarget;
  /** The pool's directory on the host; undefined when the pool does not exist yet. */
  poolPath?: string | undefined;
  /** Whether the existing pool is started (it is autostarted, unless someone stopped it). */
  poolActive?: boolean | undefined;
  /** Where the pool is created when it does not exist. */
  poolDir: string;
  pool: string;
  /** Volumes already in the pool. */
  volumes: readonly string[];
  domainType: DomainType;
  boot: BootSource;
  metadata: LocalVmMetadata;
  isoTool?: { file: string; prefix: string[] } | undefined;
}

const UPLOAD_TIMEOUT_MS = 600_000;

const note = (summary: string): LvStep => ({ summary, action: { kind: 'none' } });
const say = (c: Command) => [c.file, ...c.args].join(' ');
const run = (command: Command, extra: Omit<Extract<LvAction, { kind: 'virsh' }>, 'kind'> = {}): LvStep => ({
  summary: say(command),
  command,
  action: { kind: 'virsh', ...extra },
});

/** The NoCloud meta-data of VM `name`. */
export function seedMetaData(name: string): string {
  return `instance-id: ${name}\nlocal-hostname: ${name}\n`;
}

/**
 * The dry-run plan of a create whose URL image is not downloaded yet: what is downloaded
 * first; the volumes and the definition depend on the file, so they are named, not listed.
 */
export function planDownloadFirst(spec: VmSpec, pending: { url: string; checksum: string }, host: string): LvPlan {
  return {
    backend: LIBVIRT_BACKEND,
    operation: 'create',
    vm: spec.name,
    steps: [
      note(`download ${pending.url} into the image cache, verified against ${pending.checksum}`),
      note(`then upload it into pool localvm on ${host} (once per host), define and start ${spec.name}`),
    ],
  };
}

/** Create: pool if missing, base volumes if missing, the VM's own volumes, define, start. */
export function planCreate(virsh: VirshBuilders, spec: VmSpec, o: CreateObservation): LvPlan {
  const name = spec.name;
  const steps: LvStep[] = [];
  const pool = o.pool;
  const poolPath = o.poolPath ?? o.poolDir;
  const have = new Set(o.volumes);
  if (o.poolPath === undefined) {
    steps.push(
      run(virsh.poolDefineDir(pool, o.poolDir)),
      run(virsh.poolBuild(pool)),
      run(virsh.poolStart(pool)),
      run(virsh.poolAutostart(pool)),
    );
  } else if (o.poolActive === false) {
    steps.push(run(virsh.poolStart(pool)));
  }
  const base = (part: string, f: { source: string; hash: string; sizeBytes: number }): string => {
    const volume = baseVolume(f.hash, part);
    if (!have.has(volume)) {
      steps.push({
        summary: `upload ${f.source} (${f.sizeBytes} bytes) once into volume ${volume} of pool ${pool}`,
        command: virsh.volUpload(pool, volume, f.source),
        action: { kind: 'base', volume, source: f.source, sizeBytes: f.sizeBytes },
      });
      have.add(volume);
    }
    return `${poolPath}/${volume}`;
  };
  const own = (part: string, xmlOf: (volume: string) => string): string => {
    const volume = vmVolume(name, part);
    steps.push(
      run(virsh.volCreate(pool, INPUT_FILE), {
        input: xmlOf(volume),
        creates: { volume },
        timeoutMs: UPLOAD_TIMEOUT_MS,
      }),
    );
    return volume;
  };

  const disks: DomainDisk[] = [];
  let kernel: Parameters<typeof domainXml>[0]['kernel'];
  const b = o.boot;
  if (b.kind === 'kernel') {
    kernel = {
      kernel: base('vmlinux', b.kernel),
      initrd: b.initrd ? base('initrd', b.initrd) : undefined,
      cmdline: b.cmdline,
    };
    const state = own('state.qcow2', (v) => volumeXml({ name: v, capacityBytes: STATE_VOLUME_BYTES, format: 'qcow2' }));
    disks.push({ volume: state, target: diskTarget(0), format: 'qcow2' });
  } else {
    const backing = base(b.image.format === 'qcow2' ? 'qcow2' : 'raw', b.image);
    const capacityBytes = Math.max(spec.diskSize ?? 0, b.image.virtualBytes);
    const root = own('root.qcow2', (v) =>
      volumeXml({ name: v, capacityBytes, format: 'qcow2', backing: { path: backing, format: b.image.format } }),
    );
    disks.push({ volume: root, target: diskTarget(0), format: 'qcow2', bootOrder: 1 });
  }
  for (const d of spec.disks) {
    const volume = own(diskPart(d.name), (v) => volumeXml({ name: v, capacityBytes: d.size, format: 'qcow2' }));
    disks.push({ volume, target: diskTarget(disks.length), format: 'qcow2' });
  }
  if (spec.userData !== undefined && o.isoTool) {
    const volume = vmVolume(name, 'seed.iso');
    steps.push({
      summary: `build the cloud-init seed ${SEED_FILE} (${Buffer.byteLength(spec.userData)} bytes of user-data) and upload it into volume ${volume}`,
      command: virsh.volUpload(pool, volume, SEED_FILE),
      action: { kind: 'seed', volume, userData: spec.userData, metaData: seedMetaData(name), isoTool: o.isoTool },
    });
    disks.push({ volume, target: diskTarget(disks.length), format: 'raw', readonly: true });
  }
  const xml = domainXml({
    name,
    type: o.domainType,
    arch: spec.arch ?? 'x86_64',
    cpus: spec.cpus,
    memoryMib: spec.memory,
    kernel,
    pool,
    disks,
    consoleLog: `${poolPath}/${vmVolume(name, 'console.log')}`,
    ports: spec.ports,
    metadata: metadataNode(o.metadata),
  });
  steps.push(run(virsh.define(INPUT_FILE), { input: xml, creates: { domain: name } }));
  steps.push(run(virsh.start(name), { timeoutMs: spec.timeouts.createMs }));
  return { backend: LIBVIRT_BACKEND, operation: 'create', vm: name, steps };
}

export interface DomainObservation {
  /** libvirt's state, or undefined when there is no such domain. */
  state?: 'running' | 'stopped' | 'stopping' | 'unknown' | undefined;
  /** The VM's own volumes in the pool (deleted with it). */
  volumes: readonly string[];
  pool: string;
}

const STOP_POLL_TIMEOUT_MS = 60_000;

function stopSteps(virsh: VirshBuilders, name: string, force: boolean, timeoutMs: number): LvStep[] {
  const destroy = run(virsh.destroy(name), { timeoutMs: STOP_POLL_TIMEOUT_MS });
  if (force) return [destroy];
  return [
    {
      summary: `${say(virsh.shutdown(name))}, then wait up to ${timeoutMs} ms for shut off`,
      command: virsh.shutdown(name),
      action: { kind: 'graceful-stop', timeoutMs },
      otherwise: [destroy],
    },
  ];
}

/** Start, stop, restart and delete of an existing (or missing) domain. */
export function planExisting(
  virsh: VirshBuilders,
  operation: Exclude<PlanOperation, 'create'>,
  name: string,
  o: DomainObservation,
  options: { force?: boolean | undefined; timeoutMs: number },
): LvPlan {
  const plan = (steps: LvStep[]): LvPlan => ({ backend: LIBVIRT_BACKEND, operation, vm: name, steps });
  const running = o.state === 'running' || o.state === 'stopping' || o.state === 'unknown';
  switch (operation) {
    case 'start':
      if (o.state === undefined) return plan([note(`${name} does not exist`)]);
      return plan(running ? [note(`${name} is running: nothing to do`)] : [run(virsh.start(name))]);
    case 'stop':
      if (o.state === undefined) return plan([note(`${name} does not exist`)]);
      return plan(
        running ? stopSteps(virsh, name, Boolean(options.force), options.timeoutMs) : [note(`${name} is stopped`)],
      );
    case 'restart':
      if (o.state === undefined) return plan([note(`${name} does not exist`)]);
      return plan([...(running ? stopSteps(virsh, name, false, options.timeoutMs) : []), run(virsh.start(name))]);
    case 'delete': {
      const steps: LvStep[] = [];
      if (o.state === undefined && o.volumes.length === 0) return plan([note(`${name} does not exist: nothing to do`)]);
      if (running) steps.push(run(virsh.destroy(name)));
      // Snapshots are internal to the VM's qcow2 volumes: their metadata goes with the definition.
      if (o.state !== undefined) steps.push(run(virsh.undefine(name)));
      for (const volume of o.volumes) steps.push(run(virsh.volDelete(o.pool, volume)));
      return plan(steps);
    }
  }
}

/** attach-device/detach-device XML of one extra disk. */
export function diskDeviceXml(pool: string, volume: string, target: string): string {
  return `${diskNode(pool, { volume, target, format: 'qcow2' }).xml}\n`;
}
