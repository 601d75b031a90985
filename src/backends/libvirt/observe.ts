/**
 * What the libvirt backend reads before it plans: the host's capabilities and memory, the
 * pool and its volumes, a domain's state and metadata, and the local files a create
 * uploads. Reads only (`pool-refresh` rescans the pool directory; it changes nothing there).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { hostname, release, userInfo } from 'node:os';
import type { VmInfo } from '../../backend.js';
import { isLocalVmError, LocalVmError, unlessNotFound } from '../../errors.js';
import { poll } from '../../time/poll.js';
import { parseQemuImgInfo } from '../../parsers.js';
import { runChecked } from '../../runner.js';
import { specFingerprint, type VmSpec } from '../../schema.js';
import { createKvmProbe } from '../qemu/accel.js';
import { findTinyImage } from '../qemu/image/index.js';
import { qemuImg } from '../qemu/qemuImg.js';
import { findIsoTool } from '../qemu/seed.js';
import type { CommandRunner } from '../../runner.js';
import type { DomainType } from './domainXml.js';
import type { LibvirtHost } from './host.js';
import type { LocalVmMetadata } from './metadata.js';
import {
  parseCapabilities,
  parseDominfo,
  parseKeyValues,
  parseNodeinfo,
  parseVolList,
  type HostCapabilities,
} from './parse.js';
import type { BootSource, CreateObservation, DomainObservation } from './plan.js';
import { POOL, poolDirFor } from './target.js';
import { runsOnThisMachine } from './uri.js';
import { LIBVIRT_BACKEND } from './register.js';
import { volumesOf } from './volumes.js';

const where = (host: LibvirtHost) => `host ${host.target.host} (${host.target.uri})`;

/**
 * The domain type for a guest of `arch`: what the spec (or LOCALVM_ACCEL) asks, else `kvm`
 * when the host offers it for that arch and, on this machine, KVM really works (see the QEMU
 * backend's probe: /dev/kvm can exist and still hang guests), else `qemu` (TCG). Pure.
 */
export function chooseDomainType(
  caps: HostCapabilities,
  arch: string,
  requested: VmSpec['accel'],
  localKvmUsable: boolean | undefined,
  hostName: string,
): DomainType {
  const types = caps.guests.get(arch);
  if (!types || types.size === 0) {
    throw new LocalVmError(
      'UNSUPPORTED',
      `${hostName} cannot run ${arch} guests (libvirt offers ${[...caps.guests.keys()].join(', ') || 'none'})`,
      {
        hint: `install qemu-system for ${arch} on that host, or choose another arch`,
      },
    );
  }
  if (requested === 'hvf') throw new LocalVmError('UNSUPPORTED', `${hostName}: libvirt has no hvf accelerator`);
  if (requested === 'tcg') return 'qemu';
  if (requested === 'kvm') {
    if (!types.has('kvm')) throw new LocalVmError('UNSUPPORTED', `${hostName} offers no KVM for ${arch} guests`);
    return 'kvm';
  }
  return types.has('kvm') && localKvmUsable !== false ? 'kvm' : 'qemu';
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex').slice(0, 16);
}

async function fileFacts(path: string, hash?: string): Promise<{ source: string; hash: string; sizeBytes: number }> {
  const s = await stat(path).catch((error: unknown) => {
    throw new LocalVmError('NOT_FOUND', `${path}: ${(error as Error).message}`, { cause: error });
  });
  return { source: path, hash: hash ?? (await sha256File(path)), sizeBytes: s.size };
}

async function bootSource(
  spec: VmSpec,
  host: LibvirtHost,
  runner: CommandRunner,
  imagePath: string | undefined,
): Promise<BootSource> {
  if (spec.kernel) {
    // The QEMU backend boots an image as the root disk of a kernel; this one does not yet, and
    // dropping the image silently would boot something else than what was asked.
    if (spec.image !== 'tiny') {
      throw new LocalVmError(
        'UNSUPPORTED',
        `the libvirt backend boots a kernel without an image, not with ${spec.image}`,
        {
          vm: spec.name,
          hint: 'give kernel/initrd/append alone, or the image alone (its own boot loader), or use the QEMU backend',
        },
      );
    }
    return {
      kind: 'kernel',
      kernel: await fileFacts(spec.kernel),
      initrd: spec.initrd ? await fileFacts(spec.initrd) : undefined,
      cmdline: spec.append,
    };
  }
  if (spec.image === 'tiny') {
    const tiny = await findTinyImage(host.config);
    if (!tiny) {
      throw new LocalVmError('NOT_FOUND', 'the tiny guest image has not been built', {
        hint: 'run `localvm image build` first',
      });
    }
    // The image's content key names its volumes: the same tiny is uploaded once per host.
    return {
      kind: 'kernel',
      kernel: await fileFacts(tiny.kernel, `${tiny.hash}`),
      initrd: await fileFacts(tiny.initrd, `${tiny.hash}`),
      cmdline: spec.append ?? tiny.append,
    };
  }
  // A URL image arrives here as its cached download (urlImage.ts).
  const path = imagePath ?? spec.image;
  if (!path?.startsWith('/')) {
    throw new LocalVmError(
      'UNSUPPORTED',
      `the libvirt backend boots tiny, a local image path or a URL, not ${spec.image}`,
    );
  }
  const info = parseQemuImgInfo((await runChecked(runner, qemuImg.info(path), { timeoutMs: 30_000 })).stdout);
  const format = info.format === 'qcow2' ? 'qcow2' : info.format === 'raw' ? 'raw' : undefined;
  if (!format) throw new LocalVmError('UNSUPPORTED', `${spec.image} is ${info.format}; qcow2 or raw only`);
  const facts = await fileFacts(path);
  return { kind: 'image', image: { ...facts, format, virtualBytes: info.virtualSize ?? facts.sizeBytes } };
}

/**
 * The pool's directory (undefined when there is no pool), whether it is active, and its
 * volumes (none can be listed while it is inactive; a create plans its `pool-start`).
 */
/** How long a refresh waits for the pool's running jobs (another create's upload) to end. */
const POOL_BUSY_MS = 120_000;

/**
 * `pool-refresh`, which libvirt refuses while another operation on this host uploads or
 * creates a volume ("has asynchronous jobs running"): then it is tried again, with back-off,
 * until those jobs end — a delete beside a create on one host must not fail for that.
 */
async function refreshPool(host: LibvirtHost): Promise<void> {
  await poll(
    async () => {
      try {
        await host.virshOut(host.virsh.poolRefresh(POOL));
        return true;
      } catch (error) {
        if (isLocalVmError(error) && /asynchronous jobs running/i.test(error.command?.stderrTail ?? error.message)) {
          return undefined;
        }
        throw error;
      }
    },
    {
      what: `pool-refresh of pool ${POOL} on ${where(host)} (other volume jobs still running)`,
      timeoutMs: POOL_BUSY_MS,
      clock: host.clock,
      initialMs: 100,
      maxMs: 2_000,
    },
  );
}

export async function observePool(
  host: LibvirtHost,
  refresh: boolean,
): Promise<{ path?: string; active: boolean; volumes: string[] }> {
  let xml: string;
  try {
    xml = await host.virshOut(host.virsh.poolDumpxml(POOL));
  } catch (error) {
    if (isLocalVmError(error, 'NOT_FOUND')) return { active: false, volumes: [] };
    throw error;
  }
  const path = /<target>[\s\S]*?<path>([^<]+)<\/path>/.exec(xml)?.[1];
  const active = parseKeyValues(await host.virshOut(host.virsh.poolInfo(POOL))).State === 'running';
  if (!active) return { path, active, volumes: [] };
  if (refresh) await refreshPool(host);
  const volumes = parseVolList(await host.virshOut(host.virsh.volList(POOL))).map((v) => v.name);
  return { path, active, volumes };
}

/** Everything planCreate needs. ALREADY_EXISTS when the domain exists; VALIDATION/UNSUPPORTED naming the host. */
export async function observeCreate(
  host: LibvirtHost,
  spec: VmSpec,
  runner: CommandRunner,
  /** A URL image's cached download. */
  imagePath?: string,
): Promise<CreateObservation> {
  const state = await unlessNotFound(host.domstate(spec.name));
  if (state) {
    throw new LocalVmError('ALREADY_EXISTS', `VM ${spec.name} already exists on ${where(host)}`, { vm: spec.name });
  }
  if (spec.isolated)
    throw new LocalVmError('UNSUPPORTED', 'isolated networking (restrict=on) is not available through libvirt', {
      vm: spec.name,
    });
  const caps = parseCapabilities(await host.virshOut(host.virsh.capabilities()));
  const arch = spec.arch ?? (caps.hostArch === 'aarch64' ? 'aarch64' : 'x86_64');
  const node = parseNodeinfo(await host.virshOut(host.virsh.nodeinfo()));
  const nodeMib = Math.floor(node.memoryKib / 1024);
  if (spec.memory > nodeMib) {
    throw new LocalVmError(
      'VALIDATION',
      `${spec.name} asks for ${spec.memory} MiB; ${where(host)} has ${nodeMib} MiB`,
      {
        vm: spec.name,
        issues: [{ property: 'memory', reason: `more than ${where(host)} has (${nodeMib} MiB)` }],
      },
    );
  }
  let localKvm: boolean | undefined;
  // A host on this machine (a local daemon, or ssh to 127.0.0.1) has this machine's KVM: where
  // /dev/kvm opens but hangs guests, its capabilities still offer kvm, and only the probe knows.
  if (runsOnThisMachine(host.target.uri) && caps.guests.get(arch)?.has('kvm') && spec.accel === 'auto') {
    const probe = createKvmProbe({
      runner,
      cacheDir: host.config.cacheDir,
      kernelRelease: release(),
      qemuBinary: `qemu-system-${arch}`,
    });
    localKvm = host.config.accel === 'tcg' ? false : (await probe()).usable;
  }
  const requested = spec.accel === 'auto' && host.config.accel !== 'auto' ? host.config.accel : spec.accel;
  const domainType = chooseDomainType(caps, arch, requested, localKvm, where(host));
  const pool = await observePool(host, false);
  const isoTool = spec.userData !== undefined ? findIsoTool(host.config) : undefined;
  if (spec.userData !== undefined && !isoTool) {
    throw new LocalVmError(
      'TOOL_NOT_FOUND',
      'a cloud-init seed needs xorriso, genisoimage or mkisofs on this machine',
      {
        vm: spec.name,
      },
    );
  }
  const metadata: LocalVmMetadata = {
    fingerprint: specFingerprint(spec),
    owner: `${userInfo().username}@${hostname()}`,
    home: host.home,
    createdAt: new Date().toISOString(),
    labels: spec.labels,
    spec: { ...spec, arch },
  };
  return {
    target: host.target,
    pool: POOL,
    poolPath: pool.path,
    poolActive: pool.active,
    poolDir: poolDirFor(host.target.uri, host.config),
    volumes: pool.volumes,
    domainType,
    boot: await bootSource(spec, host, runner, imagePath),
    metadata,
    isoTool,
  };
}

/** A domain's state (undefined when there is none) and the VM's own volumes. */
export async function observeDomain(host: LibvirtHost, name: string, refresh = false): Promise<DomainObservation> {
  const state = await unlessNotFound(host.domstate(name));
  const pool = await observePool(host, refresh);
  return {
    state: state?.state === 'starting' || state?.state === 'creating' ? 'unknown' : state?.state,
    volumes: volumesOf(name, pool.volumes),
    pool: POOL,
  };
}

/** The VmInfo of domain `name`: NOT_FOUND when there is none or it is not localvm's. */
export async function domainInfo(host: LibvirtHost, name: string): Promise<VmInfo> {
  const meta = await host.metadata(name);
  if (!meta) {
    throw new LocalVmError(
      'NOT_FOUND',
      `domain ${name} on ${where(host)} was not made by localvm from this home (${host.config.stateDir}): localvm leaves it alone`,
      { vm: name },
    );
  }
  const [state, dominfo] = await Promise.all([
    host.domstate(name),
    host.virshOut(host.virsh.dominfo(name), { vm: name }).then(parseDominfo),
  ]);
  return {
    name,
    backend: LIBVIRT_BACKEND,
    host: host.target.host,
    state: state.state,
    reason:
      state.state === 'stopped' && state.reason !== 'shutdown' && state.reason !== 'destroyed'
        ? state.reason
        : undefined,
    ports: meta.spec.ports ?? [],
    image: meta.spec.image,
    arch: meta.spec.arch ?? 'x86_64',
    cpus: dominfo.cpus,
    memory: Math.round(dominfo.maxMemoryKib / 1024),
    labels: meta.labels,
    fingerprint: meta.fingerprint,
    spec: { ...meta.spec, labels: meta.labels },
    createdAt: meta.createdAt || undefined,
  };
}
