/**
 * libvirt connection URIs localvm accepts: the local system or session daemon, or either one
 * on another host through SSH. libvirt turns a `qemu+ssh` URI into an ssh command and a
 * remote command line, so anything beyond these plain shapes (other transports, unknown
 * query parameters, shell-significant characters) is refused here, at the door.
 */
import { z } from 'zod';

export interface LibvirtUri {
  uri: string;
  /** `local`: a daemon on this machine; `ssh`: one reached through ssh. */
  transport: 'local' | 'ssh';
  /** Which daemon: the host's system daemon or a user's session daemon. */
  daemon: 'system' | 'session';
  user?: string | undefined;
  host?: string | undefined;
  port?: number | undefined;
  keyfile?: string | undefined;
  /** `no_verify=1`: skip host-key checking (tests against 127.0.0.1 only). */
  noVerify: boolean;
}

const LOCAL = /^qemu:\/\/\/(system|session)$/;
// user@ is optional; host is a DNS name or an IPv4 address; the port is optional.
const SSH =
  /^qemu\+ssh:\/\/(?:([a-z_][a-z0-9_-]{0,31})@)?([A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}))(?::(\d{1,5}))?\/(system|session)(?:\?(.*))?$/;
const QUERY_KEYS = new Set(['keyfile', 'no_verify']);

/** The parts of `uri`, or a reason it is refused. Pure. */
export function parseLibvirtUri(uri: string): LibvirtUri | { problem: string } {
  const local = LOCAL.exec(uri);
  if (local) return { uri, transport: 'local', daemon: local[1] as 'system' | 'session', noVerify: false };
  const m = SSH.exec(uri);
  if (!m) {
    return {
      problem: 'must be qemu:///system, qemu:///session or qemu+ssh://[user@]host[:port]/system|session[?keyfile=PATH]',
    };
  }
  const port = m[3] === undefined ? undefined : Number(m[3]);
  if (port !== undefined && (port < 1 || port > 65535)) return { problem: 'port must be 1-65535' };
  let keyfile: string | undefined;
  let noVerify = false;
  for (const pair of (m[5] ?? '').split('&').filter(Boolean)) {
    const eq = pair.indexOf('=');
    const key = eq < 0 ? pair : pair.slice(0, eq);
    const value = eq < 0 ? '' : pair.slice(eq + 1);
    if (!QUERY_KEYS.has(key)) return { problem: `unknown query parameter "${key}" (allowed: keyfile, no_verify)` };
    if (key === 'keyfile') {
      if (!/^\/[A-Za-z0-9._/+-]*$/.test(value))
        return { problem: 'keyfile must be an absolute path of A-Z a-z 0-9 . _ / + -' };
      keyfile = value;
    } else {
      if (value !== '0' && value !== '1') return { problem: 'no_verify must be 0 or 1' };
      noVerify = value === '1';
    }
  }
  return {
    uri,
    transport: 'ssh',
    daemon: m[4] as 'system' | 'session',
    user: m[1],
    host: m[2],
    port,
    keyfile,
    noVerify,
  };
}

/** A connection URI as a spec's `connect` or LOCALVM_LIBVIRT_URI gives it. */
export const libvirtUriSchema = z.string().superRefine((uri, ctx) => {
  const parsed = parseLibvirtUri(uri);
  if ('problem' in parsed) ctx.addIssue({ code: 'custom', message: parsed.problem });
});

/** Whether `uri` names a daemon on this machine (its files are this machine's files). */
export function isLocalUri(uri: string): boolean {
  return LOCAL.test(uri);
}

/**
 * Whether QEMU behind `uri` runs on this machine: a local daemon, or ssh to a loopback
 * address (127.0.0.0/8, localhost). Its files are still another user's, but its CPU is this
 * one, so this machine's KVM probe speaks for it. Pure.
 */
export function runsOnThisMachine(uri: string): boolean {
  const parsed = parseLibvirtUri(uri);
  if ('problem' in parsed) return false;
  if (parsed.transport === 'local') return true;
  const host = parsed.host ?? '';
  return host === 'localhost' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
