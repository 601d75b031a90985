/**
 * Parsers of `virsh` output, pure and tested on captured output (libvirt 9.0). Tables are
 * read by their header's column positions where a value may contain spaces (snapshot times).
 */
import type { VmState } from '../../backend.js';
import type { Arch } from '../../schema.js';
import { unescapeXml } from './xml.js';

/** `virsh domstate NAME --reason` → localvm's state and libvirt's reason. */
export function parseDomstate(stdout: string): { state: VmState; reason?: string | undefined; raw: string } {
  const line = stdout.trim().split('\n')[0]?.trim() ?? '';
  const m = /^(.*?)(?:\s+\(([^)]*)\))?$/.exec(line);
  const raw = (m?.[1] ?? line).trim();
  const reason = m?.[2];
  const state: VmState =
    raw === 'running' || raw === 'idle' || raw === 'blocked'
      ? 'running'
      : raw === 'in shutdown'
        ? 'stopping'
        : raw === 'shut off' || raw === 'crashed'
          ? 'stopped'
          : 'unknown';
  // A guest that crashed or failed to start is stopped for a reason the user did not ask for.
  const why = raw === 'crashed' ? 'crashed' : raw === 'paused' || raw === 'pmsuspended' ? raw : reason;
  return { state, reason: why, raw };
}

/** `Key: value` lines (dominfo, nodeinfo) → a map keyed by the key as printed. */
export function parseKeyValues(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

export interface DomInfo {
  id?: number | undefined;
  uuid: string;
  cpus: number;
  maxMemoryKib: number;
  persistent: boolean;
}

/** `virsh dominfo NAME`. */
export function parseDominfo(stdout: string): DomInfo {
  const kv = parseKeyValues(stdout);
  const id = kv.Id !== undefined && /^\d+$/.test(kv.Id) ? Number(kv.Id) : undefined;
  return {
    id,
    uuid: kv.UUID ?? '',
    cpus: Number(kv['CPU(s)'] ?? 0),
    maxMemoryKib: Number((kv['Max memory'] ?? '0').split(/\s+/)[0]),
    persistent: kv.Persistent === 'yes',
  };
}

/** `virsh list --all --name` (or `pool-list --name`): one name a line, blank lines dropped. */
export function parseNames(stdout: string): string[] {
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

export interface NodeInfo {
  arch: string;
  cpus: number;
  memoryKib: number;
}

/** `virsh nodeinfo`. */
export function parseNodeinfo(stdout: string): NodeInfo {
  const kv = parseKeyValues(stdout);
  return {
    arch: kv['CPU model'] ?? '',
    cpus: Number(kv['CPU(s)'] ?? 0),
    memoryKib: Number((kv['Memory size'] ?? '0').split(/\s+/)[0]),
  };
}

/** `virsh freecell` (one cell or `--all`): the free memory in KiB (the Total line when there is one). */
export function parseFreecell(stdout: string): number {
  const total = /Total:\s+(\d+)\s*KiB/.exec(stdout);
  if (total) return Number(total[1]);
  return [...stdout.matchAll(/:\s+(\d+)\s*KiB/g)].reduce((sum, m) => sum + Number(m[1]), 0);
}

/** Rows of a virsh table: the header's columns, split at the header's column starts. */
function table(stdout: string): Record<string, string>[] {
  const lines = stdout.split('\n').filter((l) => l.trim());
  const header = lines[0];
  if (header === undefined || !/^-+$/.test(lines[1]?.trim() ?? '')) return [];
  const cols = [...header.matchAll(/\S+(?: \S+)*/g)].map((m) => ({ name: m[0], start: m.index }));
  return lines.slice(2).map((line) => {
    const row: Record<string, string> = {};
    cols.forEach((c, i) => {
      const end = cols[i + 1]?.start ?? line.length;
      row[c.name] = line.slice(c.start, end).trim();
    });
    return row;
  });
}

/** `virsh vol-list POOL`: name → path. */
export function parseVolList(stdout: string): { name: string; path: string }[] {
  return table(stdout).map((r) => ({ name: r.Name ?? '', path: r.Path ?? '' }));
}

/** `virsh snapshot-list NAME`: names and creation times (ISO). */
export function parseSnapshotList(stdout: string): { name: string; createdAt?: string | undefined }[] {
  return table(stdout).map((r) => {
    const t = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d) ([+-]\d\d)(\d\d)$/.exec(r['Creation Time'] ?? '');
    return {
      name: r.Name ?? '',
      createdAt: t ? new Date(`${t[1]}T${t[2]}${t[3]}:${t[4]}`).toISOString() : undefined,
    };
  });
}

export interface HostCapabilities {
  hostArch: string;
  /** Guest arch → the domain types libvirt offers for it (`qemu`, `kvm`). */
  guests: Map<string, Set<string>>;
}

/** `virsh capabilities`: the host arch and, per hvm guest arch, the domain types. */
export function parseCapabilities(xml: string): HostCapabilities {
  const hostArch = /<host>[\s\S]*?<arch>([^<]+)<\/arch>/.exec(xml)?.[1] ?? '';
  const guests = new Map<string, Set<string>>();
  for (const g of xml.matchAll(/<guest>([\s\S]*?)<\/guest>/g)) {
    const body = g[1] as string;
    if (!/<os_type>hvm<\/os_type>/.test(body)) continue;
    const arch = /<arch name=["']([^"']+)["']/.exec(body)?.[1];
    if (!arch) continue;
    const types = new Set([...body.matchAll(/<domain type=["']([^"']+)["']/g)].map((m) => m[1] as string));
    guests.set(arch, new Set([...(guests.get(arch) ?? []), ...types]));
  }
  return { hostArch, guests };
}

/** The disks of a domain's XML (`dumpxml`): guest device, pool and volume (file disks: the path). */
export function parseDomainDisks(xml: string): { target: string; pool?: string; volume?: string; file?: string }[] {
  const out: { target: string; pool?: string; volume?: string; file?: string }[] = [];
  for (const d of xml.matchAll(/<disk\b[^>]*>([\s\S]*?)<\/disk>/g)) {
    const body = d[1] as string;
    const target = /<target\b[^>]*\bdev=["']([^"']+)["']/.exec(body)?.[1];
    if (!target) continue;
    const attr = (name: string) => {
      const v = new RegExp(`<source\\b[^>]*\\b${name}=["']([^"']*)["']`).exec(body)?.[1];
      return v === undefined ? {} : { [name]: unescapeXml(v) };
    };
    out.push({ target, ...attr('pool'), ...attr('volume'), ...attr('file') });
  }
  return out;
}

/** Whether the arch libvirt reports is `arch` as the schema names it. */
export function sameArch(libvirtArch: string, arch: Arch): boolean {
  return libvirtArch === arch || (arch === 'x86_64' && libvirtArch === 'amd64');
}
