/**
 * Which libvirt daemon a VM lives on: the spec's `connect` URI, its `host` (a name from the
 * hosts list, or `auto`), else the first host (src/hosts/targets.ts). Without a hosts file
 * there is one host, `local`, at LOCALVM_LIBVIRT_URI (default qemu:///system). `list` and
 * `cleanup` visit every target; `--host`/`--connect` narrow them to one.
 */
import { join } from 'node:path';
import type { LocalVmConfig } from '../../config.js';
import { LocalVmError } from '../../errors.js';
import { DEFAULT_HOST as HOSTS_DEFAULT } from '../../hosts/config.js';
import { fanOut } from '../../hosts/fanout.js';
import { HOST_QUERY_MS, hostOf, hostsConfigured, hostTargets, resolveHostTarget } from '../../hosts/targets.js';
import type { CommandRunner } from '../../runner.js';
import type { VmSpec } from '../../schema.js';
import { parseLibvirtUri } from './uri.js';

export interface LibvirtTarget {
  /** The host's name, for messages and (later) a HOST column. */
  host: string;
  uri: string;
}

export interface TargetContext {
  config: LocalVmConfig;
  runner: CommandRunner;
}

/** The name of the single target of a one-host setup (no hosts file). */
export const DEFAULT_HOST = HOSTS_DEFAULT;

/** Where `spec` runs (`auto` asks every host for its free memory). */
export function resolveTarget(
  spec: Pick<VmSpec, 'connect' | 'host' | 'memory'>,
  ctx: TargetContext,
): Promise<LibvirtTarget> {
  return resolveHostTarget(spec, { ...ctx, defaultUri: ctx.config.libvirtUri });
}

/**
 * The target holding VM `name` (`has` asks one target), every target asked at once; see
 * hostOf for NOT_FOUND, CONFLICT and targets that do not answer.
 */
export async function locateTarget(
  name: string,
  ctx: TargetContext,
  has: (t: LibvirtTarget) => Promise<boolean>,
): Promise<LibvirtTarget> {
  const hctx = { ...ctx, defaultUri: ctx.config.libvirtUri };
  const results = await fanOut(await hostTargets(hctx), has, { timeoutMs: HOST_QUERY_MS });
  return hostOf(name, results, { downIsAbsent: !(await hostsConfigured(hctx)) });
}

/** Every daemon VMs may live on, in order. */
export function targets(ctx: TargetContext): Promise<LibvirtTarget[]> {
  return hostTargets({ ...ctx, defaultUri: ctx.config.libvirtUri });
}

/** The storage pool every localvm volume lives in, on every host. */
export const POOL = 'localvm';

/**
 * The directory of the `localvm` pool when it has to be created on the host of `uri`: the
 * system daemon's image directory, or under the session user's home (this user's state
 * directory for a local session daemon).
 */
export function poolDirFor(uri: string, config: Pick<LocalVmConfig, 'stateDir'>): string {
  const u = parseLibvirtUri(uri);
  if ('problem' in u) throw new LocalVmError('VALIDATION', `invalid libvirt URI ${uri}: ${u.problem}`);
  if (u.daemon === 'system') return '/var/lib/libvirt/images/localvm';
  if (u.transport === 'local') return join(config.stateDir, 'libvirt', 'pool');
  const home = u.user === undefined || u.user === 'root' ? '/root' : `/home/${u.user}`;
  return `${home}/.local/share/libvirt/images/localvm`;
}
