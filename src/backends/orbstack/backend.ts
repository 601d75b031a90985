/**
 * The OrbStack backend: every operation is one or two `orbctl` commands built by the pure
 * builders in commandBuilder.ts and run through the injected CommandRunner. OrbStack keeps
 * all machine state itself, so this backend keeps none: `orbctl list/info -f json` is the
 * truth, read on every call.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type {
  Backend,
  ExecOptions,
  ExecResult,
  ProbeResult,
  PutFileOptions,
  StopOptions,
  VmInfo,
  VmState,
} from '../../backend.js';
import { createOrbctl, type OrbArch, type OrbctlBuilders } from './cmdline.js';
import type { LocalVmConfig } from '../../config.js';
import { findTool } from '../../host/tools.js';
import { ORBSTACK_BACKEND, ORB_IMAGE_PATTERN } from './register.js';
import { LocalVmError, isLocalVmError } from '../../errors.js';
import { parseOrbctlInfo, parseOrbctlList, type OrbInfo, type OrbMachine } from '../../parsers.js';
import type { Command, CommandRunner, RunOptions, RunResult } from '../../runner.js';
import type { VmSpec } from '../../schema.js';
import { classifyOrbctlFailure, orbctlRunFailure } from './classify.js';

export interface OrbstackBackendOptions {
  config: LocalVmConfig;
  runner: CommandRunner;
  log?: ((msg: string) => void) | undefined;
  /** The orbctl executable; default: `orbctl` found on `config.searchPath`, else plain `orbctl`. */
  orbctl?: string | undefined;
}

// Spec defaults that mean "not asked for": OrbStack machines share the host's CPUs and
// memory by default, so the schema's QEMU-sized defaults (1 CPU, 256 MiB) must not become limits.
const DEFAULT_CPUS = 1;
const DEFAULT_MEMORY_MIB = 256;

const QUERY_TIMEOUT_MS = 30_000;
const LIFECYCLE_TIMEOUT_MS = 180_000;
const DEFAULT_STOP_TIMEOUT_MS = 15_000;

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
    arch: spec.arch === 'x86_64' ? 'amd64' : spec.arch === 'aarch64' ? 'arm64' : undefined,
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

function archName(arch: string): string {
  return arch === 'amd64' ? 'x86_64' : arch === 'arm64' ? 'aarch64' : arch;
}

function toVmInfo(record: OrbMachine, ip4?: string): VmInfo {
  const info: VmInfo = {
    name: record.name,
    backend: ORBSTACK_BACKEND,
    state: vmState(record.state),
    ip4: ip4 || undefined,
    // OrbStack forwards machine ports itself; there is no forward list to report.
    ports: [],
    image: record.image.version ? `${record.image.distro}:${record.image.version}` : record.image.distro,
    arch: archName(record.image.arch),
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
function reportsIp(info: OrbInfo): boolean {
  return info.ip4 !== undefined || info.diskSize !== undefined;
}

/** The OrbStack backend over `orbctl`. Keeps no state of its own. */
export function createOrbstackBackend(options: OrbstackBackendOptions): Backend {
  const { config, runner } = options;
  const log = options.log ?? (() => {});
  const orb: OrbctlBuilders = createOrbctl(options.orbctl ?? findTool(config, 'orbctl') ?? 'orbctl');

  async function run(cmd: Command, runOptions: RunOptions = {}): Promise<RunResult> {
    log(`orbctl ${cmd.args.join(' ')}`);
    return runner.run(cmd, { timeoutMs: QUERY_TIMEOUT_MS, ...runOptions });
  }

  /** Runs `cmd`; throws the classified error unless it exits 0. */
  async function checked(cmd: Command, vm: string | undefined, runOptions?: RunOptions): Promise<RunResult> {
    const result = await run(cmd, runOptions);
    if (result.exitCode === 0 && !result.timedOut) return result;
    const error = classifyOrbctlFailure(result);
    throw vm === undefined
      ? error
      : new LocalVmError(error.code, error.message, {
          vm,
          command: error.command,
          transient: error.transient,
          hint: error.hint,
        });
  }

  async function rawInfo(name: string): Promise<OrbInfo> {
    const result = await checked(orb.info(name), name);
    try {
      return parseOrbctlInfo(result.stdout);
    } catch (error) {
      if (isLocalVmError(error)) throw error;
      throw new LocalVmError('PROTOCOL', `could not parse orbctl info output: ${(error as Error).message}`, {
        vm: name,
        cause: error,
      });
    }
  }

  async function info(name: string): Promise<VmInfo> {
    const raw = await rawInfo(name);
    return toVmInfo(raw.record, raw.ip4);
  }

  async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
    const dir = await mkdtemp(join(tmpdir(), 'localvm-orb-'));
    try {
      return await fn(dir);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  async function exec(name: string, argv: string[], o: ExecOptions = {}): Promise<ExecResult> {
    // orbctl run has no --env flag: `env K=V... argv` sets variables without any shell.
    const env = Object.entries(o.env ?? {});
    for (const [k] of env) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k))
        throw new LocalVmError('VALIDATION', `invalid environment variable name "${k}"`, { vm: name });
    }
    // `env` would read a program name containing "=" as one more assignment.
    if (env.length && argv[0]?.includes('='))
      throw new LocalVmError('VALIDATION', `program name "${argv[0]}" must not contain "=" when env is set`, {
        vm: name,
      });
    const full = env.length ? ['env', ...env.map(([k, v]) => `${k}=${v}`), ...argv] : argv;
    const result = await run(orb.run({ machine: name, argv: full, user: o.user, workdir: o.cwd }), {
      timeoutMs: o.timeoutMs ?? 60_000,
      input: o.stdin,
    });
    const failure = orbctlRunFailure(result, name);
    if (failure) {
      throw new LocalVmError(failure.code, failure.message, {
        vm: name,
        command: failure.command,
        transient: failure.transient,
        hint: failure.hint,
      });
    }
    return {
      exitCode: result.exitCode,
      stdout: result.stdout,
      stderr: result.stderr,
      // The runner decodes output as UTF-8; binary output survives only through getFile.
      stdoutBytes: Buffer.from(result.stdout, 'utf8'),
      stderrBytes: Buffer.from(result.stderr, 'utf8'),
      signal: result.signal,
      durationMs: result.durationMs,
    };
  }

  const backend: Backend = {
    name: ORBSTACK_BACKEND,

    matchesSpec: orbMatchesSpec,

    async create(spec) {
      const plan = orbCreatePlan(spec);
      const image = plan.version ? `${plan.distro}:${plan.version}` : plan.distro;
      const createOne = async (userDataFile?: string) =>
        checked(orb.create({ image, name: spec.name, arch: plan.arch, user: plan.user, userDataFile }), spec.name, {
          timeoutMs: spec.timeouts.createMs,
        });
      if (spec.userData !== undefined) {
        const userData = spec.userData;
        await withTempDir(async (dir) => {
          // user-data often carries keys and passwords: only the owner may read it.
          const file = join(dir, 'user-data');
          await writeFile(file, userData, { mode: 0o600 });
          await createOne(file);
        });
      } else {
        await createOne();
      }
      // Per-machine limits through `orbctl config set machine.NAME.KEY` are version-dependent
      // (older releases only have global limits); a release without them fails here loudly.
      if (plan.cpus !== undefined) await checked(orb.configSet(spec.name, 'cpu', plan.cpus), spec.name);
      if (plan.memoryMib !== undefined)
        await checked(orb.configSet(spec.name, 'memory_mib', plan.memoryMib), spec.name);
      if (plan.diskBytes !== undefined)
        await checked(orb.configSet(spec.name, 'disk_bytes', plan.diskBytes), spec.name);
      return info(spec.name);
    },

    async start(name) {
      await checked(orb.start(name), name, { timeoutMs: LIFECYCLE_TIMEOUT_MS });
      return info(name);
    },

    async stop(name, o: StopOptions = {}) {
      if (!o.force) {
        const graceful = await run(orb.stop(name), { timeoutMs: o.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS });
        if (graceful.exitCode === 0 && !graceful.timedOut) return info(name);
        const error = classifyOrbctlFailure(graceful);
        if (error.code === 'NOT_FOUND')
          throw new LocalVmError('NOT_FOUND', error.message, { vm: name, command: error.command });
        log(`graceful stop of ${name} failed (${error.code}); forcing`);
      }
      await checked(orb.stop(name, { force: true }), name, { timeoutMs: LIFECYCLE_TIMEOUT_MS });
      return info(name);
    },

    async restart(name) {
      await checked(orb.restart(name), name, { timeoutMs: LIFECYCLE_TIMEOUT_MS });
      return info(name);
    },

    async delete(name) {
      try {
        await checked(orb.delete(name, { force: true }), name, { timeoutMs: LIFECYCLE_TIMEOUT_MS });
      } catch (error) {
        if (isLocalVmError(error, 'NOT_FOUND')) return;
        throw error;
      }
    },

    async list() {
      const result = await checked(orb.list(), undefined);
      return parseOrbctlList(result.stdout).map((m) => toVmInfo(m));
    },

    info,
    exec,

    async putFile(name, guestPath, content, o: PutFileOptions = {}) {
      await withTempDir(async (dir) => {
        const file = join(dir, 'upload');
        await writeFile(file, content, { mode: 0o600 });
        await checked(orb.push({ machine: name, local: file, remote: guestPath }), name, {
          timeoutMs: LIFECYCLE_TIMEOUT_MS,
        });
      });
      if (o.mode !== undefined) {
        const r = await exec(name, ['chmod', (o.mode & 0o7777).toString(8).padStart(4, '0'), '--', guestPath]);
        if (r.exitCode !== 0) {
          throw new LocalVmError('COMMAND_FAILED', `chmod of ${guestPath} in ${name} failed: ${r.stderr.trim()}`, {
            vm: name,
          });
        }
      }
    },

    async getFile(name, guestPath) {
      return withTempDir(async (dir) => {
        const file = join(dir, 'download');
        await checked(orb.pull({ machine: name, remote: guestPath, local: file }), name, {
          timeoutMs: LIFECYCLE_TIMEOUT_MS,
        });
        return new Uint8Array(await readFile(file));
      });
    },

    async probe(name, timeoutMs): Promise<ProbeResult> {
      let raw: OrbInfo;
      try {
        raw = await rawInfo(name);
      } catch (error) {
        if (isLocalVmError(error) && error.transient)
          return { ready: false, detail: `orbctl info failed: ${error.message}` };
        throw error;
      }
      const state = raw.record.state;
      if (state !== 'running') return { ready: false, detail: `state ${state}` };
      if (reportsIp(raw) && !raw.ip4) return { ready: false, detail: 'state running, no ip4 yet' };
      const r = await run(orb.run({ machine: name, argv: ['true'] }), { timeoutMs });
      if (r.exitCode === 0 && !r.timedOut)
        return { ready: true, detail: `state running, ip4 ${raw.ip4 ?? 'not reported'}` };
      const why = r.timedOut ? `timed out after ${timeoutMs} ms` : `exit ${r.exitCode}: ${r.stderr.trim().slice(-200)}`;
      return { ready: false, detail: `state running, \`orbctl run true\` ${why}` };
    },
  };
  return backend;
}
