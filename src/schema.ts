/**
 * The one place input is validated. CLI arguments, Pulumi `check`, and library entry
 * points parse through these schemas; everything below them trusts the typed result.
 */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { z } from 'zod';
import './backends/builtin.js';
import { backendChoices } from './backends/registry.js';
import { checksumProblem } from './images/checksum.js';
import { imageSpecIssues, imageUrlProblem } from './images/url.js';

export { VM_NAME_PATTERN, USER_NAME_PATTERN, ENV_NAME_PATTERN, toIssues, parseOrThrow } from './validation.js';
import { VM_NAME_PATTERN, USER_NAME_PATTERN, parseOrThrow } from './validation.js';
import { libvirtUriSchema } from './backends/libvirt/uri.js';
export { libvirtUriSchema };

export const vmNameSchema = z
  .string({ error: 'must be a string' })
  .regex(VM_NAME_PATTERN, 'must be 1-63 characters of a-z, 0-9 and "-", starting with a letter or digit');

/** A registered backend's name, or `auto`; the names come from the backend registry. */
export const backendSchema = z.string().refine((v) => backendChoices().includes(v), {
  error: () => `must be one of ${backendChoices().join(', ')}`,
});
export type BackendName = string;

/** CPU architectures, named as QEMU names them; `amd64`/`arm64` are accepted as aliases. */
export const archSchema = z.preprocess(
  (v) => (v === 'amd64' ? 'x86_64' : v === 'arm64' ? 'aarch64' : v),
  z.enum(['x86_64', 'aarch64']),
);
export type Arch = 'x86_64' | 'aarch64';

export const accelSchema = z.enum(['auto', 'kvm', 'tcg', 'hvf']);
export type Accel = z.infer<typeof accelSchema>;

const port = z.number().int('must be an integer').min(1, 'must be 1-65535').max(65535, 'must be 1-65535');

export const portForwardSchema = z
  .object({
    host: port,
    guest: port,
    protocol: z.enum(['tcp', 'udp']).default('tcp'),
    /** Host address to bind. Loopback by default: a VM is not exposed to the network unless asked. */
    bind: z
      .string()
      .refine((s) => isIP(s) === 4, 'must be an IPv4 address')
      .default('127.0.0.1'),
  })
  .strict();
export type PortForward = z.infer<typeof portForwardSchema>;

/** A size: bytes as a number, or a string like `512M`, `10G`. Normalised to bytes. */
export const sizeSchema = z.union([z.number().int().positive(), z.string()]).transform((v, ctx) => {
  const bytes = parseSize(v);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: 'must be a size like 1048576, 512M or 10G' });
    return z.NEVER;
  }
  return bytes;
});

export const diskSchema = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,30}$/, 'must be 1-31 characters of a-z, 0-9 and "-"'),
    size: sizeSchema,
  })
  .strict();
export type DiskSpec = z.infer<typeof diskSchema>;

/** A readiness probe: an argv run in the guest that must exit 0. */
export const probeSchema = z
  .object({
    argv: z.array(z.string()).min(1, 'must name a command'),
    timeoutMs: z.number().int().positive().max(600_000).optional(),
  })
  .strict();
export type Probe = z.infer<typeof probeSchema>;

/** How long each phase may take unless a spec says otherwise. */
export const DEFAULT_TIMEOUTS = { createMs: 120_000, readyMs: 120_000, stopMs: 15_000, execMs: 60_000 } as const;

export const timeoutsSchema = z
  .object({
    createMs: z.number().int().positive().max(3_600_000).default(DEFAULT_TIMEOUTS.createMs),
    readyMs: z.number().int().positive().max(3_600_000).default(DEFAULT_TIMEOUTS.readyMs),
    stopMs: z.number().int().positive().max(600_000).default(DEFAULT_TIMEOUTS.stopMs),
    execMs: z.number().int().positive().max(3_600_000).default(DEFAULT_TIMEOUTS.execMs),
  })
  .strict();
export type Timeouts = z.infer<typeof timeoutsSchema>;

const absPath = z.string().refine((s) => s.startsWith('/'), 'must be an absolute path');

export const MAX_LABELS = 64;

/** The VM spec's fields, before the cross-field rules and the defaults that depend on `template`. */
export const vmSpecObjectSchema = z
  .object({
    name: vmNameSchema,
    backend: backendSchema.default('auto'),
    /**
     * `tiny` (the embedded default guest), a path to a qcow2/raw image (used read-only as
     * the backing file of a per-VM overlay), an `http(s)://` URL of one (QEMU: downloaded once
     * into the cache, verified against imageChecksum or imageChecksumUrl), or for OrbStack
     * `distro[:version]`.
     */
    image: z
      .string()
      .min(1, 'must not be empty')
      .max(4096)
      .refine((s) => !s.startsWith('-'), 'must not start with "-"')
      .refine((s) => !/[\0\n,]/.test(s), 'must not contain NUL, newline or comma')
      .optional(),
    /** With an image URL (QEMU): what the download is verified against, `sha256:<hex>` or `sha512:<hex>`. */
    imageChecksum: z
      .string()
      .superRefine((s, ctx) => problem(ctx, checksumProblem(s)))
      .optional(),
    /** With an image URL (QEMU), instead of imageChecksum: a SHA256SUMS/SHA512SUMS URL listing the image. */
    imageChecksumUrl: z
      .string()
      .max(4096)
      .superRefine((s, ctx) => problem(ctx, imageUrlProblem(s)))
      .optional(),
    /** Boot a kernel directly instead of an image's own boot loader. */
    kernel: absPath.optional(),
    initrd: absPath.optional(),
    append: z.string().max(4096).optional(),
    arch: archSchema.optional(),
    accel: accelSchema.default('auto'),
    cpus: z.number().int('must be an integer').min(1, 'must be 1-64').max(64, 'must be 1-64').optional(),
    /** Memory in MiB. */
    memory: z
      .number()
      .int('must be an integer')
      .min(64, 'must be 64-262144 MiB')
      .max(262144, 'must be 64-262144 MiB')
      .optional(),
    /**
     * Restore this template (see `createTemplate`) instead of booting: the clone is its
     * template's machine, so image, kernel and memory come from the template.
     */
    template: vmNameSchema.optional(),
    /** Size of the root disk overlay when booting from an image. */
    diskSize: sizeSchema.optional(),
    disks: z.array(diskSchema).max(16).default([]),
    user: z.string().regex(USER_NAME_PATTERN, 'must be a valid user name').optional(),
    /** cloud-init user-data (secret in the Pulumi provider). */
    userData: z.string().max(1_000_000).optional(),
    ports: z.array(portForwardSchema).max(64).default([]),
    /** Restrict the guest's network to the host (QEMU user-mode `restrict=on`). */
    isolated: z.boolean().default(false),
    /**
     * Free-form metadata, capped the way Kubernetes caps labels (keys of at most 63
     * characters) and bounded in number (64), so a spec cannot grow vm.json without limit.
     * Values keep their 256-character limit: tighter than Kubernetes' 63 would refuse
     * labels already recorded.
     */
    labels: z
      .record(
        z.string().regex(/^[a-zA-Z0-9._/-]{1,63}$/, 'label keys are 1-63 of a-z A-Z 0-9 . _ / -'),
        z.string().max(256, 'label values are at most 256 characters'),
      )
      .refine((labels) => Object.keys(labels).length <= MAX_LABELS, `at most ${MAX_LABELS} labels`)
      .default({}),
    readiness: z.array(probeSchema).max(16).default([]),
    /**
     * How localvm reaches the guest (QEMU): the guest agent, SSH with a per-VM key, or `auto`
     * (unset): whichever answers first, remembered. SSH is set up for VMs booting a disk image
     * unless this is `agent`. OrbStack ignores it (`orbctl run` needs neither).
     */
    transport: z.enum(['auto', 'agent', 'ssh']).optional(),
    timeouts: timeoutsSchema.default({ ...DEFAULT_TIMEOUTS }),
    /**
     * libvirt: the host (a name in the hosts list) the VM runs on, or `auto` for the one with
     * the most free memory that fits it. Not part of the fingerprint: `auto` and the host it
     * chose describe the same machine.
     */
    host: z
      .string({ error: 'must be a string' })
      .regex(VM_NAME_PATTERN, 'must be a host name from the hosts list, or auto')
      .optional(),
    /** libvirt: the connection URI of the host to run on (default LOCALVM_LIBVIRT_URI, else qemu:///system). */
    connect: libvirtUriSchema.optional(),
  })
  .strict();

export const vmSpecSchema = vmSpecObjectSchema
  .superRefine((spec, ctx) => {
    const seen = new Set<string>();
    spec.ports.forEach((p, i) => {
      const key = `${p.protocol}:${p.bind}:${p.host}`;
      if (seen.has(key))
        ctx.addIssue({
          code: 'custom',
          path: ['ports', i, 'host'],
          message: `host port ${p.host}/${p.protocol} is forwarded twice`,
        });
      seen.add(key);
    });
    const disks = new Set<string>();
    spec.disks.forEach((d, i) => {
      if (disks.has(d.name))
        ctx.addIssue({ code: 'custom', path: ['disks', i, 'name'], message: `disk "${d.name}" is declared twice` });
      disks.add(d.name);
    });
    if (spec.initrd && !spec.kernel) ctx.addIssue({ code: 'custom', path: ['initrd'], message: 'needs kernel' });
    for (const i of imageSpecIssues(spec)) ctx.addIssue({ code: 'custom', path: [i.property], message: i.reason });
    if (spec.template !== undefined) {
      for (const key of ['image', 'kernel', 'initrd', 'append', 'userData'] as const) {
        if (spec[key] !== undefined)
          ctx.addIssue({
            code: 'custom',
            path: [key],
            message: `a clone runs its template's guest: ${key} cannot be given with template`,
          });
      }
    }
  })
  // Defaults last: a clone's image, memory and cpus are its template's (filled in when it is
  // planned), so a clone spec keeps the FROM_TEMPLATE markers where nothing was given.
  .transform((spec) => ({ ...spec, ...templateDefaults(spec) }));

/**
 * The defaults that depend on `template`: a clone's image, cpus and memory are its
 * template's, so they stay FROM_TEMPLATE; any other VM gets tiny, 1 CPU, 256 MiB. Only the
 * fields `spec` lacks are returned (Pulumi's Check applies them to the known inputs).
 */
export function templateDefaults(spec: { image?: unknown; cpus?: unknown; memory?: unknown; template?: unknown }): {
  image: string;
  cpus: number;
  memory: number;
} {
  const clone = spec.template !== undefined;
  return {
    image: (spec.image as string | undefined) ?? 'tiny',
    cpus: (spec.cpus as number | undefined) ?? (clone ? FROM_TEMPLATE : 1),
    memory: (spec.memory as number | undefined) ?? (clone ? FROM_TEMPLATE : 256),
  };
}

/**
 * `cpus` and `memory` of a clone spec that gave none: the template's values are used. A clone
 * that gives `memory` must give the template's (its RAM is the template's RAM file).
 */
export const FROM_TEMPLATE = 0;

function problem(ctx: z.RefinementCtx, message: string | undefined): void {
  if (message) ctx.addIssue({ code: 'custom', message });
}

/** A VM spec as written by a user (defaults optional). */
export type VmSpecInput = z.input<typeof vmSpecSchema>;
/** A validated VM spec with every default applied. */
export type VmSpec = z.output<typeof vmSpecSchema>;

/** Validates a VM spec at the boundary. Throws VALIDATION before anything touches disk. */
export function parseVmSpec(input: unknown): VmSpec {
  if (typeof input === 'object' && input !== null && parsedSpecs.has(input)) return input as VmSpec;
  const spec = parseOrThrow(vmSpecSchema, input, 'VM spec');
  parsedSpecs.add(spec);
  return spec;
}

/**
 * Specs that came out of parseVmSpec: the library's entry points validate at the door, and a
 * spec handed on from one entry point to another (the CLI to createVmWithRetry, the provider
 * to createVm) is not validated again. A WeakSet rather than a flag, so a plain object that
 * merely looks parsed is still checked.
 */
const parsedSpecs = new WeakSet<object>();

/** Validates a VM name alone (for operations that take only a name). */
export function parseVmName(input: unknown): string {
  return parseOrThrow(vmNameSchema, input, 'VM name');
}

// ---------------------------------------------------------------------------------------
// exec and shell
// ---------------------------------------------------------------------------------------

const SIZE_UNITS: Record<string, number> = { '': 1, B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** `512M` → 536870912; numbers pass through; anything else → undefined. Pure. */
export function parseSize(value: number | string): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value > 0 ? value : undefined;
  const m = /^(\d+)\s*([KMGT]?)(?:i?B)?$/i.exec(value.trim());
  if (!m) return undefined;
  const n = Number(m[1]) * (SIZE_UNITS[(m[2] ?? '').toUpperCase()] ?? NaN);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/**
 * The parts of a spec that define the machine. Two specs with the same fingerprint
 * describe the same VM, so an existing VM can be adopted instead of recreated.
 * Labels, timeouts and readiness probes do not change the machine and are left out.
 */
export function specFingerprint(spec: VmSpec): string {
  const identity = {
    image: spec.image,
    // Only present for URL images, so the fingerprints of every other spec stay what they were.
    ...(spec.imageChecksum !== undefined ? { imageChecksum: spec.imageChecksum } : {}),
    ...(spec.imageChecksumUrl !== undefined ? { imageChecksumUrl: spec.imageChecksumUrl } : {}),
    kernel: spec.kernel ?? null,
    initrd: spec.initrd ?? null,
    append: spec.append ?? null,
    arch: spec.arch ?? null,
    cpus: spec.cpus,
    memory: spec.memory,
    diskSize: spec.diskSize ?? null,
    disks: spec.disks,
    user: spec.user ?? null,
    userData: spec.userData ? createHash('sha256').update(spec.userData).digest('hex') : null,
    ports: [...spec.ports].sort((a, b) => a.host - b.host),
    isolated: spec.isolated,
    // Only when set, so the fingerprints of VMs that are not clones stay what they were.
    ...(spec.template !== undefined ? { template: spec.template } : {}),
    ...(spec.transport !== undefined && spec.transport !== 'auto' ? { transport: spec.transport } : {}),
  };
  return createHash('sha256').update(JSON.stringify(identity)).digest('hex').slice(0, 16);
}

export * from './execSchema.js';

// ---------------------------------------------------------------------------------------
// libvirt hosts (src/hosts/)
// ---------------------------------------------------------------------------------------

/** A host's name in the hosts list: shaped like a VM name (it is shown in tables and given as `--host`). */
export const hostNameSchema = z
  .string({ error: 'must be a string' })
  .regex(VM_NAME_PATTERN, 'must be 1-63 characters of a-z, 0-9 and "-", starting with a letter or digit');

/**
 * The hosts list (`hosts.json`): host name → libvirt URI. The first host is where a VM goes
 * when its spec names none.
 */
export const hostsFileSchema = z
  .object({
    hosts: z
      .record(hostNameSchema, libvirtUriSchema)
      .refine((h) => Object.keys(h).length > 0, 'must list at least one host'),
  })
  .strict();
export type HostsFile = z.infer<typeof hostsFileSchema>;
