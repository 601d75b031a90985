/**
 * `image prune`: removes what the cache holds that nothing in this home uses: tiny builds
 * older than the current one, downloaded images, and templates without clones.
 *
 * Who uses what is computed from the records each time (VM records, their overlays' backing
 * files read with `qemu-img info`, template records and their frozen disks), never kept as a
 * users list in the cache: a list has to be written by every create, clone and delete, and a
 * crash, a VM directory removed by hand or a failed write between the two leaves it wrong,
 * in the direction that deletes an image a VM still boots from. The records are what the
 * launch itself reads, so they cannot disagree with it. Standalone disks made `--from` an
 * image are copies and use nothing.
 *
 * The removal re-checks under the owner's lock: a download through `removeDownload` (index
 * lock, backing files read again), a template through `deleteTemplate` (CONFLICT while a
 * clone exists). Only this LOCALVM_HOME's records are read: a cache shared with another
 * home (LOCALVM_CACHE) may hold what that home uses.
 */
import { rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { findTinyImage, listImages } from '../backends/qemu/image/index.js';
import { vmsUsingImage } from '../backends/qemu/image/remote.js';
import { qemuImg } from '../backends/qemu/qemuImg.js';
import { listVmNames, readRecord, vmPaths } from '../backends/qemu/state.js';
import { readTemplate } from '../backends/qemu/template/store.js';
import { withDefaults, type OperationContext } from '../context.js';
import { isLocalVmError, LocalVmError } from '../errors.js';
import { listDownloads, removeDownload } from '../images/index.js';
import { parseQemuImgInfo } from '../parsers.js';
import type { CommandRunner } from '../runner.js';
import { deleteTemplate, listTemplates } from './template.js';

type Ctx = Partial<OperationContext> | undefined;

export type PruneKind = 'tiny' | 'download' | 'template';

export interface PruneItem {
  kind: PruneKind;
  /** The tiny build's hash prefix, the download's id, or the template's name. */
  name: string;
  path: string;
  sizeBytes: number;
  /** Who uses it (empty for what is pruned). */
  usedBy: string[];
}

export interface PruneFacts {
  tiny: { name: string; dir: string; sizeBytes: number }[];
  /** The build new `tiny` VMs use: never pruned. */
  currentTiny?: string | undefined;
  downloads: { id: string; path: string; sizeBytes: number }[];
  templates: { name: string; dir: string; sizeBytes: number; clones: string[]; files: string[] }[];
  /** Each VM's and template's boot kernel and backing files, by user name (`vm X`, `template Y`). */
  users: { user: string; files: string[] }[];
}

/** What `facts` says may go and what stays (with its users). Pure. */
export function planPrune(facts: PruneFacts): { prune: PruneItem[]; keep: PruneItem[] } {
  // A template without clones goes too, so what only it used goes in the same run.
  const goingTemplates = new Set(facts.templates.filter((t) => t.clones.length === 0).map((t) => `template ${t.name}`));
  const usersOf = (pred: (file: string) => boolean) =>
    facts.users.filter((u) => !goingTemplates.has(u.user) && u.files.some(pred)).map((u) => u.user);
  const items: PruneItem[] = [
    ...facts.tiny.map((t) => ({
      kind: 'tiny' as const,
      name: t.name,
      path: t.dir,
      sizeBytes: t.sizeBytes,
      usedBy: [
        ...(t.dir === facts.currentTiny ? ['new tiny VMs (the current build)'] : []),
        ...usersOf((f) => f.startsWith(`${t.dir}/`)),
      ],
    })),
    ...facts.downloads.map((d) => ({
      kind: 'download' as const,
      name: d.id,
      path: d.path,
      sizeBytes: d.sizeBytes,
      usedBy: usersOf((f) => resolve(f) === resolve(d.path)),
    })),
    ...facts.templates.map((t) => ({
      kind: 'template' as const,
      name: t.name,
      path: t.dir,
      sizeBytes: t.sizeBytes,
      usedBy: t.clones.map((c) => `vm ${c}`),
    })),
  ];
  return { prune: items.filter((i) => i.usedBy.length === 0), keep: items.filter((i) => i.usedBy.length > 0) };
}

/** The backing file of the qcow2 `path` (absolute), or undefined when it has none or cannot be read. */
async function backingOf(runner: CommandRunner, path: string): Promise<string | undefined> {
  const r = await runner.run(qemuImg.info(path), { timeoutMs: 30_000 }).catch(() => undefined);
  if (!r || r.exitCode !== 0) return undefined;
  const info = parseQemuImgInfo(r.stdout);
  const backing = info.fullBackingFile ?? info.backingFile;
  return backing === undefined ? undefined : resolve(path, '..', backing);
}

/** Reads the cache and every record of this home; never writes. */
export async function gatherPrune(ctx: OperationContext): Promise<PruneFacts> {
  const { config, runner } = ctx;
  const [tiny, current, downloads, templates, vmNames] = await Promise.all([
    listImages(config),
    findTinyImage(config),
    listDownloads(config),
    listTemplates(ctx),
    listVmNames(config.stateDir),
  ]);
  const users: PruneFacts['users'] = [];
  for (const name of vmNames) {
    const record = await readRecord(vmPaths(config.stateDir, config.runDir, name).record).catch(() => undefined);
    if (!record) continue;
    const files: string[] = [];
    if (record.boot.kind === 'kernel') files.push(record.boot.kernel);
    else {
      const backing = await backingOf(runner, record.boot.image);
      if (backing) files.push(backing);
    }
    users.push({ user: `vm ${name}`, files });
  }
  const templateFacts: PruneFacts['templates'] = [];
  for (const t of templates) {
    const record = await readTemplate(config.stateDir, t.name).catch(() => undefined);
    const files: string[] = [];
    if (record?.boot.kind === 'kernel') files.push(record.boot.kernel);
    for (const d of record?.disks ?? []) {
      const backing = await backingOf(runner, d.path);
      if (backing) files.push(backing);
    }
    users.push({ user: `template ${t.name}`, files });
    templateFacts.push({ name: t.name, dir: t.dir, sizeBytes: t.sizeBytes, clones: t.clones, files });
  }
  return {
    tiny: tiny.map((i) => ({ name: `tiny-${i.hash.slice(0, 12)}`, dir: i.dir, sizeBytes: i.sizeBytes })),
    currentTiny: current?.dir,
    downloads: downloads.map((d) => ({ id: d.id, path: d.path, sizeBytes: d.sizeBytes })),
    templates: templateFacts,
    users,
  };
}

export interface PruneReport {
  dryRun: boolean;
  /** What was removed (or, with `dryRun`, would be). */
  pruned: PruneItem[];
  /** What stays, with who uses it. */
  kept: PruneItem[];
  /** Found unused but kept after all: in use by the time it was removed. */
  skipped: (PruneItem & { reason: string })[];
  freedBytes: number;
}

/**
 * Removes old tiny builds, downloads and templates nothing in this home uses (with
 * `dryRun`, only lists them with their sizes). Idempotent: a second run prunes nothing.
 */
export async function pruneImages(options: { dryRun?: boolean | undefined } = {}, ctx?: Ctx): Promise<PruneReport> {
  const c = withDefaults(ctx);
  const dryRun = Boolean(options.dryRun);
  const first = planPrune(await gatherPrune(c));
  const pruned: PruneItem[] = [];
  const skipped: PruneReport['skipped'] = [];
  // Templates first: the builds and downloads planned to go may be used by nothing but them.
  const order: PruneKind[] = ['template', 'download', 'tiny'];
  const wanted = [...first.prune].sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind));
  let now: ReturnType<typeof planPrune> | undefined;
  const stillUnused = async (item: PruneItem) => {
    // Looked at again after the templates went: one that could not go keeps what it uses.
    now ??= planPrune(await gatherPrune(c));
    return now.prune.some((p) => p.kind === item.kind && p.path === item.path);
  };
  for (const item of wanted) {
    if (dryRun) {
      pruned.push(item);
      continue;
    }
    try {
      if (item.kind === 'template') {
        await deleteTemplate(item.name, c);
      } else if (!(await stillUnused(item))) {
        throw new LocalVmError('CONFLICT', 'in use by the time it was to be removed');
      } else if (item.kind === 'download') {
        // Under the index lock, the VMs backing on it are read again.
        await removeDownload(c.config, item.name, (path, entry) => vmsUsingImage(c.config, c.runner, path, entry));
      } else {
        // An old build is never chosen by a new create (the newest build wins): no lock needed.
        await rm(item.path, { recursive: true, force: true });
      }
      pruned.push(item);
    } catch (error) {
      const reason = isLocalVmError(error) ? `${error.code}: ${error.message}` : (error as Error).message;
      skipped.push({ ...item, reason });
    }
  }
  return { dryRun, pruned, kept: first.keep, skipped, freedBytes: pruned.reduce((n, i) => n + i.sizeBytes, 0) };
}
