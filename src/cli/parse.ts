/**
 * Pure parsers for command-line arguments: strings in, typed values out, VALIDATION errors
 * naming the flag on bad input. No I/O. The VM spec itself is validated by the library's
 * schema; these only turn CLI syntax (`8080:80`, `vm:/path`, `512M`) into its input shape.
 */
import { LocalVmError } from '../errors.js';
import { backendChoices } from '../backends/registry.js';
import type { BackendName, VmSpecInput } from '../schema.js';
import { VM_NAME_PATTERN, parseSize } from '../schema.js';

function usage(property: string, reason: string, hint?: string): LocalVmError {
  return new LocalVmError('VALIDATION', `invalid ${property}: ${reason}`, {
    issues: [{ property, reason }],
    hint,
  });
}

/** A whole decimal number (no sign, no fraction, no exponent), or VALIDATION. */
export function parseIntArg(property: string, value: string): number {
  if (!/^\d{1,9}$/.test(value.trim())) throw usage(property, `must be a whole number, got ${JSON.stringify(value)}`);
  return Number(value.trim());
}

/** `--memory`: MiB as a number (`512`) or a size with a unit (`512M`, `2G`), returned in MiB. */
export function parseMemoryArg(value: string): number {
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text);
  const bytes = parseSize(text);
  if (bytes === undefined || !/[KMGT]/i.test(text)) {
    throw usage('memory', `must be MiB (512) or a size such as 512M or 2G, got ${JSON.stringify(value)}`);
  }
  if (bytes % (1024 * 1024) !== 0) throw usage('memory', 'must be a whole number of MiB');
  return bytes / (1024 * 1024);
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000 };

/**
 * A duration flag (`--ready-timeout`): milliseconds as a whole number (`500`, `500ms`), or
 * seconds or minutes (`30s`, `0.5s`, `2m`) that come to whole milliseconds; 1 ms to `maxMs`.
 */
export function parseDurationArg(property: string, value: string, maxMs = 3_600_000): number {
  const m = /^(\d{1,9})(?:\.(\d{1,3}))?(ms|s|m)?$/.exec(value.trim());
  const example = 'e.g. 500ms, 30s or 2m (a bare number is milliseconds)';
  if (!m) throw usage(property, `must be a duration, got ${JSON.stringify(value)}`, example);
  const [, whole = '', fraction = '', unit = 'ms'] = m;
  // Integer arithmetic, so 1.1s is exactly 1100 ms.
  const scaled = Number(whole + fraction) * (DURATION_UNITS[unit] ?? 1);
  const divisor = 10 ** fraction.length;
  if (scaled % divisor !== 0) {
    throw usage(property, `must come to whole milliseconds, got ${JSON.stringify(value)}`, example);
  }
  const ms = scaled / divisor;
  if (ms < 1 || ms > maxMs) {
    throw usage(property, `must be 1 ms to ${maxMs / 60_000} minutes, got ${JSON.stringify(value)}`);
  }
  return ms;
}

export interface PortArg {
  host: number;
  guest: number;
  protocol: 'tcp' | 'udp';
  bind?: string;
}

/** `--port [BIND:]HOST:GUEST[/tcp|/udp]`, e.g. `8080:80`, `127.0.0.1:5353:53/udp`. */
export function parsePortArg(value: string): PortArg {
  const m = /^(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d{1,5}):(\d{1,5})(?:\/(tcp|udp))?$/.exec(value.trim());
  if (!m) {
    throw usage(
      'port',
      `must be HOST:GUEST, BIND:HOST:GUEST, optionally /tcp or /udp; got ${JSON.stringify(value)}`,
      'e.g. --port 8080:80',
    );
  }
  const port: PortArg = {
    host: Number(m[2]),
    guest: Number(m[3]),
    protocol: (m[4] as 'tcp' | 'udp' | undefined) ?? 'tcp',
  };
  if (m[1] !== undefined) port.bind = m[1];
  return port;
}

export interface CreateArgs {
  image?: string | undefined;
  memory?: string | undefined;
  cpus?: string | undefined;
  port?: string[] | undefined;
}

/** The VmSpecInput a `create` command line asks for (validated later by the library). */
export function buildCreateSpec(name: string, args: CreateArgs, backend: BackendName | undefined): VmSpecInput {
  const spec: VmSpecInput = { name };
  if (backend !== undefined) spec.backend = backend;
  if (args.image !== undefined) spec.image = args.image;
  if (args.memory !== undefined) spec.memory = parseMemoryArg(args.memory);
  if (args.cpus !== undefined) spec.cpus = parseIntArg('cpus', args.cpus);
  if (args.port !== undefined && args.port.length > 0) spec.ports = args.port.map(parsePortArg);
  return spec;
}

/** `--backend`: a registered backend's name, or auto. */
export function parseBackendArg(value: string | undefined): BackendName | undefined {
  if (value === undefined) return undefined;
  const choices = backendChoices();
  if (!choices.includes(value)) {
    throw usage(
      'backend',
      `must be ${choices.slice(0, -1).join(', ')} or ${choices.at(-1)}, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/** One side of `cp`: a guest location `NAME:/abs/path`, or a host path. */
export type CpEndpoint = { kind: 'guest'; vm: string; path: string } | { kind: 'host'; path: string };

const GUEST_ENDPOINT = /^([^:/]+):(.*)$/;

/**
 * `NAME:/path` is a guest path when NAME is a valid VM name; anything else is a host path
 * (write `./a:b` for a host file whose name has a colon). Guest paths must be absolute.
 */
export function parseCpEndpoint(value: string): CpEndpoint {
  if (value.length === 0) throw usage('path', 'must not be empty');
  const m = GUEST_ENDPOINT.exec(value);
  if (!m || value.startsWith('./')) return { kind: 'host', path: value };
  const [, vm = '', path = ''] = m;
  if (!VM_NAME_PATTERN.test(vm)) {
    throw usage('path', `"${vm}" before ":" is not a VM name`, 'write ./NAME for a host file whose name has a colon');
  }
  if (!path.startsWith('/')) throw usage('path', `the guest path in ${JSON.stringify(value)} must be absolute`);
  return { kind: 'guest', vm, path };
}

export type CpPlan =
  | { direction: 'in'; vm: string; hostPath: string; guestPath: string }
  | { direction: 'out'; vm: string; hostPath: string; guestPath: string };

/**
 * `cp SRC DST` with exactly one side in a VM. A guest destination ending in "/" gets the
 * source's base name appended (a host directory destination is resolved by the caller).
 */
export function parseCpArgs(src: string, dst: string): CpPlan {
  const from = parseCpEndpoint(src);
  const to = parseCpEndpoint(dst);
  if (from.kind === 'guest' && to.kind === 'guest') {
    throw usage('path', 'copying from one VM to another is not supported', 'copy to the host first');
  }
  if (from.kind === 'host' && to.kind === 'host') {
    throw usage('path', 'one of SRC and DST must be in a VM, written NAME:/path');
  }
  if (from.kind === 'host' && to.kind === 'guest') {
    const guestPath = to.path.endsWith('/') ? to.path + baseName(from.path) : to.path;
    return { direction: 'in', vm: to.vm, hostPath: from.path, guestPath };
  }
  const guest = from as { vm: string; path: string };
  if (guest.path.endsWith('/')) throw usage('path', 'the guest source must be a file, not a directory');
  return { direction: 'out', vm: guest.vm, hostPath: to.path, guestPath: guest.path };
}

/** The last path component ("" for "/"). Pure. */
export function baseName(path: string): string {
  const parts = path.split('/').filter(Boolean);
  return parts[parts.length - 1] ?? '';
}

/** `qmp NAME COMMAND [json-args]`: the arguments must be a JSON object. */
export function parseJsonArgs(value: string | undefined): Record<string, unknown> | undefined {
  if (value === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (error) {
    throw usage('arguments', `must be JSON: ${(error as Error).message}`, `e.g. '{"device":"virtio-net-pci"}'`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw usage('arguments', 'must be a JSON object');
  }
  return parsed as Record<string, unknown>;
}

/** `exec` and `shell` exit with the guest's code; a signal maps to 128 + its number, as shells do. */
export function guestExitCode(result: { exitCode: number; signal?: number | string | undefined }): number {
  if (typeof result.signal === 'number') return 128 + result.signal;
  if (result.exitCode >= 0 && result.exitCode <= 255) return result.exitCode;
  return 1;
}

/** `--disk NAME:SIZE`, e.g. `data:10G`. */
export function parseDiskArg(value: string): { name: string; size: string } {
  const m = /^([a-z0-9][a-z0-9-]{0,30}):(\d+[KMGT]?)$/i.exec(value.trim());
  if (!m) throw usage('disk', `must be NAME:SIZE such as data:10G, got ${JSON.stringify(value)}`);
  return { name: m[1] as string, size: m[2] as string };
}

/** `--label KEY=VALUE`. */
export function parseLabelArg(value: string): [string, string] {
  const at = value.indexOf('=');
  if (at <= 0) throw usage('label', `must be KEY=VALUE, got ${JSON.stringify(value)}`);
  return [value.slice(0, at), value.slice(at + 1)];
}

/**
 * `--probe`: a command that must exit 0 in the guest before the VM counts as ready. A JSON
 * array (`'["test","-f","/ready"]'`) is taken as the argv itself; anything else is split on
 * whitespace. Never a shell: write `'["/bin/sh","-c","..."]'` for one.
 */
export function parseProbeArg(value: string): { argv: string[] } {
  const text = value.trim();
  if (text.startsWith('[')) {
    let argv: unknown;
    try {
      argv = JSON.parse(text);
    } catch {
      throw usage('probe', `is not a JSON array: ${JSON.stringify(value)}`);
    }
    if (!Array.isArray(argv) || argv.length === 0 || !argv.every((a) => typeof a === 'string')) {
      throw usage('probe', 'must be a non-empty JSON array of strings');
    }
    return { argv: argv as string[] };
  }
  const argv = text.split(/\s+/).filter(Boolean);
  if (argv.length === 0) throw usage('probe', 'must name a command');
  return { argv };
}

/** The flags of `create` beyond name, image, memory, cpus and ports. */
export interface CreateExtras {
  diskSize?: string | undefined;
  disk?: string[] | undefined;
  kernel?: string | undefined;
  initrd?: string | undefined;
  append?: string | undefined;
  arch?: string | undefined;
  accel?: string | undefined;
  label?: string[] | undefined;
  isolated?: boolean | undefined;
  probe?: string[] | undefined;
  imageChecksum?: string | undefined;
  imageChecksumUrl?: string | undefined;
  transport?: string | undefined;
}

/**
 * A whole `create` request: the spec file's content (`-f`), then the flags over it, then
 * user-data read from `--user-data`. Pure; the schema validates the result.
 */
export function mergeCreateSpec(
  base: Record<string, unknown>,
  flags: VmSpecInput,
  extras: CreateExtras,
  userData: string | undefined,
): VmSpecInput {
  const spec: Record<string, unknown> = { ...base, ...flags };
  if (extras.diskSize !== undefined) spec.diskSize = extras.diskSize;
  if (extras.disk?.length) spec.disks = extras.disk.map(parseDiskArg);
  for (const key of [
    'kernel',
    'initrd',
    'append',
    'arch',
    'accel',
    'imageChecksum',
    'imageChecksumUrl',
    'transport',
  ] as const) {
    if (extras[key] !== undefined) spec[key] = extras[key];
  }
  if (extras.label?.length) {
    spec.labels = {
      ...(base.labels as Record<string, string> | undefined),
      ...Object.fromEntries(extras.label.map(parseLabelArg)),
    };
  }
  if (extras.isolated) spec.isolated = true;
  if (extras.probe?.length) spec.readiness = extras.probe.map(parseProbeArg);
  if (userData !== undefined) spec.userData = userData;
  return spec as VmSpecInput;
}
