/**
 * The facts doctor decides on, read from the state directory, the image cache and /proc.
 * Never writes. Cheap on purpose (one directory listing and one record per VM, one pass over
 * /proc, no child processes): doctor is meant to run before every CI job.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { lstat, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { LocalVmConfig } from '../../config.js';
import { exists } from '../../host/fs.js';
import { holderAlive, readLockHolder } from '../../host/lock.js';
import { parseProcStat, probeProcess } from '../../host/proc.js';
import { findTinyImage, listImages } from '../../backends/qemu/image/index.js';
import {
  identitySocketOf,
  listVmNames,
  locksDir,
  readPidFile,
  readRecord,
  vmPaths,
  vmsDir,
} from '../../backends/qemu/state.js';
import { processAlive, readSession, sessionsDir } from '../../vitest/session.js';
import { neededFiles } from './classifyVm.js';
import { readQcow2Backing } from './qcow2.js';
import type { Entry, HomeFacts, LockFact, Needed, ProcFact, QemuFact, SessionFact, VmFacts } from './types.js';

/** The VM name in a QEMU argv (`-name NAME` or `-name guest=NAME,...`). Pure. */
export function qemuNameOf(args: readonly string[]): string | undefined {
  const i = args.indexOf('-name');
  const value = i >= 0 ? args[i + 1] : undefined;
  if (value === undefined) return undefined;
  const parts = value.split(',');
  const guest = parts.find((p) => p.startsWith('guest='));
  return guest ? guest.slice('guest='.length) : parts[0];
}

/**
 * The QEMU of this home that a NUL-separated /proc cmdline describes: its `-pidfile` lies
 * in a VM directory under `vmsRoot` (our argv always has one). Pure.
 */
export function ourQemu(cmdline: string, vmsRoot: string): { dir: string; vm: string; qemuName?: string } | undefined {
  if (!cmdline.includes(`-pidfile\0${vmsRoot}/`)) return undefined;
  const args = cmdline.split('\0');
  const pidFile = args[args.indexOf('-pidfile') + 1];
  if (!pidFile) return undefined;
  const dir = dirname(pidFile);
  if (dirname(dir) !== vmsRoot) return undefined;
  return { dir, vm: basename(dir), qemuName: qemuNameOf(args) };
}

/**
 * Every live (non-zombie) QEMU whose VM directory is under `stateDir`, from one pass over
 * /proc. Read synchronously on purpose: procfs reads never wait for a disk, and a hundred
 * small reads through the libuv thread pool (four syscalls each) cost several times more
 * than the few milliseconds the loop is held.
 */
export function scanQemus(stateDir: string): QemuFact[] {
  const root = vmsDir(stateDir);
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  const found: QemuFact[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const ours = ourQemu(readFileSync(`/proc/${entry}/cmdline`, 'utf8'), root);
      if (!ours) continue;
      const st = parseProcStat(readFileSync(`/proc/${entry}/stat`, 'utf8'));
      if (!st || st.state === 'Z' || st.state === 'X') continue;
      found.push({ pid: st.pid, zombie: false, startTime: st.startTime, ...ours });
    } catch {
      // exited while we looked
    }
  }
  return found;
}

async function procFact(pid: number | undefined): Promise<ProcFact | undefined> {
  const p = await probeProcess(pid);
  if (!p?.stat) return undefined;
  return {
    pid: p.stat.pid,
    zombie: p.stat.state === 'Z' || p.stat.state === 'X',
    startTime: p.stat.startTime,
    qemuName: p.cmdline ? qemuNameOf(p.cmdline.split('\0')) : undefined,
  };
}

function entryKind(e: { isFile(): boolean; isDirectory(): boolean; isSocket(): boolean }): Entry['kind'] {
  return e.isFile() ? 'file' : e.isDirectory() ? 'dir' : e.isSocket() ? 'socket' : 'other';
}

/** `exists`, memoized for one gathering: fifty VMs share one tiny kernel. */
export type ExistsCache = (path: string) => Promise<boolean>;
export function existsCache(): ExistsCache {
  const seen = new Map<string, Promise<boolean>>();
  return (path) => {
    let p = seen.get(path);
    if (!p) seen.set(path, (p = exists(path)));
    return p;
  };
}

/** The facts about VM `name` (its directory, record, processes, sockets and needed files). */
export async function gatherVm(
  config: LocalVmConfig,
  name: string,
  present: ExistsCache = existsCache(),
): Promise<VmFacts> {
  const p = vmPaths(config.stateDir, config.runDir, name);
  const listing = await readdir(p.dir, { withFileTypes: true }).catch(() => undefined);
  const facts: VmFacts = { name, dir: p.dir, procs: [], sockets: [], needed: [] };
  if (!listing) return facts;
  facts.entries = listing.map((e) => ({ name: e.name, kind: entryKind(e) }));
  try {
    facts.record = await readRecord(p.record);
  } catch (error) {
    facts.recordError = (error as Error).message;
    return facts;
  }
  const inDir = new Set(facts.entries.map((e) => join(p.dir, e.name)));
  const has = (path: string) => (dirname(path) === p.dir ? Promise.resolve(inDir.has(path)) : present(path));
  facts.pidFilePid = inDir.has(p.pidFile) ? await readPidFile(p.pidFile) : undefined;
  const record = facts.record;
  if (!record) return facts;
  const pids = new Set([facts.pidFilePid, record.pid].filter((x): x is number => x !== undefined));
  facts.procs = (await Promise.all([...pids].map(procFact))).filter((x): x is ProcFact => x !== undefined);
  for (const s of [record.paths.qmpSocket, record.paths.qgaSocket, identitySocketOf(record.paths)]) {
    const there =
      dirname(s) === p.dir
        ? inDir.has(s)
        : await lstat(s).then(
            () => true,
            () => false,
          );
    if (there) facts.sockets.push(s);
  }
  const needed: Needed[] = [];
  for (const n of neededFiles(record)) {
    const ok = await has(n.path);
    needed.push({ ...n, present: ok });
    if (ok && (n.what === 'overlay' || n.what === 'disk')) {
      const backing = await readQcow2Backing(n.path);
      if (backing) needed.push({ path: backing, what: 'backing image', present: await present(backing) });
    }
  }
  facts.needed = needed;
  return facts;
}

async function lockFact(path: string, now: number): Promise<LockFact | undefined> {
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile()) return undefined;
  const holder = await readLockHolder(path);
  return { path, holder, holderAlive: holder ? await holderAlive(holder) : false, ageMs: now - st.mtimeMs };
}

/** The lock files of the home: per-VM locks and the session records' locks. */
export async function gatherLocks(stateDir: string): Promise<LockFact[]> {
  const now = Date.now();
  const paths: string[] = [];
  for (const dir of [locksDir(stateDir), sessionsDir(stateDir)]) {
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      if (name.endsWith('.lock') || name.includes('.lock.stale-')) paths.push(join(dir, name));
    }
  }
  return (await Promise.all(paths.map((p) => lockFact(p, now)))).filter((l): l is LockFact => l !== undefined);
}

/** The fixture session records and whether their runners live. */
export async function gatherSessions(stateDir: string): Promise<SessionFact[]> {
  const dir = sessionsDir(stateDir);
  const files = (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith('.json'));
  return Promise.all(
    files.map(async (name) => {
      const file = join(dir, name);
      const record = await readSession(file).catch(() => undefined);
      return { file, record, runnerAlive: record ? await processAlive(record.pid, record.startTime) : false };
    }),
  );
}

export interface GatherOptions {
  /** Lock files the caller holds, so its own lock does not make a VM look busy. */
  selfHeld?: string[];
  /** Only this VM's directory (a fix re-checking one VM under its lock); processes, locks and sessions all. */
  only?: string;
}

/** Everything doctor looks at. */
export async function gatherHome(config: LocalVmConfig, options: GatherOptions = {}): Promise<HomeFacts> {
  const present = existsCache();
  const only = options.only;
  const [names, qemus, locks, sessions, images, current] = await Promise.all([
    only === undefined ? listVmNames(config.stateDir) : Promise.resolve([only]),
    Promise.resolve().then(() => scanQemus(config.stateDir)),
    gatherLocks(config.stateDir),
    gatherSessions(config.stateDir),
    listImages(config),
    findTinyImage(config),
  ]);
  const vms = await Promise.all(names.map((n) => gatherVm(config, n, present)));
  return {
    stateDir: config.stateDir,
    testPrefix: config.testPrefix,
    vms,
    qemus,
    locks,
    sessions,
    images: images.map((i) => ({ dir: i.dir, name: i.name, builtAt: i.builtAt, sizeBytes: i.sizeBytes })),
    currentImage: current?.dir,
    selfHeld: options.selfHeld ?? [],
  };
}
