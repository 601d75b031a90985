/**
 * `image prune` on real files and real VM records: a private cache holding three copies of
 * the tiny build (the current one, an older one a VM boots from, an unused older one) and two
 * downloads (one the backing file of a VM's overlay, one unused). Prune (and its dry run)
 * takes exactly the unused ones, and what a VM used goes once the VM is deleted.
 */
import { cp, mkdir, mkdtemp, readFile, rm, writeFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findTinyImage } from '../../src/backends/qemu/image/index.js';
import { loadConfig } from '../../src/config.js';
import { realClock, type OperationContext } from '../../src/context.js';
import { pruneImages } from '../../src/operations/prune.js';
import { createVm, deleteVm, listVms, stopVm } from '../../src/operations/vm.js';
import { createExecaRunner } from '../../src/runner.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';

const skip = (await missingQemuOrTiny()) !== undefined;
const PREFIX = 'pytest-test-prune-';
const exists = (p: string) =>
  access(p).then(
    () => true,
    () => false,
  );

describe.skipIf(skip)('image prune (real files, real VMs)', () => {
  let root: string;
  let ctx: OperationContext;
  let images: string;
  let downloads: string;
  const hexA = 'a'.repeat(64);
  const hexB = 'b'.repeat(64);
  const dl = (hex: string) => join(downloads, `sha256-${hex}.qcow2`);

  /** A copy of the real tiny build as `name`, recorded as built at `builtAt`. */
  async function tinyCopy(source: string, name: string, builtAt: string): Promise<void> {
    await cp(source, join(images, name), { recursive: true });
    const json = join(images, name, 'image.json');
    const record = JSON.parse(await readFile(json, 'utf8')) as Record<string, unknown>;
    await writeFile(json, JSON.stringify({ ...record, builtAt }));
  }

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'lvm-prune-'));
    ctx = {
      config: loadConfig({ ...process.env, LOCALVM_HOME: join(root, 'state'), LOCALVM_CACHE: join(root, 'cache') }),
      runner: createExecaRunner(),
      clock: realClock,
    };
    images = join(root, 'cache', 'images');
    downloads = join(root, 'cache', 'downloads');
    const real = await findTinyImage(loadConfig());
    if (!real) throw new Error('the tiny image is not built');
    await mkdir(images, { recursive: true });
    await mkdir(downloads, { recursive: true });
    await tinyCopy(real.dir, 'old', '2020-01-01T00:00:00.000Z');
    // VM a boots from the only build there is yet: "old".
    await createVm({ name: `${PREFIX}a`, image: 'tiny', memory: 128 }, ctx);
    await stopVm(`${PREFIX}a`, { force: true }, ctx);
    await tinyCopy(real.dir, 'new', new Date().toISOString());
    await tinyCopy(real.dir, 'older', '2019-01-01T00:00:00.000Z');

    const entry = (hex: string) => ({
      id: hex.slice(0, 12),
      file: `sha256-${hex}.qcow2`,
      url: `https://images.invalid/${hex.slice(0, 4)}.qcow2`,
      checksum: `sha256:${hex}`,
      sizeBytes: 0,
      format: 'qcow2',
      fetchedAt: new Date().toISOString(),
    });
    for (const hex of [hexA, hexB]) {
      const r = await ctx.runner.run({ file: 'qemu-img', args: ['create', '-f', 'qcow2', dl(hex), '16M'] });
      expect(r.exitCode).toBe(0);
    }
    await writeFile(join(downloads, 'index.json'), JSON.stringify({ version: 1, entries: [entry(hexA), entry(hexB)] }));
    // VM b's overlay has download A as its backing file (the guest need not boot for that).
    await createVm({ name: `${PREFIX}b`, image: dl(hexA), memory: 128 }, ctx);
    await stopVm(`${PREFIX}b`, { force: true }, ctx);
  });

  afterAll(async () => {
    for (const v of await listVms(ctx).catch(() => [])) await deleteVm(v.name, ctx).catch(() => undefined);
    await rm(root, { recursive: true, force: true });
  });

  const pruned = (r: { pruned: { kind: string; name: string }[] }) => r.pruned.map((i) => `${i.kind}:${i.name}`).sort();

  it('a dry run lists the unused build and download with sizes and removes nothing', async () => {
    const r = await pruneImages({ dryRun: true }, ctx);
    expect(pruned(r)).toEqual([`download:${hexB.slice(0, 12)}`, expect.stringMatching(/^tiny:tiny-/)]);
    expect(r.pruned.find((i) => i.kind === 'tiny')?.path).toBe(join(images, 'older'));
    expect(r.freedBytes).toBeGreaterThan(0);
    expect(r.kept.map((k) => [k.path, k.usedBy])).toEqual(
      expect.arrayContaining([
        [join(images, 'new'), ['new tiny VMs (the current build)']],
        [join(images, 'old'), [`vm ${PREFIX}a`]],
        [dl(hexA), [`vm ${PREFIX}b`]],
      ]),
    );
    expect(await exists(join(images, 'older'))).toBe(true);
    expect(await exists(dl(hexB))).toBe(true);
  });

  it('removes exactly what nothing uses, and a second run removes nothing', async () => {
    const r = await pruneImages({}, ctx);
    expect(r.skipped).toEqual([]);
    expect(r.pruned.map((i) => i.path).sort()).toEqual([dl(hexB), join(images, 'older')].sort());
    expect(await exists(join(images, 'older'))).toBe(false);
    expect(await exists(dl(hexB))).toBe(false);
    const index = JSON.parse(await readFile(join(downloads, 'index.json'), 'utf8')) as { entries: { file: string }[] };
    expect(index.entries.map((e) => e.file)).toEqual([`sha256-${hexA}.qcow2`]);
    for (const kept of [join(images, 'new'), join(images, 'old'), dl(hexA)]) expect(await exists(kept)).toBe(true);
    expect((await pruneImages({}, ctx)).pruned).toEqual([]);
  });

  it('what a deleted VM used goes on the next prune', async () => {
    await deleteVm(`${PREFIX}a`, ctx);
    await deleteVm(`${PREFIX}b`, ctx);
    const r = await pruneImages({}, ctx);
    expect(r.pruned.map((i) => i.path).sort()).toEqual([dl(hexA), join(images, 'old')].sort());
    expect(await exists(join(images, 'new'))).toBe(true);
  });
});
