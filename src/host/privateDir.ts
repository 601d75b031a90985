/**
 * Private directories: the ones localvm keeps its state, locks and control sockets in.
 * A directory that another user can write to, or that is another user's, lets that user
 * swap a socket or a lock under localvm (the run dir defaults to the predictable
 * `/tmp/localvm-<uid>`), so each one is checked before it is used and refused, not repaired,
 * when it is unsafe. The checks are made before anything is created inside the path, and
 * on directories no other user can change, so they cannot be raced.
 */
import { chmod, lstat, mkdir, realpath } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { LocalVmError } from '../errors.js';
import { hostFsError } from './fs.js';

const uid = () => process.getuid?.() ?? 0;

function unsafe(path: string, problem: string, hint: string): LocalVmError {
  return new LocalVmError('HOST_FS', `refusing to use ${path}: ${problem}`, {
    hint,
    details: { path, problem },
  });
}

const ownerHint = (path: string) =>
  `another user may have created it to intercept localvm: remove it (rm -r ${path}) or point LOCALVM_RUN_DIR / LOCALVM_HOME elsewhere`;

/**
 * An ancestor is safe when only root or the current user can change it: owned by one of
 * them and not writable by group or others, unless sticky (like /tmp, where nobody can
 * rename another user's entry).
 */
function checkAncestor(path: string, st: Stats): void {
  if (st.uid !== 0 && st.uid !== uid()) {
    throw unsafe(path, `it is owned by uid ${st.uid}, not by root or uid ${uid()}`, ownerHint(path));
  }
  if (st.isSymbolicLink()) return; // the link itself is trusted by its owner; its target is checked too
  if ((st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) {
    throw unsafe(
      path,
      `it is writable by other users (mode ${(st.mode & 0o7777).toString(8)})`,
      `make it private (chmod go-w ${path}) or point LOCALVM_RUN_DIR / LOCALVM_HOME elsewhere`,
    );
  }
}

/** The directories from `/` down to `path` (absolute), `/` first. Pure. */
export function pathChain(path: string): string[] {
  const out: string[] = [];
  for (let p = path; ; p = dirname(p)) {
    out.unshift(p);
    if (dirname(p) === p) return out;
  }
}

async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if ((error as NodeJS.ErrnoException).code === 'ENOTDIR') {
      throw unsafe(path, 'a part of the path is not a directory', `check the path (ls -ld ${dirname(path)})`);
    }
    throw hostFsError(error, `inspect ${path}`, path);
  }
}

/**
 * The leaf is localvm's own: a real directory (not a symlink) owned by the current user
 * with no group or other access. A directory of ours that others may only read or enter
 * (an older localvm made the cache 0755) is tightened to 0700; writable by others is refused.
 */
async function checkLeaf(path: string, st: Stats): Promise<void> {
  if (st.isSymbolicLink()) {
    throw unsafe(
      path,
      'it is a symbolic link',
      `remove the link (rm ${path}) and run again; localvm creates it itself`,
    );
  }
  if (!st.isDirectory()) {
    throw unsafe(path, 'it is not a directory', `move it away (mv ${path} ${path}.old) or point localvm elsewhere`);
  }
  if (st.uid !== uid()) throw unsafe(path, `it is owned by uid ${st.uid}, not by uid ${uid()}`, ownerHint(path));
  const mode = st.mode & 0o777;
  if ((mode & 0o022) !== 0) {
    throw unsafe(
      path,
      `it is writable by other users (mode ${mode.toString(8)})`,
      `its content cannot be trusted: remove it (rm -r ${path}) and run again`,
    );
  }
  if ((mode & 0o077) !== 0)
    await chmod(path, 0o700).catch((error: unknown) => {
      throw hostFsError(error, `make ${path} private`, path);
    });
}

/**
 * Checks the existing part of the path to `target`: the leaf (when it exists) must be
 * private, every existing ancestor safe, also through symlinks. Returns the chain and how
 * far it exists (index of the deepest existing component).
 */
async function checkExisting(target: string): Promise<{ chain: string[]; existing: number }> {
  const chain = pathChain(target);
  let existing = -1;
  const stats: Stats[] = [];
  for (const [i, p] of chain.entries()) {
    const st = await lstatOrUndefined(p);
    if (!st) break;
    stats.push(st);
    existing = i;
  }
  for (let i = 0; i <= existing; i++) {
    if (i === chain.length - 1) await checkLeaf(chain[i]!, stats[i]!);
    else checkAncestor(chain[i]!, stats[i]!);
  }
  // Through a symlinked ancestor, the directories it leads to must be as safe as the link.
  const deepestAncestor = chain[Math.min(existing, chain.length - 2)];
  if (deepestAncestor !== undefined && existing >= 0) {
    const real = await realpath(deepestAncestor).catch((error: unknown) => {
      throw hostFsError(error, `resolve ${deepestAncestor}`, deepestAncestor);
    });
    if (real !== deepestAncestor) for (const p of pathChain(real)) checkAncestor(p, await lstat(p));
  }
  return { chain, existing };
}

/**
 * True when `dir` exists and is private (as mkdirPrivate leaves it), false when it does not
 * exist below safe ancestors; HOST_FS when it or an ancestor is unsafe. Creates nothing.
 */
export async function privateDirExists(dir: string): Promise<boolean> {
  const { chain, existing } = await checkExisting(resolve(dir));
  return existing === chain.length - 1;
}

/**
 * Creates `dir` (and missing parents) with mode 0700, or verifies the existing one: `dir`
 * and every directory created for it must be the current user's and private, and every
 * existing ancestor (also after resolving symlinks) must be changeable only by root or
 * the current user. HOST_FS names the path and what is wrong; nothing is created under
 * an unsafe ancestor.
 */
export async function mkdirPrivate(dir: string): Promise<void> {
  const target = resolve(dir);
  const { chain, existing } = await checkExisting(target);
  if (existing === chain.length - 1) return;
  try {
    await mkdir(target, { recursive: true, mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOTDIR' || (error as NodeJS.ErrnoException).code === 'EEXIST') {
      throw unsafe(target, 'a part of the path is not a directory', `check the path (ls -ld ${dirname(target)})`);
    }
    throw hostFsError(error, `create directory ${target}`, target);
  }
  // What we just created must be what is there now (its parent is safe, so this holds unless root interferes).
  for (const p of chain.slice(existing + 1)) {
    const st = await lstat(p);
    if (p === target) await checkLeaf(p, st);
    else checkAncestor(p, st);
  }
}
