/**
 * One libvirt daemon as the backend talks to it: its URI's virsh builders, runs through the
 * injected runner with errors classified and named by URI, private temp files for XML, and
 * the few reads every operation needs (state, metadata, pool path).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LocalVmConfig } from '../../config.js';
import { isLocalVmError } from '../../errors.js';
import { findTool } from '../../host/tools.js';
import type { Command, CommandRunner, RunResult } from '../../runner.js';
import { realClock, type Clock } from '../../time/clock.js';
import { classifyVirshFailure } from './classify.js';
import { homeId, LOCALVM_NS, parseMetadata, type LocalVmMetadata } from './metadata.js';
import { parseDomstate } from './parse.js';
import type { LibvirtTarget } from './target.js';
import { createVirsh, type VirshBuilders } from './virsh.js';

export interface VirshRunOptions {
  vm?: string | undefined;
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
  /** For logs. */
  what?: string | undefined;
}

export interface LibvirtHost {
  readonly config: LocalVmConfig;
  readonly target: LibvirtTarget;
  readonly virsh: VirshBuilders;
  readonly log: (msg: string) => void;
  /** Runs `cmd`; resolves whatever the exit code. */
  run(cmd: Command, options?: VirshRunOptions): Promise<RunResult>;
  /** Runs `cmd`; its stdout, or the classified error (naming the URI) unless it exits 0. */
  virshOut(cmd: Command, options?: VirshRunOptions): Promise<string>;
  domstate(name: string): Promise<ReturnType<typeof parseDomstate>>;
  readonly clock: Clock;
  /** This home's id in the metadata of the VMs it makes (homeId). */
  readonly home: string;
  /**
   * localvm's metadata of `name`; undefined when the domain is not this home's (not made by
   * localvm, or by another home); NOT_FOUND when there is none.
   */
  metadata(name: string): Promise<LocalVmMetadata | undefined>;
  /** Runs `fn` with `content` in a private temporary file (XML for define, attach-device, vol-create). */
  withFile<T>(content: string | Uint8Array, fn: (file: string) => Promise<T>): Promise<T>;
}

/** How long one virsh query may take; uploads and lifecycle steps pass their own. */
export const VIRSH_TIMEOUT_MS = 60_000;

export function createLibvirtHost(o: {
  config: LocalVmConfig;
  runner: CommandRunner;
  target: LibvirtTarget;
  log?: ((msg: string) => void) | undefined;
  clock?: Clock | undefined;
}): LibvirtHost {
  const virsh = createVirsh(o.target.uri, findTool(o.config, 'virsh') ?? 'virsh');
  const log = o.log ?? (() => {});
  const run = (cmd: Command, r: VirshRunOptions = {}) => {
    log(`virsh ${cmd.args.join(' ').slice(0, 300)}`);
    return o.runner.run(cmd, { timeoutMs: r.timeoutMs ?? VIRSH_TIMEOUT_MS, signal: r.signal });
  };
  const host: LibvirtHost = {
    config: o.config,
    clock: o.clock ?? realClock,
    home: homeId(hostname(), o.config.stateDir),
    target: o.target,
    virsh,
    log,
    run,
    async virshOut(cmd, r = {}) {
      const result = await run(cmd, r);
      if (result.exitCode === 0 && !result.timedOut) return result.stdout;
      throw classifyVirshFailure(result, o.target.uri, r.vm);
    },
    async domstate(name) {
      return parseDomstate(await host.virshOut(virsh.domstate(name), { vm: name }));
    },
    async metadata(name) {
      try {
        const meta = parseMetadata(await host.virshOut(virsh.metadata(name, LOCALVM_NS), { vm: name }));
        return meta?.home === host.home ? meta : undefined;
      } catch (error) {
        // "metadata not found" is a domain that is not localvm's; a missing domain stays NOT_FOUND.
        if (isLocalVmError(error) && /metadata not found/i.test(error.command?.stderrTail ?? '')) return undefined;
        throw error;
      }
    },
    async withFile(content, fn) {
      const dir = await mkdtemp(join(tmpdir(), 'localvm-virsh-'));
      try {
        const file = join(dir, 'input');
        await writeFile(file, content, { mode: 0o600 });
        return await fn(file);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
  return host;
}
