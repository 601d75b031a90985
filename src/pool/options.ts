/**
 * The pool's input, validated once at the door (createPool, pool.run): sizes within reason,
 * exactly one of template and spec, guest paths absolute and free of `..`, bounded outputs.
 */
import { z } from 'zod';
import type { OperationContext } from '../context.js';
import { argvSchema, execOptionsSchema, MAX_EXEC_TIMEOUT_MS, parseOrThrow, vmNameSchema } from '../schema.js';
import type { Clock } from '../time/clock.js';

/** More VMs than this in one pool is a mistake on a workstation (each is a QEMU process). */
export const MAX_POOL_SIZE = 64;
/** The longest a pool VM may sit idle before it is replaced: a day. */
const MAX_TTL_MS = 86_400_000;
/** Outputs (stdout, stderr, collected files) default to 1 MiB each and may be raised to 64 MiB. */
export const DEFAULT_MAX_OUTPUT_BYTES = 1 << 20;
const MAX_OUTPUT_BYTES = 64 << 20;

const count = (what: string, min: number) =>
  z
    .number('must be a number')
    .int('must be a whole number')
    .min(min, `must be at least ${min}`)
    .max(MAX_POOL_SIZE, `must be at most ${MAX_POOL_SIZE} (${what}: each VM is a QEMU process)`);

export const poolOptionsSchema = z
  .object(
    {
      template: vmNameSchema.optional(),
      spec: z.record(z.string(), z.unknown(), 'must be a VM spec object').optional(),
      min: count('min', 0).default(1),
      max: count('max', 1).optional(),
      idleTtlMs: z
        .number('must be a number')
        .int('must be whole milliseconds')
        .positive('must be positive')
        .max(MAX_TTL_MS, 'must be at most a day')
        .default(600_000),
      refillConcurrency: z.number('must be a number').int('must be a whole number').min(1).max(16).default(2),
      prefix: z
        .string('must be a string')
        .regex(
          /^[a-z0-9][a-z0-9-]{0,23}$/,
          'must be 1-24 characters of a-z, 0-9 and "-", starting with a letter or digit',
        )
        .default('pool-'),
      /** Idle VMs kept resumed and answered (the rest held paused): acquire of those is a dequeue. */
      warm: count('warm', 0).default(0),
    },
    'must be an object',
  )
  .superRefine((o, ctx) => {
    if ((o.template === undefined) === (o.spec === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['template'], message: 'give exactly one of template and spec' });
    }
    if (o.max !== undefined && o.min > o.max) {
      ctx.addIssue({ code: 'custom', path: ['min'], message: `must not exceed max (${o.max})` });
    }
    if (o.warm > o.min) {
      ctx.addIssue({ code: 'custom', path: ['warm'], message: `must not exceed min (${o.min})` });
    }
  })
  .transform((o) => ({ ...o, max: o.max ?? Math.max(o.min, 4) }));

export type PoolOptionsParsed = z.output<typeof poolOptionsSchema>;

export interface PoolOptions {
  /** Clone this template (QEMU): idle VMs are held paused, resumed on acquire. */
  template?: string;
  /** Or boot VMs of this spec (its `name` is ignored): idle VMs run, acquire is a dequeue. */
  spec?: Record<string, unknown>;
  /** Idle VMs kept ready (default 1). */
  min?: number;
  /** VMs at most, idle + being made + leased (default max(min, 4), at most 64). */
  max?: number;
  /** Idle VMs older than this are replaced (default 10 min). */
  idleTtlMs?: number;
  /** VMs made at once in the background (default 2). */
  refillConcurrency?: number;
  /** Names of the pool's VMs start with this (default `pool-`): leftovers are found by it. */
  prefix?: string;
  /** Idle VMs of a template pool kept resumed, so acquiring one is a dequeue (default 0: CPU ~0 when idle). */
  warm?: number;
  clock?: Clock;
  context?: Partial<OperationContext>;
}

const noNul = (s: string) => !s.includes('\0');

/** An absolute guest path with no `..` segment and no NUL. */
export const guestPathSchema = z
  .string('must be a string')
  .refine((p) => p.startsWith('/'), 'must be an absolute guest path')
  .refine((p) => !p.split('/').includes('..'), 'must not contain ".."')
  .refine(noNul, 'must not contain NUL')
  .refine((p) => p.length <= 4096, 'must be at most 4096 characters');

export const jobSchema = z
  .object(
    {
      argv: argvSchema.optional(),
      script: z.string('must be a string').min(1, 'must not be empty').refine(noNul, 'must not contain NUL').optional(),
      files: z
        .record(
          guestPathSchema,
          z.union([z.string(), z.instanceof(Uint8Array)], 'must be a string or a Uint8Array'),
          'must be an object of guest paths to contents',
        )
        .refine((f) => Object.keys(f).every((p) => !p.endsWith('/')), 'a file path must not end with "/"')
        .default({}),
      env: execOptionsSchema.shape.env,
      cwd: guestPathSchema.optional(),
      stdin: execOptionsSchema.shape.stdin,
      timeoutMs: z
        .number('must be a number')
        .int('must be whole milliseconds')
        .positive('must be positive')
        .max(MAX_EXEC_TIMEOUT_MS, 'must be at most 24 h')
        .default(60_000),
      /** Guest files, or directories (ending in "/"), read back after the job. */
      collect: z.array(guestPathSchema, 'must be an array of guest paths').max(256).default([]),
      maxOutputBytes: z
        .number('must be a number')
        .int('must be a whole number')
        .positive('must be positive')
        .max(MAX_OUTPUT_BYTES, `must be at most ${MAX_OUTPUT_BYTES} (64 MiB)`)
        .default(DEFAULT_MAX_OUTPUT_BYTES),
      /** Waiting for a VM from the pool (default: the pool's, see AcquireOptions.timeoutMs). */
      acquireTimeoutMs: z.number('must be a number').int().positive().max(MAX_EXEC_TIMEOUT_MS).optional(),
      signal: z.instanceof(AbortSignal, { error: 'must be an AbortSignal' }).optional(),
    },
    'must be an object',
  )
  .strict()
  .superRefine((j, ctx) => {
    if ((j.argv === undefined) === (j.script === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['argv'], message: 'give exactly one of argv and script' });
    }
  });

/** A job for `pool.run` (see executor.ts for what each part does). */
export interface JobInput {
  /** The command (no shell); or `script`, run as `/bin/sh -c script`. Exactly one. */
  argv?: string[];
  script?: string;
  /** Guest files written before the command runs (parent directories are created). */
  files?: Record<string, string | Uint8Array>;
  env?: Record<string, string>;
  cwd?: string;
  stdin?: string | Uint8Array;
  /** The command's limit (default 60 s): past it the VM is destroyed and `timedOut` is true. */
  timeoutMs?: number;
  /** Guest files, or directories ending in "/", read back after the command. */
  collect?: string[];
  /** Each output (stdout, stderr) and all collected files together are cut at this (default 1 MiB). */
  maxOutputBytes?: number;
  /** How long to wait for a VM from the pool (default: as long as making one may take, at least 60 s). */
  acquireTimeoutMs?: number;
  signal?: AbortSignal;
}
export type Job = z.output<typeof jobSchema>;

export function parsePoolOptions(input: unknown): PoolOptionsParsed {
  const { clock: _clock, context: _context, ...rest } = (input ?? {}) as PoolOptions;
  return parseOrThrow(poolOptionsSchema, rest, 'pool options');
}

export function parseJob(input: unknown): Job {
  return parseOrThrow(jobSchema, input, 'job');
}
