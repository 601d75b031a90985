/**
 * Which libvirt daemon a VM lives on. A spec's `connect` wins; otherwise the configured URI
 * (LOCALVM_LIBVIRT_URI, default qemu:///system). `list` and `cleanup` visit every target.
 * This is the seam for many hosts: a hosts list and placement replace these bodies, the
 * interface stays.
 */
import { join } from 'node:path';
import type { LocalVmConfig } from '../../config.js';
import { LocalVmError } from '../../errors.js';
import type { VmSpec } from '../../schema.js';
import { parseLibvirtUri } from './uri.js';

export interface LibvirtTarget {
  /** The host's name, for messages and (later) a HOST column. */
  host: string;
  uri: string;
}

export interface TargetContext {
  config: LocalVmConfig;
}

/** The name of the single target of a one-host setup. */
export const DEFAULT_HOST = 'default';

/** Where `spec` runs. */
export function resolveTarget(spec: Pick<VmSpec, 'connect'>, ctx: TargetContext): LibvirtTarget {
  return { host: DEFAULT_HOST, uri: spec.connect ?? ctx.config.libvirtUri };
}

/** Every daemon VMs may live on, in order. */
export function targets(ctx: TargetContext): LibvirtTarget[] {
  return [{ host: DEFAULT_HOST, uri: ctx.config.libvirtUri }];
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
