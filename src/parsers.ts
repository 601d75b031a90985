/**
 * Pure parsers for tool output. They take stdout text and return typed values; anything
 * that does not have the expected shape throws PROTOCOL with a short quote of the input,
 * so a tool version that changed its output fails loudly and legibly.
 */
import { z } from 'zod';
import { LocalVmError } from './errors.js';

const SNIPPET_CHARS = 200;

function snippet(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > SNIPPET_CHARS ? `${flat.slice(0, SNIPPET_CHARS)}...` : flat;
}

function protocolError(what: string, stdout: string, why: string, cause?: unknown): LocalVmError {
  return new LocalVmError('PROTOCOL', `unexpected ${what} output (${why}): ${snippet(stdout) || '(empty)'}`, {
    cause,
    details: { what, snippet: snippet(stdout) },
  });
}

function parseJson(what: string, stdout: string): unknown {
  try {
    return JSON.parse(stdout);
  } catch (error) {
    throw protocolError(what, stdout, 'not JSON', error);
  }
}

function checked<S extends z.ZodType>(schema: S, value: unknown, what: string, stdout: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const first = result.error.issues[0];
  const where = first && first.path.length > 0 ? `${first.path.join('.')}: ` : '';
  throw protocolError(what, stdout, `${where}${first?.message ?? 'wrong shape'}`, result.error);
}

// ---------------------------------------------------------------------------------------
// orbctl
// ---------------------------------------------------------------------------------------

/**
 * One machine as `orbctl list -f json` and `orbctl info -f json` describe it. Absent in the
 * output: `id` is '', `image.distro` and `image.arch` are 'unknown', `image.version` is ''.
 */
export interface OrbMachine {
  id: string;
  name: string;
  state: string;
  image: { distro: string; version: string; arch: string };
  config: { isolated?: boolean; default_username?: string; [k: string]: unknown };
}

/** `orbctl info NAME -f json`; `ip4` only while running, `diskSize` in bytes. */
export interface OrbInfo {
  record: OrbMachine;
  ip4?: string;
  diskSize?: number;
}

// Loose objects: newer OrbStack versions add fields, which must not break parsing. Only what
// localvm reads is required (name, state); a record without `image` or `id` (OrbStack tools
// and older versions print such records) gets defaults instead of failing as PROTOCOL. A
// field that is present with the wrong type still fails: that is a changed format, not a gap.
const orbImageSchema = z.looseObject({
  distro: z.string().default('unknown'),
  version: z.string().default(''),
  arch: z.string().default('unknown'),
});

const orbMachineSchema = z.looseObject({
  id: z.string().default(''),
  name: z.string().min(1),
  state: z.string(),
  image: orbImageSchema.optional().transform((i) => i ?? { distro: 'unknown', version: '', arch: 'unknown' }),
  config: z
    .looseObject({ isolated: z.boolean().optional(), default_username: z.string().optional() })
    .optional()
    .transform((c) => c ?? {}),
});

function toMachine(m: z.output<typeof orbMachineSchema>): OrbMachine {
  return {
    id: m.id,
    name: m.name,
    state: m.state,
    image: { distro: m.image.distro, version: m.image.version, arch: m.image.arch },
    config: m.config,
  };
}

/** Parses `orbctl list [-r] -f json`. Empty output and `null` (Go's nil slice) mean no machines. */
export function parseOrbctlList(stdout: string): OrbMachine[] {
  if (stdout.trim() === '') return [];
  const value = parseJson('orbctl list', stdout);
  if (value === null) return [];
  return checked(z.array(orbMachineSchema), value, 'orbctl list', stdout).map(toMachine);
}

const orbInfoSchema = z.looseObject({
  record: orbMachineSchema,
  ip4: z.string().optional().nullable(),
  disk_size: z.number().nonnegative().optional().nullable(),
});

/** Parses `orbctl info NAME -f json`: `{record, ip4?, disk_size?}` or, on some versions, the bare record. */
export function parseOrbctlInfo(stdout: string): OrbInfo {
  const value = parseJson('orbctl info', stdout);
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw protocolError('orbctl info', stdout, 'not a JSON object');
  if (!('record' in value)) {
    const bare = checked(orbMachineSchema, value, 'orbctl info', stdout);
    // A bare record may still carry the address under the same key.
    const ip4 = (value as { ip4?: unknown }).ip4;
    return typeof ip4 === 'string' && ip4 !== '' ? { record: toMachine(bare), ip4 } : { record: toMachine(bare) };
  }
  const info = checked(orbInfoSchema, value, 'orbctl info', stdout);
  const out: OrbInfo = { record: toMachine(info.record) };
  // Stopped machines report no address; an empty string means the same.
  if (info.ip4) out.ip4 = info.ip4;
  if (typeof info.disk_size === 'number') out.diskSize = info.disk_size;
  return out;
}

// ---------------------------------------------------------------------------------------
// qemu-img
// ---------------------------------------------------------------------------------------

export interface QemuImgSnapshot {
  id: string;
  name: string;
  /** Bytes of saved RAM/device state; 0 for a disk-only snapshot (`qemu-img snapshot -c`). */
  vmStateSize: number;
  /** Creation time, seconds since the epoch. */
  dateSec: number;
  /** Guest clock at the snapshot in nanoseconds (vm-clock-sec * 1e9 + vm-clock-nsec). */
  clockNsec?: number;
}

/**
 * `qemu-img info --output=json`; sizes in bytes. Only `format` and each snapshot's name,
 * state size and date are required (localvm decides on them); `filename` and a snapshot's
 * `id` are '' when absent, `virtualSize` is left out.
 */
export interface QemuImgInfo {
  filename: string;
  format: string;
  virtualSize?: number;
  actualSize?: number;
  /** The backing file as recorded in the image (may be relative to the image). */
  backingFile?: string;
  /** The backing file resolved by qemu-img. */
  fullBackingFile?: string;
  backingFormat?: string;
  snapshots: QemuImgSnapshot[];
}

const size = z.number().int().nonnegative();

const qemuImgInfoSchema = z.looseObject({
  filename: z.string().default(''),
  format: z.string(),
  'virtual-size': size.optional(),
  'actual-size': size.optional(),
  'backing-filename': z.string().optional(),
  'full-backing-filename': z.string().optional(),
  'backing-filename-format': z.string().optional(),
  snapshots: z
    .array(
      z.looseObject({
        id: z.string().default(''),
        name: z.string(),
        'vm-state-size': size,
        'date-sec': size,
        'vm-clock-sec': size.optional(),
        'vm-clock-nsec': size.optional(),
      }),
    )
    .optional(),
});

/**
 * Parses `qemu-img info --output=json [--force-share] FILE`. With `--backing-chain` the
 * output is an array, top image first; that first image is returned.
 */
export function parseQemuImgInfo(stdout: string): QemuImgInfo {
  let value = parseJson('qemu-img info', stdout);
  if (Array.isArray(value)) value = value[0];
  const info = checked(qemuImgInfoSchema, value, 'qemu-img info', stdout);
  const out: QemuImgInfo = {
    filename: info.filename,
    format: info.format,
    snapshots: (info.snapshots ?? []).map((s) => {
      const snap: QemuImgSnapshot = {
        id: s.id,
        name: s.name,
        vmStateSize: s['vm-state-size'],
        dateSec: s['date-sec'],
      };
      if (s['vm-clock-sec'] !== undefined && s['vm-clock-nsec'] !== undefined)
        snap.clockNsec = s['vm-clock-sec'] * 1e9 + s['vm-clock-nsec'];
      return snap;
    }),
  };
  if (info['virtual-size'] !== undefined) out.virtualSize = info['virtual-size'];
  if (info['actual-size'] !== undefined) out.actualSize = info['actual-size'];
  if (info['backing-filename'] !== undefined) out.backingFile = info['backing-filename'];
  if (info['full-backing-filename'] !== undefined) out.fullBackingFile = info['full-backing-filename'];
  if (info['backing-filename-format'] !== undefined) out.backingFormat = info['backing-filename-format'];
  return out;
}
