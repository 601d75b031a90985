/** What the benchmarks compute from their samples, once: order statistics and a QEMU's RSS. */
import { readFile } from 'node:fs/promises';
import type { OperationContext } from '../src/context.js';
import type { TemplateInfo } from '../src/operations/template.js';
import { deleteVm, vmInfo } from '../src/operations/vm.js';

export const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);

/** The middle sample (the mean of the two middle ones for an even count). */
export const median = (xs: number[]) => {
  const s = sorted(xs);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** The nearest-rank quantile `p` (0..1) of a non-empty sample. */
export const quantile = (xs: number[], p: number) =>
  sorted(xs)[Math.min(xs.length - 1, Math.max(0, Math.ceil(xs.length * p) - 1))]!;

export const p95 = (xs: number[]) => quantile(xs, 0.95);

export const round = (x: number) => Math.round(x);

/** Resident memory of process `pid` in KiB (NaN when it cannot be read). */
export async function rssKiB(pid: number | undefined): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
}

/** The RSS (KiB) of each VM's QEMU once they have all idled for `settleMs`; the VMs are deleted after. */
export async function idleRssThenDelete(names: string[], settleMs: number, ctx: OperationContext): Promise<number[]> {
  await new Promise((r) => setTimeout(r, settleMs));
  const rss: number[] = [];
  for (const name of names) rss.push(await rssKiB((await vmInfo(name, ctx)).pid));
  for (const name of names) await deleteVm(name, ctx);
  return rss;
}

/** What the template benches record of the template they measured. */
export function templateRow(
  t: Pick<TemplateInfo, 'sizeBytes' | 'stateBytes' | 'identity' | 'helper'>,
  createMs: number,
): Record<string, unknown> {
  return {
    createMs: round(createMs),
    sizeBytes: t.sizeBytes,
    stateBytes: t.stateBytes,
    identity: t.identity,
    helper: t.helper,
  };
}
