/**
 * Pure output formatting for the command line: tables for people, stable JSON for
 * scripts, and error rendering. No I/O; the program writes what these return.
 */
import { flattenPlan, type Plan } from '../plan.js';
import type { DiskInfo, Snapshot, StandaloneDiskInfo, VmInfo } from '../backend.js';
import { isLocalVmError } from '../errors.js';
import type { Command } from '../runner.js';
import { formatDuration } from '../time/format.js';
import { shellQuote } from '../argv.js';

export { shellQuote };

/** The `--json` shape of a VM: stable field names, absent values as null. */
export interface VmJson {
  name: string;
  backend: string;
  /** The host it runs on: only for VMs of a backend with hosts (libvirt), absent otherwise. */
  host?: string;
  state: string;
  reason: string | null;
  pid: number | null;
  accel: string | null;
  ip4: string | null;
  image: string;
  arch: string;
  cpus: number;
  memory: number;
  ports: { host: number; guest: number; protocol: string; bind: string }[];
  labels: Record<string, string>;
  fingerprint: string | null;
  createdAt: string | null;
  startedAt: string | null;
  uptimeMs: number | null;
  lastError: string | null;
  /** `localvm ssh` reaches the VM here (QEMU VMs with an SSH transport). */
  ssh: { host: string; port: number; user: string } | null;
  transport: string | null;
}

/** A VM as `--json` prints it (the same for `list` entries and `info`). */
export function vmToJson(vm: VmInfo): VmJson {
  return {
    name: vm.name,
    backend: vm.backend,
    ...(vm.host !== undefined ? { host: vm.host } : {}),
    state: vm.state,
    reason: vm.reason ?? null,
    pid: vm.pid ?? null,
    accel: vm.accel ?? null,
    ip4: vm.ip4 ?? null,
    image: vm.image,
    arch: vm.arch,
    cpus: vm.cpus,
    memory: vm.memory,
    ports: vm.ports.map((p) => ({ host: p.host, guest: p.guest, protocol: p.protocol, bind: p.bind })),
    labels: { ...vm.labels },
    fingerprint: vm.fingerprint ?? null,
    createdAt: vm.createdAt ?? null,
    startedAt: vm.startedAt ?? null,
    uptimeMs: vm.uptimeMs ?? null,
    lastError: vm.lastError ?? null,
    ssh: vm.ssh ? { host: vm.ssh.host, port: vm.ssh.port, user: vm.ssh.user } : null,
    transport: vm.transport ?? null,
  };
}

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

export function formatPorts(ports: VmInfo['ports']): string {
  return ports.map((p) => `${p.bind === '127.0.0.1' ? '' : `${p.bind}:`}${p.host}->${p.guest}/${p.protocol}`).join(',');
}

/** A host that did not answer `list`, as the table shows it. */
export interface UnreachableRow {
  backend: string;
  host: string;
  uri: string;
  error: { message: string };
}

/**
 * `localvm list` for people; "no VMs" when empty. A HOST column when some VM runs on a named
 * host (libvirt), and a row per host that did not answer, with its error under the table.
 */
export function formatVmTable(vms: VmInfo[], unreachable: readonly UnreachableRow[] = []): string {
  if (vms.length === 0 && unreachable.length === 0) return 'no VMs\n';
  const hosts = unreachable.length > 0 || vms.some((vm) => vm.host !== undefined);
  const rows = vms.map((vm) => [
    vm.name,
    vm.reason ? `${vm.state} (${vm.reason})` : vm.state,
    vm.backend,
    ...(hosts ? [vm.host ?? '-'] : []),
    String(vm.cpus),
    `${vm.memory}M`,
    vm.image,
    formatPorts(vm.ports) || '-',
  ]);
  for (const u of unreachable) rows.push(['-', 'unreachable', u.backend, u.host, '-', '-', '-', '-']);
  const table = formatTable(
    ['NAME', 'STATE', 'BACKEND', ...(hosts ? ['HOST'] : []), 'CPUS', 'MEMORY', 'IMAGE', 'PORTS'],
    rows,
  );
  return table + unreachable.map((u) => `unreachable: ${u.error.message}\n`).join('');
}

/** `localvm info NAME` for people: one `key: value` per line, unset fields left out. */
export function formatVmInfo(vm: VmInfo): string {
  const json = vmToJson(vm);
  const rows: [string, string][] = [];
  for (const [key, value] of Object.entries(json)) {
    if (value === null) continue;
    if (key === 'ports') {
      if (vm.ports.length) rows.push([key, formatPorts(vm.ports)]);
    } else if (key === 'ssh') {
      if (vm.ssh) rows.push([key, `${vm.ssh.user}@${vm.ssh.host}:${vm.ssh.port} (localvm ssh ${vm.name})`]);
    } else if (key === 'labels') {
      const labels = Object.entries(vm.labels).map(([k, v]) => `${k}=${v}`);
      if (labels.length) rows.push([key, labels.join(',')]);
    } else {
      rows.push([key, String(value)]);
    }
  }
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${v}`).join('\n') + '\n';
}

export interface ImageRow {
  name: string;
  hash: string;
  sizeBytes: number;
  builtAt: string;
  kernelVersion: string;
  dir: string;
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 'B';
  for (const u of units) {
    if (value < 1024) break;
    value /= 1024;
    unit = u;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${unit}`;
}

/** A downloaded image as `image list` shows it (see src/images). */
export interface DownloadRow {
  id: string;
  url: string;
  path: string;
  sizeBytes: number;
  checksum: string;
  format: string;
  fetchedAt: string;
}

/** A checksum cut to fit a table: `sha256:0123456789ab…`. */
export function shortChecksum(checksum: string): string {
  const [algorithm, hex = ''] = checksum.split(':');
  return hex.length > 12 ? `${algorithm}:${hex.slice(0, 12)}…` : checksum;
}

/** `localvm image list` for people: tiny builds, then downloaded images. */
export function formatImageTable(images: ImageRow[], downloads: DownloadRow[] = []): string {
  if (images.length === 0 && downloads.length === 0)
    return 'no images (localvm image build makes the tiny image, localvm image pull URL downloads one)\n';
  const parts: string[] = [];
  if (images.length > 0)
    parts.push(
      formatTable(
        ['NAME', 'HASH', 'SIZE', 'KERNEL', 'BUILT'],
        images.map((i) => [i.name, i.hash.slice(0, 12), formatBytes(i.sizeBytes), i.kernelVersion, i.builtAt]),
      ),
    );
  if (downloads.length > 0)
    parts.push(
      formatTable(
        ['DOWNLOADED', 'SIZE', 'FORMAT', 'CHECKSUM', 'FETCHED', 'URL'],
        downloads.map((d) => [d.id, formatBytes(d.sizeBytes), d.format, shortChecksum(d.checksum), d.fetchedAt, d.url]),
      ),
    );
  return parts.join('\n');
}

/** The line `image pull` ends with: where the image is, how big, and whether it was fetched now. */
export function formatPulled(image: DownloadRow & { downloaded: boolean }): string {
  const how = image.downloaded ? 'downloaded' : 'already cached';
  return `${image.path} (${formatBytes(image.sizeBytes)}, ${image.format}, ${how}, ${shortChecksum(image.checksum)})\n`;
}

/** One redrawn progress line of a download: `42.0 MiB of 300 MiB (14%), 85.1 MiB/s`. Pure. */
export function formatDownloadProgress(
  receivedBytes: number,
  totalBytes: number | undefined,
  elapsedMs: number,
): string {
  const rate = elapsedMs > 0 ? `, ${formatBytes(Math.round((receivedBytes * 1000) / elapsedMs))}/s` : '';
  const of = totalBytes
    ? ` of ${formatBytes(totalBytes)} (${Math.floor((receivedBytes * 100) / Math.max(1, totalBytes))}%)`
    : '';
  return `${formatBytes(receivedBytes)}${of}${rate}`;
}

/** A command as one line: a JSON argv (`--json`) or shell-quoted for people. */
export function formatCommand(cmd: Command, json: boolean): string {
  const argv = [cmd.file, ...cmd.args];
  return json ? JSON.stringify(argv) : argv.map(shellQuote).join(' ');
}

/**
 * A plan for `--dry-run`: each process it would start as its exact argv (shell-quoted, or a
 * JSON array with --json), every other step as a `# note` (`{"note": ...}`); a step's
 * fallback follows it, indented, under "if that is not enough".
 */
export function formatPlan(plan: Plan, json: boolean): string {
  return flattenPlan(plan.steps)
    .map(({ step, depth }) => {
      const prefix = depth > 0 ? `${'  '.repeat(depth - 1)}if that is not enough: ` : '';
      if (step.command) {
        return json
          ? JSON.stringify(
              depth > 0
                ? { fallback: depth, argv: [step.command.file, ...step.command.args] }
                : [step.command.file, ...step.command.args],
            )
          : `${depth > 0 ? `# ${prefix}\n` : ''}${formatCommand(step.command, false)}`;
      }
      return json
        ? JSON.stringify(depth > 0 ? { note: step.summary, fallback: depth } : { note: step.summary })
        : `# ${prefix}${step.summary}`;
    })
    .map((line) => `${line}\n`)
    .join('');
}

/** A duration for people: whole milliseconds or whole seconds (the one helper in src/time). */
export { formatDuration } from '../time/format.js';

/**
 * An error for people: `error [CODE]: message`, then `hint: ...`, validation issues, the
 * failed command's argv; the stack only when verbose.
 */
export function formatError(error: unknown, verbose: boolean): string {
  const lines: string[] = [];
  if (isLocalVmError(error)) {
    lines.push(`error [${error.code}]: ${error.message}`);
    if (error.issues && error.issues.length > 1) {
      for (const issue of error.issues) lines.push(`  - ${issue.property || '(root)'}: ${issue.reason}`);
    }
    if (error.hint) lines.push(`hint: ${error.hint}`);
    if (verbose && error.command) lines.push(`command: ${formatCommand(error.command as Command, false)}`);
    if (verbose && error.details) lines.push(`details: ${JSON.stringify(error.details)}`);
  } else {
    const message = error instanceof Error ? error.message : String(error);
    lines.push(`error [INTERNAL]: ${message}`);
    lines.push('hint: this is a bug in localvm; run again with -v for the stack trace and report it');
  }
  if (verbose && error instanceof Error && error.stack) lines.push(error.stack);
  return lines.join('\n') + '\n';
}

/** An error for scripts: `{"error": {...}}`, the LocalVmError's toJSON. */
export function errorToJson(error: unknown): string {
  const body = isLocalVmError(error)
    ? error.toJSON()
    : { code: 'INTERNAL', message: error instanceof Error ? error.message : String(error) };
  return JSON.stringify({ error: body }) + '\n';
}

/** Snapshots as a table for people (`--json` prints the list itself). */
export function formatSnapshotTable(list: readonly Snapshot[]): string {
  if (list.length === 0) return 'no snapshots\n';
  return formatTable(
    ['NAME', 'STATE SIZE', 'CREATED'],
    list.map((s) => [s.name, s.sizeBytes === undefined ? '-' : formatBytes(s.sizeBytes), s.createdAt ?? '-']),
  );
}

/** Extra disks as a table for people (`--json` prints the list itself). */
export function formatDiskTable(list: readonly DiskInfo[]): string {
  if (list.length === 0) return 'no extra disks\n';
  return formatTable(
    ['NAME', 'SIZE', 'ATTACHED', 'FILE'],
    list.map((d) => [d.name, formatBytes(d.sizeBytes), d.attached ? 'yes' : 'no', d.path]),
  );
}

/** `disk list` without a VM: the standalone disks, their sizes and where they are attached. */
export function formatStandaloneDiskTable(list: readonly StandaloneDiskInfo[]): string {
  if (list.length === 0) return 'no standalone disks\n';
  return formatTable(
    ['NAME', 'SIZE', 'ALLOCATED', 'FORMAT', 'ATTACHED TO'],
    list.map((d) => [
      d.name,
      formatBytes(d.sizeBytes),
      formatBytes(d.allocatedBytes),
      d.format,
      d.attachedTo.map((a) => (a.readonly ? `${a.vm} (ro)` : a.vm)).join(', ') || '-',
    ]),
  );
}

/** `image prune`: what went (or would go), what was skipped and why, and the bytes freed. */
export function formatPrune(r: {
  dryRun: boolean;
  pruned: { kind: string; name: string; sizeBytes: number; path: string }[];
  skipped: { kind: string; name: string; reason: string }[];
  freedBytes: number;
}): string {
  const verb = r.dryRun ? 'would remove' : 'removed';
  const lines = r.pruned.map((i) => `${verb} ${i.kind} ${i.name} (${formatBytes(i.sizeBytes)}) ${i.path}\n`);
  for (const s of r.skipped) lines.push(`kept ${s.kind} ${s.name}: ${s.reason}\n`);
  lines.push(
    r.pruned.length === 0
      ? 'nothing to prune\n'
      : `${r.dryRun ? 'would free' : 'freed'} ${formatBytes(r.freedBytes)}\n`,
  );
  return lines.join('');
}

/** What `create` prints for people: created or adopted, where, and how long until ready. */
export function formatCreated(vm: VmInfo, adopted: boolean, readyMs: number | null): string {
  const accel = vm.accel ? `, ${vm.accel}` : '';
  const ready = readyMs !== null ? `, ready in ${formatDuration(readyMs)}` : '';
  return `${adopted ? 'adopted' : 'created'} ${vm.name} (${vm.backend}${accel}, ${vm.state})${ready}\n`;
}

/** `deleted X` when something went, `X did not exist` when the removal had nothing to do. */
export function formatRemoval(verb: 'deleted' | 'removed', what: string, happened: boolean): string {
  return happened ? `${verb} ${what}\n` : `${what} did not exist\n`;
}
