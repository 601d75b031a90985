/**
 * The OrbStack backend: every operation is one or two `orbctl` commands built by the pure
 * builders in cmdline.ts, planned in plan.ts and run through the injected CommandRunner. OrbStack keeps
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
} from '../../backend.js';
import { createOrbctl, type OrbctlBuilders } from './cmdline.js';
import type { LocalVmConfig } from '../../config.js';
import { findTool } from '../../host/tools.js';
import { ORBSTACK_BACKEND } from './register.js';
import { LocalVmError, isLocalVmError, unlessNotFound } from '../../errors.js';
import { parseOrbctlInfo, parseOrbctlList, type OrbInfo } from '../../parsers.js';
import type { Command, CommandRunner, RunOptions, RunResult } from '../../runner.js';
import { classifyOrbctlFailure, orbctlRunFailure } from './classify.js';
import { planOrb, USER_DATA_FILE, type OrbStep } from './plan.js';
import { orbMatchesSpec, reportsIp, toVmInfo } from './spec.js';
import type { Plan, PlanRequest } from '../../plan.js';
import { formatMs } from '../../time/format.js';
import { applyMode, type GuestTransport } from '../../transport.js';
import { ENV_NAME_PATTERN } from '../../schema.js';

export interface OrbstackBackendOptions {
  config: LocalVmConfig;
  runner: CommandRunner;
  log?: ((msg: string) => void) | undefined;
  /** The orbctl executable; default: `orbctl` found on `config.searchPath`, else plain `orbctl`. */
  orbctl?: string | undefined;
}

const QUERY_TIMEOUT_MS = 30_000;
const LIFECYCLE_TIMEOUT_MS = 180_000;

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
      if (!ENV_NAME_PATTERN.test(k))
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
      signal: o.signal,
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

  async function putFile(name: string, guestPath: string, content: Uint8Array, o: PutFileOptions = {}): Promise<void> {
    await withTempDir(async (dir) => {
      const file = join(dir, 'upload');
      await writeFile(file, content, { mode: 0o600 });
      await checked(orb.push({ machine: name, local: file, remote: guestPath }), name, {
        timeoutMs: LIFECYCLE_TIMEOUT_MS,
      });
    });
    if (o.mode !== undefined) await applyMode((argv) => exec(name, argv), name, guestPath, o.mode);
  }

  async function getFile(name: string, guestPath: string): Promise<Uint8Array> {
    return withTempDir(async (dir) => {
      const file = join(dir, 'download');
      await checked(orb.pull({ machine: name, remote: guestPath, local: file }), name, {
        timeoutMs: LIFECYCLE_TIMEOUT_MS,
      });
      return new Uint8Array(await readFile(file));
    });
  }

  async function probe(name: string, timeoutMs: number): Promise<ProbeResult> {
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
    const why = r.timedOut
      ? `timed out after ${formatMs(timeoutMs)}`
      : `exit ${r.exitCode}: ${r.stderr.trim().slice(-200)}`;
    return { ready: false, detail: `state running, \`orbctl run true\` ${why}` };
  }

  async function current(name: string): Promise<VmInfo | undefined> {
    return unlessNotFound(info(name));
  }

  async function plan(request: PlanRequest): Promise<Plan<OrbStep>> {
    return planOrb(orb, request, request.operation === 'create' ? undefined : await current(request.name));
  }

  /** Runs a planned step: user-data goes to a private temp file; a graceful step that fails falls back. */
  async function applyStep(step: OrbStep, vm: string): Promise<void> {
    const command = step.command;
    if (!command) return;
    const runOptions = step.run?.timeoutMs !== undefined ? { timeoutMs: step.run.timeoutMs } : {};
    if (step.run?.graceful) {
      const result = await run(command, runOptions);
      if (result.exitCode === 0 && !result.timedOut) return;
      const error = classifyOrbctlFailure(result);
      if (error.code === 'NOT_FOUND')
        throw new LocalVmError('NOT_FOUND', error.message, { vm, command: error.command });
      log(`${step.summary} failed (${error.code}); falling back`);
      for (const fallback of step.otherwise ?? []) await applyStep(fallback, vm);
      return;
    }
    const userData = step.run?.userData;
    if (userData === undefined) {
      await checked(command, vm, runOptions);
      return;
    }
    await withTempDir(async (dir) => {
      // user-data often carries keys and passwords: only the owner may read it.
      const file = join(dir, 'user-data');
      await writeFile(file, userData, { mode: 0o600 });
      await checked({ ...command, args: command.args.map((a) => (a === USER_DATA_FILE ? file : a)) }, vm, runOptions);
    });
  }

  async function apply(request: PlanRequest & { name: string }): Promise<void> {
    for (const step of planOrb(orb, request, 'unobserved').steps) await applyStep(step, request.name);
  }

  const guest = (name: string): GuestTransport => ({
    kind: 'orbctl',
    exec: (argv, o) => exec(name, argv, o),
    putFile: (path, content, o) => putFile(name, path, content, o),
    getFile: (path) => getFile(name, path),
    probe: (timeoutMs) => probe(name, timeoutMs),
  });

  const backend: Backend = {
    name: ORBSTACK_BACKEND,
    plan,
    guest,

    matchesSpec: orbMatchesSpec,

    async create(spec) {
      for (const step of planOrb(orb, { operation: 'create', spec }, undefined).steps) await applyStep(step, spec.name);
      return info(spec.name);
    },

    async start(name) {
      await apply({ operation: 'start', name });
      return info(name);
    },

    async stop(name, o: StopOptions = {}) {
      await apply({ operation: 'stop', name, force: o.force, timeoutMs: o.timeoutMs });
      return info(name);
    },

    async restart(name) {
      await apply({ operation: 'restart', name });
      return info(name);
    },

    async delete(name) {
      try {
        await apply({ operation: 'delete', name });
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
  };
  return backend;
}
