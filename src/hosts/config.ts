/**
 * The libvirt hosts list: host name → connection URI, from `hosts.json` (`LOCALVM_HOSTS`, or
 * `<LOCALVM_HOME>/hosts.json`). Without the file there is one host, `local`, at the default
 * URI, so a single machine needs no configuration.
 */
import { readFile } from 'node:fs/promises';
import type { LocalVmConfig } from '../config.js';
import { LocalVmError } from '../errors.js';
import { hostsFileSchema, parseOrThrow } from '../schema.js';

export interface HostEntry {
  name: string;
  uri: string;
}

/** The hosts list and where it came from (errors name the file). */
export interface HostsList {
  hosts: HostEntry[];
  /** The file it was read from, or undefined for the built-in `local` host. */
  source?: string | undefined;
}

/** The name of the one host there is when no hosts file exists. */
export const DEFAULT_HOST = 'local';

/** Parses a hosts file's text. VALIDATION naming the file on bad JSON or a bad entry. Pure. */
export function parseHostsFile(text: string, source: string): HostEntry[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    const reason = `not JSON: ${(error as Error).message}`;
    throw new LocalVmError('VALIDATION', `invalid hosts file ${source}: ${reason}`, {
      issues: [{ property: 'hosts', reason }],
    });
  }
  const parsed = parseOrThrow(hostsFileSchema, json, `hosts file ${source}`);
  return Object.entries(parsed.hosts).map(([name, uri]) => ({ name, uri }));
}

/** The configured hosts: the hosts file when there is one, else `local` at `defaultUri`. */
export async function loadHosts(config: Pick<LocalVmConfig, 'hostsFile'>, defaultUri: string): Promise<HostsList> {
  let text: string;
  try {
    text = await readFile(config.hostsFile, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { hosts: [{ name: DEFAULT_HOST, uri: defaultUri }] };
    throw new LocalVmError('HOST_FS', `cannot read the hosts file ${config.hostsFile}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return { hosts: parseHostsFile(text, config.hostsFile), source: config.hostsFile };
}

/** The host called `name`. VALIDATION naming the known hosts (and the file) when there is none. Pure. */
export function findHost(list: HostsList, name: string): HostEntry {
  const host = list.hosts.find((h) => h.name === name);
  if (host) return host;
  const known = list.hosts.map((h) => h.name).join(', ');
  const where = list.source ? ` in ${list.source}` : ' (no hosts file: only the default host)';
  const reason = `unknown host ${JSON.stringify(name)}: the hosts${where} are ${known}`;
  throw new LocalVmError('VALIDATION', reason, {
    issues: [{ property: 'host', reason }],
    hint: list.source ? `add ${name} to ${list.source}, or use one of ${known}` : 'list your hosts in a hosts.json',
  });
}
