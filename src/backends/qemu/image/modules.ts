/**
 * The kernel modules the tiny guest loads, copied uncompressed from the kernel package and
 * put in dependency order. The .deb ships no modules.dep, so the order comes from each
 * module's `depends=` field in its `.modinfo` section.
 */
import { copyFile, mkdir, readFile, readdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { LocalVmError } from '../../../errors.js';
import type { CommandRunner } from '../../../runner.js';
import { elfSection } from './elf.js';
import { step } from './steps.js';

/**
 * Loaded by /init before the agent starts: the agent's virtio-serial port needs the virtio
 * ones. The power button (button, and evdev for acpid to read it) must work by the time the
 * agent answers: a `stop` right after readiness presses it once, and the kernel drops a
 * press that no driver is bound for.
 */
export const EARLY_MODULES = [
  'virtio_ring',
  'virtio_pci_modern_dev',
  'virtio_pci_legacy_dev',
  'virtio',
  'virtio_pci',
  'virtio_console',
  'button',
  'evdev',
] as const;

/** Loaded in the background while the agent starts. */
export const LATE_MODULES = [
  'virtio_blk',
  'failover',
  'net_failover',
  'virtio_net',
  'virtio_rng',
  'jbd2',
  'mbcache',
  'crc16',
  // ext4 does not declare it, but cannot mount without a crc32c implementation.
  'crc32c_generic',
  'ext4',
] as const;

/** The modules a kernel module depends on, from its `.modinfo` section's `depends=` field. */
export function parseModinfoDepends(modinfo: Uint8Array): string[] {
  const text = Buffer.from(modinfo.buffer, modinfo.byteOffset, modinfo.byteLength).toString('latin1');
  for (const entry of text.split('\0')) {
    if (!entry.startsWith('depends=')) continue;
    return entry
      .slice('depends='.length)
      .split(',')
      .map((d) => normalizeModuleName(d.trim()))
      .filter((d) => d !== '');
  }
  return [];
}

/** Module names treat `-` and `_` alike (`virtio-rng.ko` is module `virtio_rng`). */
export function normalizeModuleName(name: string): string {
  return name.replace(/\.ko(\.(xz|gz|zst))?$/, '').replaceAll('-', '_');
}

/**
 * Orders `modules` so that each comes after everything it depends on; ties keep the input
 * order. Throws INTERNAL on a cycle or on a dependency missing from `depends`.
 */
export function orderModules(modules: readonly string[], depends: ReadonlyMap<string, readonly string[]>): string[] {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, path: string[]) => {
    const s = state.get(name);
    if (s === 'done') return;
    if (s === 'visiting') {
      throw new LocalVmError('INTERNAL', `kernel module dependency cycle: ${[...path, name].join(' -> ')}`);
    }
    const deps = depends.get(name);
    if (!deps) {
      throw new LocalVmError(
        'INTERNAL',
        `kernel module ${name} is unknown (needed by ${path.join(' -> ') || 'the image'})`,
      );
    }
    state.set(name, 'visiting');
    for (const d of deps) visit(d, [...path, name]);
    state.set(name, 'done');
    order.push(name);
  };
  for (const m of modules) visit(m, []);
  return order;
}

async function indexModules(moduleRoot: string): Promise<Map<string, string>> {
  const index = new Map<string, string>();
  for (const entry of await readdir(moduleRoot, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !/\.ko(\.(xz|gz))?$/.test(entry.name)) continue;
    index.set(normalizeModuleName(entry.name), join(entry.parentPath, entry.name));
  }
  return index;
}

/** Copies the wanted modules (and their dependencies), uncompressed, into `dest`; returns load order. */
export async function stageModules(
  moduleRoot: string,
  dest: string,
  work: string,
  runner: CommandRunner,
): Promise<{ early: string[]; late: string[] }> {
  const index = await indexModules(moduleRoot);
  await mkdir(dest, { recursive: true });
  const depends = new Map<string, string[]>();
  const queue: string[] = [...EARLY_MODULES, ...LATE_MODULES];
  while (queue.length > 0) {
    const name = queue.shift() as string;
    if (depends.has(name)) continue;
    const source = index.get(name);
    if (!source) throw new LocalVmError('NOT_FOUND', `kernel module ${name} is not in the kernel package`);
    const target = join(dest, `${name}.ko`);
    await decompressModule(source, target, work, runner);
    const modinfo = elfSection(await readFile(target), '.modinfo');
    if (!modinfo) throw new LocalVmError('INTERNAL', `${source} has no .modinfo section`);
    const deps = parseModinfoDepends(modinfo);
    depends.set(name, deps);
    queue.push(...deps);
  }
  const early = orderModules(EARLY_MODULES, depends);
  const all = orderModules([...EARLY_MODULES, ...LATE_MODULES], depends);
  return { early, late: all.filter((m) => !early.includes(m)) };
}

async function decompressModule(source: string, target: string, work: string, runner: CommandRunner): Promise<void> {
  const compressed = /\.(xz|gz)$/.exec(source)?.[1];
  if (!compressed) {
    await copyFile(source, target);
    return;
  }
  // busybox insmod cannot read compressed modules.
  const tmp = join(work, `module.ko.${compressed}`);
  await copyFile(source, tmp);
  await step(runner, { file: compressed === 'xz' ? 'xz' : 'gzip', args: ['-d', '-f', tmp] });
  await rename(tmp.slice(0, -(compressed.length + 1)), target);
}
