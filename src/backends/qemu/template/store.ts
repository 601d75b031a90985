/**
 * Templates on disk: `<stateDir>/templates/<T>/` holds `template.json`, the RAM file `ram`
 * (clones map it privately, so it must outlive them), the device state `state` (a migration
 * stream, ~1 MB) and the frozen disks, which clones' overlays use as read-only backing files.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { LocalVmError } from '../../../errors.js';
import { runChecked, type CommandRunner } from '../../../runner.js';
import type { VmSpec } from '../../../schema.js';
import { listVmNames, readRecord, vmsDir, type BootRecord } from '../state.js';
import type { TemplateDeps } from './compat.js';

export const TEMPLATE_VERSION = 1;

export interface TemplatePaths {
  dir: string;
  record: string;
  ram: string;
  state: string;
  /** Where the VM that is frozen lives while it is built (removed after). */
  build: string;
  /** The build VM's console, kept for diagnosis. */
  consoleLog: string;
  /** Blank images clones copy (see blankPath). */
  blank: string;
}

/** What `template.json` holds. */
export interface TemplateRecord {
  version: number;
  name: string;
  createdAt: string;
  /** The spec the template was booted from. */
  spec: VmSpec;
  /** Commands run in the guest before it was frozen. */
  setup: string[][];
  deps: TemplateDeps;
  /** Kernel boot as recorded; a disk boot's root is `disks` entry `root`. */
  boot: BootRecord;
  /** Frozen disks (read-only backing files of the clones' overlays); `root` is the boot disk. */
  disks: { id: string; path: string; format: 'qcow2' }[];
  /** Bytes and sha256 of the device-state file: a truncated or corrupt one is refused before a clone is made. */
  stateBytes: number;
  stateSha256: string;
  /** How long freezing took, boot included. */
  createMs: number;
  /** The VM it was frozen from (`template create --from`); absent when booted from `spec`. */
  from?: string | undefined;
  /** Its RAM backend id when not `ram0` (frozen from a running VM: see TemplateLink.ramId). */
  ramId?: string | undefined;
  /**
   * The cloud-init seed the frozen machine had attached (an ISO, or a directory shown through
   * vvfat): part of its device layout, so every clone attaches the same one, read-only.
   */
  seedImage?: string | undefined;
  seedDir?: string | undefined;
  /** Its VMs have the identity port (device layout), and whether the helper was parked on it (template/identity.ts). */
  identityPort?: boolean | undefined;
  identityHelper?: boolean | undefined;
  /** The helper parked is the static program (identity.c), not the shell script. */
  identityProgram?: boolean | undefined;
}

export const templatesDir = (stateDir: string) => join(stateDir, 'templates');

/** Paths of template `name` (already validated as a VM name). Pure. */
export function templatePaths(stateDir: string, name: string): TemplatePaths {
  const dir = join(templatesDir(stateDir), name);
  return {
    dir,
    record: join(dir, 'template.json'),
    ram: join(dir, 'ram'),
    state: join(dir, 'state'),
    build: join(dir, 'build'),
    consoleLog: join(dir, 'console.log'),
    blank: join(dir, 'blank'),
  };
}

/**
 * The blank image a clone copies instead of running qemu-img for it (a process start
 * costs more than the copy): `state.qcow2` (the vmstate disk) or an overlay named like the
 * frozen disk it stands on. Made once with the template (see create.ts's makeBlanks). Pure.
 */
export function blankPath(tp: Pick<TemplatePaths, 'blank'>, file: string): string {
  return join(tp.blank, file);
}

/** The lock name that serialises creating and deleting template `name` (never a VM name: those have no "."). */
export const templateLockName = (name: string) => `${name}.template`;

export function templateNotFound(name: string, vm?: string): LocalVmError {
  return new LocalVmError('NOT_FOUND', `no template named ${name}`, {
    vm,
    hint: 'see `localvm template list`, or make it: localvm template create ' + name,
    details: { template: name },
  });
}

/** Reads `template.json`; NOT_FOUND when there is none, INTERNAL when it is not a template record. */
export async function readTemplate(stateDir: string, name: string, vm?: string): Promise<TemplateRecord> {
  const p = templatePaths(stateDir, name);
  let text: string;
  try {
    text = await readFile(p.record, 'utf8');
  } catch {
    throw templateNotFound(name, vm);
  }
  let record: TemplateRecord;
  try {
    record = JSON.parse(text) as TemplateRecord;
  } catch (error) {
    throw new LocalVmError('INTERNAL', `${p.record} is not valid JSON`, { cause: error, vm });
  }
  if (record.version !== TEMPLATE_VERSION || typeof record.deps !== 'object' || record.deps === null) {
    throw new LocalVmError('CONFLICT', `${p.record} is not a version ${TEMPLATE_VERSION} template record`, {
      vm,
      hint: `rebuild it: localvm template delete ${name} && localvm template create ${name} ...`,
    });
  }
  return record;
}

export async function writeTemplate(stateDir: string, record: TemplateRecord): Promise<void> {
  await writeFileAtomic(templatePaths(stateDir, record.name).record, `${JSON.stringify(record, null, 2)}\n`, {
    mode: 0o600,
  });
}

/** Names of templates with a `template.json` (a template being built has none yet). */
export async function listTemplateNames(stateDir: string): Promise<string[]> {
  const entries = await readdir(templatesDir(stateDir), { withFileTypes: true }).catch(() => []);
  const names: string[] = [];
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    if (await stat(templatePaths(stateDir, e.name).record).catch(() => undefined)) names.push(e.name);
  }
  return names.sort();
}

/** VMs whose record says they are clones of template `name`. */
export async function clonesOf(stateDir: string, name: string): Promise<string[]> {
  const out: string[] = [];
  for (const vm of await listVmNames(stateDir)) {
    const record = await readRecord(join(vmsDir(stateDir), vm, 'vm.json')).catch(() => undefined);
    if (record?.template?.name === name) out.push(vm);
  }
  return out;
}

/** Bytes used by the files directly in `dir` (a template directory is flat). */
export async function sizeOnDisk(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (!e.isFile()) continue;
    const st = await stat(join(dir, e.name)).catch(() => undefined);
    // Allocated blocks: the RAM file is sparse where the guest never wrote.
    if (st) total += st.blocks * 512;
  }
  return total;
}

/** sha256 of a whole file (the device state is about 1 MB). */
export async function fileSha256(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

/** Identity of boot files: path, size and mtime of each, hashed (content hashing a kernel per clone costs too much). */
export async function bootIdentity(files: readonly string[]): Promise<string> {
  const parts: string[] = [];
  for (const f of files) {
    const st = await stat(f).catch(() => undefined);
    parts.push(st ? `${f}:${st.size}:${Math.round(st.mtimeMs)}` : `${f}:missing`);
  }
  return createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, 16);
}

const versions = new Map<string, Promise<string>>();

/** First line of `<binary> --version`, once per binary and process. */
export function qemuVersion(runner: CommandRunner, binary: string): Promise<string> {
  let v = versions.get(binary);
  if (!v) {
    v = runChecked(runner, { file: binary, args: ['--version'] }, { timeoutMs: 10_000 }).then(
      (r) => r.stdout.split('\n')[0]?.trim() ?? '',
    );
    v.catch(() => versions.delete(binary));
    versions.set(binary, v);
  }
  return v;
}

/** The boot files a guest depends on: the kernel and initrd, and the user image under the root overlay. */
export function bootFilesOf(spec: VmSpec, boot: BootRecord): string[] {
  const k = boot.kind === 'kernel' ? boot : boot.kernel;
  const kernel = k ? [k.kernel, ...(k.initrd ? [k.initrd] : [])] : [];
  return boot.kind === 'kernel' ? kernel : [...kernel, resolve(spec.image)];
}
