/**
 * What the pure halves of the provider share: the unknown sentinel, comparisons that
 * survive a protobuf Struct, and `checkWith` (a zod check that lets unknowns through).
 * No I/O, no environment.
 */
import { z } from 'zod';
import type { ValidationIssue } from '../errors.js';
import { toIssues } from '../schema.js';

/** The value the engine sends for an input it does not know yet (during preview). */
export const UNKNOWN = '04da6b54-80e4-46f7-96ec-b56ff0331ba9';

/** Keys the provider adds to inputs that are not part of any schema. */
export const PROVIDER_KEYS = new Set(['__provider', 'providerVersion']);

export type Props = Record<string, unknown>;

export interface CheckOutcome {
  inputs: Props;
  failures: ValidationIssue[];
}

export interface DiffOutcome {
  changes: boolean;
  replaces: string[];
  /** Keys that changed and can be applied in place. */
  updates: string[];
  deleteBeforeReplace: boolean;
}

/** Dotted paths (`ports.0.host`) of every unknown value inside `value`. */
export function unknownPaths(value: unknown, prefix: string[] = []): string[] {
  if (value === UNKNOWN) return [prefix.join('.')];
  if (Array.isArray(value)) return value.flatMap((v, i) => unknownPaths(v, [...prefix, String(i)]));
  if (value !== null && typeof value === 'object')
    return Object.entries(value).flatMap(([k, v]) => unknownPaths(v, [...prefix, k]));
  return [];
}

/** True when `value` holds the unknown sentinel anywhere. */
export function containsUnknown(value: unknown): boolean {
  return unknownPaths(value).length > 0;
}

/** A JSON copy without `undefined` keys (protobuf Structs reject them). */
export function plain<T>(value: T): T {
  return value === undefined ? value : (JSON.parse(JSON.stringify(value)) as T);
}

/** Key-order-independent JSON, so values that went through a protobuf Struct compare equal. */
export function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

export function sameValue(a: unknown, b: unknown): boolean {
  return stableJson(a) === stableJson(b);
}

export function withoutProviderKeys(props: Props, alsoDrop: readonly string[] = []): Props {
  return Object.fromEntries(
    Object.entries(props).filter(([k, v]) => !PROVIDER_KEYS.has(k) && !alsoDrop.includes(k) && v !== undefined),
  );
}

/**
 * Each top-level input normalised on its own (defaults applied, `ports.0.protocol` filled
 * in) unless it is or holds an unknown, which stays as it is. A key missing from the input
 * gets its default. Used when the whole object cannot be parsed only because of unknowns.
 */
function defaultedKnown(shape: Record<string, z.ZodType>, input: Props): Props {
  const out: Props = {};
  for (const key of new Set([...Object.keys(shape), ...Object.keys(input)])) {
    const value = input[key];
    const schema = shape[key];
    if (containsUnknown(value) || !schema) {
      if (value !== undefined) out[key] = value;
      continue;
    }
    const r = schema.safeParse(value);
    const v = r.success ? r.data : value;
    if (v !== undefined) out[key] = v;
  }
  return out;
}

/**
 * Validates `input` with `schema`. Issues about a value that is (or is inside) an unknown
 * are dropped: preview must pass when inputs depend on resources not created yet. The
 * inputs come back normalised (defaults applied) whenever the only problems are unknowns,
 * so that preview's diff compares like with like and shows what `up` will do; with real
 * failures they come back as sent.
 */
export function checkWith(
  schema: z.ZodType,
  shape: Record<string, z.ZodType>,
  news: Props,
  pick: (p: Props) => Props,
): CheckOutcome {
  const input = pick(news);
  const unknown = unknownPaths(input);
  const result = schema.safeParse(input);
  const passthrough = Object.fromEntries(Object.entries(news).filter(([k]) => PROVIDER_KEYS.has(k)));
  if (result.success) {
    return { inputs: plain({ ...(result.data as Props), ...passthrough }), failures: [] };
  }
  const failures = toIssues(result.error).filter(
    (issue) =>
      !unknown.some(
        (u) => issue.property === u || issue.property.startsWith(`${u}.`) || u.startsWith(`${issue.property}.`),
      ),
  );
  if (failures.length > 0) return { inputs: plain(news), failures };
  return { inputs: plain({ ...defaultedKnown(shape, input), ...passthrough }), failures: [] };
}
