/**
 * Which libvirt hosts an operation talks to. A create goes to the spec's `connect` URI, its
 * `host` (a name from the hosts list, or `auto`), or else the first host; list and cleanup ask
 * every host; an operation on a VM by name finds the one host that has it. `--host NAME` and
 * `--connect URI` (config `libvirtHost`/`libvirtConnect`) narrow all of it to one host.
 */
import type { LocalVmConfig } from '../config.js';
import { LocalVmError } from '../errors.js';
import { runChecked, type CommandRunner } from '../runner.js';
import { libvirtUriSchema, parseOrThrow } from '../schema.js';
import type { Clock } from '../time/clock.js';
import { findHost, loadHosts, type HostsList } from './config.js';
import { fanOut, unanswered, type HostRef, type HostResult } from './fanout.js';
import { parseFreecell } from '../backends/libvirt/parse.js';
import { chooseHost } from './placement.js';

export type { HostRef } from './fanout.js';

export interface HostsContext {
  config: LocalVmConfig;
  runner: CommandRunner;
  /** The URI of the `local` host when there is no hosts file (LOCALVM_LIBVIRT_URI, qemu:///system). */
  defaultUri: string;
  clock?: Clock | undefined;
}

/** What placement reads of a spec. */
export interface TargetRequest {
  host?: string | undefined;
  connect?: string | undefined;
  /** MiB the VM needs (for `auto`). */
  memory: number;
}

/** How long one host may take to answer a placement or lookup question (an SSH handshake included). */
export const HOST_QUERY_MS = 30_000;

async function hostsList(ctx: HostsContext): Promise<HostsList> {
  return loadHosts(ctx.config, ctx.defaultUri);
}

/** A URI given directly: named after the configured host with that URI, else after the URI itself. */
async function direct(uri: string, ctx: HostsContext): Promise<HostRef> {
  parseOrThrow(libvirtUriSchema, uri, 'libvirt connection URI');
  const list = await hostsList(ctx).catch(() => undefined);
  const named = list?.hosts.find((h) => h.uri === uri);
  return { host: named?.name ?? uri, uri };
}

/** The hosts list operations go through: every configured host, or the one `--host`/`--connect` names. */
export async function hostTargets(ctx: HostsContext): Promise<HostRef[]> {
  if (ctx.config.libvirtConnect) return [await direct(ctx.config.libvirtConnect, ctx)];
  const list = await hostsList(ctx);
  if (ctx.config.libvirtHost) {
    const h = findHost(list, ctx.config.libvirtHost);
    return [{ host: h.name, uri: h.uri }];
  }
  return list.hosts.map((h) => ({ host: h.name, uri: h.uri }));
}

/** `virsh -c URI freecell`: the host's free memory in bytes (COMMAND_FAILED with virsh's stderr when it does not answer). */
export async function freeMemory(t: HostRef, runner: CommandRunner, signal?: AbortSignal): Promise<number> {
  const r = await runChecked(runner, { file: 'virsh', args: ['-c', t.uri, 'freecell'] }, { signal });
  if (!/\d+\s*KiB/.test(r.stdout))
    throw new LocalVmError('PROTOCOL', `virsh freecell printed no free memory: ${r.stdout.slice(0, 200)}`);
  return parseFreecell(r.stdout) * 1024;
}

/**
 * The host a new VM goes to. VALIDATION for an unknown host name (naming the known ones), for
 * `host` and `connect` given together, and for a bad URI; UNSUPPORTED when `auto` finds no
 * answering host with the memory free.
 */
export async function resolveHostTarget(req: TargetRequest, ctx: HostsContext): Promise<HostRef> {
  if (req.connect !== undefined && req.host !== undefined) {
    const reason = 'give host (a name from the hosts list) or connect (a URI), not both';
    throw new LocalVmError('VALIDATION', `invalid VM spec: ${reason}`, { issues: [{ property: 'host', reason }] });
  }
  if (req.connect !== undefined) return direct(req.connect, ctx);
  const candidates = await hostTargets(ctx);
  if (req.host === undefined || req.host === 'auto') {
    if (req.host === undefined || candidates.length === 1) return firstOf(candidates);
    const results = await fanOut(candidates, (t, signal) => freeMemory(t, ctx.runner, signal), {
      timeoutMs: HOST_QUERY_MS,
      clock: ctx.clock,
    });
    const chosen = chooseHost(
      results.map((r) => (r.ok ? { host: r.host, freeBytes: r.value } : { host: r.host, error: r.error.message })),
      req.memory,
    );
    return firstOf(candidates.filter((c) => c.host === chosen));
  }
  const h = findHost(await hostsList(ctx), req.host);
  if (ctx.config.libvirtHost && ctx.config.libvirtHost !== h.name) {
    const reason = `the spec says host ${h.name} but --host says ${ctx.config.libvirtHost}`;
    throw new LocalVmError('VALIDATION', `invalid VM spec: ${reason}`, { issues: [{ property: 'host', reason }] });
  }
  return { host: h.name, uri: h.uri };
}

function firstOf(targets: HostRef[]): HostRef {
  const first = targets[0];
  if (!first) throw new LocalVmError('VALIDATION', 'no libvirt hosts are configured');
  return first;
}

/**
 * Whether the hosts were asked for (a hosts file, `--host`, `--connect`) rather than the one
 * implicit default host. A configured host that does not answer is an error; the implicit
 * default not answering (no libvirtd on this machine) just means it holds no VMs.
 */
export async function hostsConfigured(ctx: HostsContext): Promise<boolean> {
  if (ctx.config.libvirtConnect || ctx.config.libvirtHost) return true;
  return (await hostsList(ctx).catch(() => ({ source: ctx.config.hostsFile }))).source !== undefined;
}

/**
 * The one host of `results` (each host's answer to "do you have VM `name`?") that has it.
 * NOT_FOUND when every host answered no; CONFLICT naming the hosts when several have it
 * (`--host` picks one); when it is on none of the hosts that answered but some did not, the
 * first such host's error, naming it: the VM may be there — unless `downIsAbsent` (the
 * implicit default host), when it is NOT_FOUND whose hint says which host did not answer. Pure.
 */
export function hostOf(
  name: string,
  results: readonly HostResult<boolean>[],
  options: { downIsAbsent?: boolean } = {},
): HostRef {
  const having = results.filter((r) => r.ok && r.value);
  if (having.length === 1) return { host: having[0]!.host, uri: having[0]!.uri };
  if (having.length > 1) {
    const hosts = having.map((r) => r.host).join(', ');
    throw new LocalVmError('CONFLICT', `VM ${name} exists on several hosts: ${hosts}`, {
      vm: name,
      hint: `say which with --host (one of ${hosts})`,
    });
  }
  const down = unanswered(results);
  if (down[0] && !options.downIsAbsent) throw down[0].error;
  throw new LocalVmError('NOT_FOUND', `no VM named ${name} on ${results.map((r) => r.host).join(', ') || 'any host'}`, {
    vm: name,
    hint: down.length
      ? `not reachable: ${down.map((d) => d.error.message).join('; ')}`
      : 'localvm list shows the VMs that exist',
  });
}
