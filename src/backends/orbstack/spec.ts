/**
 * How a localvm spec maps onto OrbStack, and how OrbStack's records map back. Pure: the
 * backend runs `orbctl`; this only translates.
 */
import type { VmInfo, VmState } from '../../backend.js';
import { LocalVmError } from '../../errors.js';
import { archFromAlias, debianArch } from '../../host/arch.js';
import type { OrbInfo, OrbMachine } from '../../parsers.js';
import type { VmSpec } from '../../schema.js';
import type { OrbArch } from './cmdline.js';
import { ORBSTACK_BACKEND, ORB_IMAGE_PATTERN } from './register.js';

// Spec defaults that mean "not asked for": OrbStack machines share the host's CPUs and
// memory by default, so the schema's QEMU-sized defaults (1 CPU, 256 MiB) must not become limits.
const DEFAULT_CPUS = 1;
const DEFAULT_MEMORY_MIB = 256;

/** What `orbctl create` and the follow-up config calls need, derived from a spec. */
export interface OrbCreatePlan {
  distro: string;
  version?: string | undefined;
  arch?: OrbArch | undefined;
  user?: string | undefined;
  cpus?: number | undefined;
  memoryMib?: number | undefined;
  diskBytes?: number | undefined;
}

const IMAGE_HINT = 'OrbStack machines are made from a distro image such as ubuntu:noble, debian:bookworm or alpine';

function unsupported(what: string): LocalVmError {
  return new LocalVmError('UNSUPPORTED', `the orbstack backend does not support ${what}`, {
    hint: 'use the qemu backend for this spec',
  });
}

/** `distro[:version]` → parts, or undefined when `image` is not of that form. Pure. */
export function parseOrbImage(image: string): { distro: string; version?: string | undefined } | undefined {
  const m = ORB_IMAGE_PATTERN.exec(image);
  if (!m) return undefined;
  return { distro: m[1] as string, version: m[2] };
}

/**
 * Maps a validated spec onto OrbStack. Pure. Throws VALIDATION for an image OrbStack cannot
 * use (`tiny`, a disk image path) and UNSUPPORTED for spec features it lacks, never
 * ignoring them silently.
 */
export function orbCreatePlan(spec: VmSpec): OrbCreatePlan {
  const image = parseOrbImage(spec.image);
  if (!image) {
    throw new LocalVmError('VALIDATION', `image "${spec.image}" is not an OrbStack distro image`, {
      vm: spec.name,
      hint: `${IMAGE_HINT}; "tiny" and disk image files need the qemu backend`,
      issues: [{ property: 'image', reason: 'must be distro[:version], e.g. ubuntu:noble' }],
    });
  }
  if (image.distro === 'tiny') {
    throw new LocalVmError('VALIDATION', 'the "tiny" image is built for QEMU and cannot run on OrbStack', {
      vm: spec.name,
      hint: `${IMAGE_HINT}, or use --backend qemu`,
      issues: [{ property: 'image', reason: 'must be distro[:version], e.g. ubuntu:noble' }],
    });
  }
  if (spec.kernel || spec.initrd || spec.append) throw unsupported('direct kernel boot (kernel/initrd/append)');
  if (spec.disks.length > 0) throw unsupported('extra disks');
  if (spec.isolated) throw unsupported('isolated networking (orbctl create --isolated is version-dependent)');
  if (spec.accel !== 'auto') throw unsupported(`accel "${spec.accel}"`);
  for (const p of spec.ports) {
    // OrbStack forwards every machine port to the same port on localhost by itself.
    if (p.host !== p.guest || p.bind !== '127.0.0.1') {
      throw unsupported(
        `port ${p.bind}:${p.host}->${p.guest} (only same-port forwards on 127.0.0.1, which OrbStack makes itself)`,
      );
    }
  }
  return {
    distro: image.distro,
    version: image.version,
    arch: spec.arch ? debianArch(spec.arch) : undefined,
    user: spec.user,
    cpus: spec.cpus !== DEFAULT_CPUS ? spec.cpus : undefined,
    memoryMib: spec.memory !== DEFAULT_MEMORY_MIB ? spec.memory : undefined,
    diskBytes: spec.diskSize,
  };
}

// Ubuntu and Debian accept both a release number and a codename; a machine created as
// `ubuntu:24.04` may report `noble`, so adoption treats the two as the same.
const VERSION_ALIASES: Record<string, Record<string, string>> = {
  ubuntu: { '20.04': 'focal', '22.04': 'jammy', '24.04': 'noble', '24.10': 'oracular', '25.04': 'plucky' },
  debian: { '11': 'bullseye', '12': 'bookworm', '13': 'trixie' },
};

function canonicalVersion(distro: string, version: string): string {
  return VERSION_ALIASES[distro]?.[version] ?? version;
}

// The raw record behind each VmInfo this backend returned, for adoption checks that need
// facts VmInfo has no field for (the default user). A WeakMap keeps VmInfo plain data.
const rawRecords = new WeakMap<VmInfo, OrbMachine>();

/**
 * True when an existing OrbStack machine can stand for `spec` (adoption after a create that
 * hung or was retried): same distro, same version when the spec names one, same arch and
 * default user when the spec sets them. CPU and memory limits are not compared: reading them
 * back is version-dependent.
 */
export function orbMatchesSpec(info: VmInfo, spec: VmSpec): boolean {
  if (info.backend !== ORBSTACK_BACKEND) return false;
  const want = parseOrbImage(spec.image);
  const have = parseOrbImage(info.image);
  if (!want || !have || want.distro !== have.distro) return false;
  if (want.version !== undefined) {
    if (have.version === undefined) return false;
    if (canonicalVersion(want.distro, want.version) !== canonicalVersion(have.distro, have.version)) return false;
  }
  if (spec.arch !== undefined && spec.arch !== info.arch) return false;
  const record = rawRecords.get(info);
  // An isolated machine cannot stand for a spec that expects the usual host access.
  if (record?.config.isolated === true && !spec.isolated) return false;
  if (spec.user !== undefined) {
    if (record?.config.default_username !== undefined && record.config.default_username !== spec.user) return false;
  }
  return true;
}

function vmState(state: string): VmState {
  switch (state) {
    case 'running':
    case 'stopped':
    case 'starting':
    case 'stopping':
    case 'creating':
      return state;
    default:
      return 'unknown';
  }
}

export function toVmInfo(record: OrbMachine, ip4?: string): VmInfo {
  const info: VmInfo = {
    name: record.name,
    backend: ORBSTACK_BACKEND,
    state: vmState(record.state),
    ip4: ip4 || undefined,
    // OrbStack forwards machine ports itself; there is no forward list to report.
    ports: [],
    image: record.image.version ? `${record.image.distro}:${record.image.version}` : record.image.distro,
    arch: archFromAlias(record.image.arch),
    // 0 = not limited per machine (OrbStack's own convention); limits are not in the record.
    cpus: 0,
    memory: 0,
    labels: {},
  };
  rawRecords.set(info, record);
  return info;
}

// Some orbctl versions print the bare record for `info -f json`, without `ip4` or
// `disk_size`; then the IP is unknown rather than missing, and readiness rests on `run true`.
export function reportsIp(info: OrbInfo): boolean {
  return info.ip4 !== undefined || info.diskSize !== undefined;
}
