/**
 * Operations over backends with many hosts (libvirt): listing every host, with the hosts that
 * did not answer reported beside the VMs of those that did, and acting on a VM on the host a
 * listing found it on.
 */
import type { Backend, VmInfo } from '../backend.js';
import { availableBackends, getBackend, withDefaults, type OperationContext } from '../context.js';
import type { LocalVmError } from '../errors.js';

/** A host that did not answer, with its error (which names it). */
export interface UnreachableHost {
  backend: string;
  host: string;
  uri: string;
  error: LocalVmError;
}

export interface VmListing {
  /** The VMs of every backend and every host that answered, sorted by name (then host). */
  vms: VmInfo[];
  unreachable: UnreachableHost[];
}

/** One backend's VMs, host by host when it has hosts; a host that is down goes to `unreachable`. */
export async function listBackend(backend: Backend): Promise<VmListing> {
  if (!backend.listByHost) return { vms: await backend.list(), unreachable: [] };
  const vms: VmInfo[] = [];
  const unreachable: UnreachableHost[] = [];
  for (const r of await backend.listByHost()) {
    if (r.ok) vms.push(...r.value.map((vm) => ({ ...vm, host: vm.host ?? r.host })));
    else unreachable.push({ backend: backend.name, host: r.host, uri: r.uri, error: r.error });
  }
  return { vms, unreachable };
}

/**
 * Every VM of every available backend and host, and the hosts that did not answer. Never
 * fails because one host is down: that host is in `unreachable` with its error.
 */
export async function listVmsByHost(ctx?: Partial<OperationContext>): Promise<VmListing> {
  const c = withDefaults(ctx);
  const listings = await Promise.all((await availableBackends(c)).map((b) => listBackend(b)));
  return {
    vms: listings
      .flatMap((l) => l.vms)
      .sort((a, b) => a.name.localeCompare(b.name) || (a.host ?? '').localeCompare(b.host ?? '')),
    unreachable: listings.flatMap((l) => l.unreachable),
  };
}

/**
 * The backend that acts on `vm` where a listing found it: for a VM on a named host, the
 * backend narrowed to that host (as `--host` does), so two hosts' VMs of one name stay apart.
 */
export async function backendFor(vm: VmInfo, backend: Backend, ctx: OperationContext): Promise<Backend> {
  if (vm.host === undefined || ctx.config.libvirtConnect || ctx.config.libvirtHost === vm.host) return backend;
  if (ctx.backends?.[backend.name]) return backend;
  return getBackend(backend.name, { ...ctx, config: narrowed(ctx, vm.host) });
}

// One narrowed config per (config, host), so the backend instance cache (keyed by config) is reused.
const narrowedConfigs = new WeakMap<OperationContext['config'], Map<string, OperationContext['config']>>();

function narrowed(ctx: OperationContext, host: string): OperationContext['config'] {
  let byHost = narrowedConfigs.get(ctx.config);
  if (!byHost) narrowedConfigs.set(ctx.config, (byHost = new Map()));
  let config = byHost.get(host);
  if (!config) byHost.set(host, (config = { ...ctx.config, libvirtHost: host }));
  return config;
}
