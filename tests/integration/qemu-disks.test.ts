/**
 * Extra disks on real QEMU (TCG) with the tiny guest: hot-plug shows the guest a new
 * virtio disk it can write, the disk survives stop + start (it is in the record), hot-unplug
 * takes it away from the guest before the file goes, and failed adds leave nothing. One VM
 * serves every test; they run in file order.
 */
import { access, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireCapability, type Backend, type VmInfo } from '../../src/backend.js';
import { createQemuBackend } from '../../src/backends/qemu/index.js';
import { createOrbstackBackend } from '../../src/backends/orbstack/index.js';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { getBackend, realClock, type OperationContext } from '../../src/context.js';
import { addDisk, listDisks, removeDisk } from '../../src/operations/disk.js';
import { deleteSnapshot, snapshotVm } from '../../src/operations/snapshot.js';
import {
  createVm,
  createVmWithRetry,
  deleteVm,
  listVms,
  startVm,
  stopVm,
  vmInfo,
  waitForVmReady,
} from '../../src/operations/vm.js';
import { createExecaRunner, type CommandRunner } from '../../src/runner.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';
import { codeOf } from '../fixtures/rejection.js';

const skip = (await missingQemuOrTiny()) !== undefined;

const PREFIX = 'pytest-test-disk-';
const VM = `${PREFIX}a`;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const exists = (p: string) =>
  access(p).then(
    () => true,
    () => false,
  );

describe.skipIf(skip)('QEMU extra disks (real QEMU)', () => {
  let home: string;
  let ctx: OperationContext;
  let vmDir: string;
  const measured: Record<string, string> = {};
  const sh = async (script: string) => (await connect(VM, ctx)).shell(script);
  const blocks = async () =>
    (await sh('ls /sys/block')).stdout
      .split(/\s+/)
      .filter((b) => b.startsWith('vd'))
      .sort();

  /** Polls the guest until its vd* list satisfies `ok` (the guest sees a hot-plug ~100 ms later). */
  async function waitBlocks(ok: (b: string[]) => boolean, timeoutMs = 5_000): Promise<string[]> {
    const deadline = performance.now() + timeoutMs;
    let seen = await blocks();
    while (!ok(seen) && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      seen = await blocks();
    }
    return seen;
  }

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'lvm-disk-'));
    ctx = {
      config: loadConfig({ ...process.env, LOCALVM_HOME: home }),
      runner: createExecaRunner(),
      clock: realClock,
    };
    vmDir = join(home, 'vms', VM);
    await createVm({ name: VM, image: 'tiny', memory: 128 }, ctx);
    await waitForVmReady(VM, {}, ctx);
  });

  afterAll(async () => {
    for (const v of await listVms(ctx).catch(() => [])) await deleteVm(v.name, ctx).catch(() => undefined);
    await rm(home, { recursive: true, force: true });
    console.log(`[qemu-disks] ${JSON.stringify(measured)}`);
  });

  let dev = '';

  it('hot-plugs a disk the guest sees with the right size and can write', async () => {
    // The tiny guest loads virtio_blk in the background after boot.
    await waitBlocks(() => true);
    expect(await blocks()).toEqual([]);
    const started = performance.now();
    const info = await addDisk(VM, { name: 'data', size: '64M' }, ctx);
    measured['first addDisk (hot-plug)'] = `${Math.round(performance.now() - started)} ms`;
    expect(info).toEqual({ name: 'data', sizeBytes: 64 << 20, path: join(vmDir, 'disk-data.qcow2'), attached: true });
    expect(await exists(info.path)).toBe(true);

    const seen = await waitBlocks((b) => b.length === 1);
    expect(seen).toHaveLength(1);
    dev = seen[0] ?? '';
    measured['guest sees the disk after'] = `${Math.round(performance.now() - started)} ms`;
    expect((await sh(`cat /sys/block/${dev}/size`)).stdout.trim()).toBe('131072');

    const rw = await sh(
      `printf 'localvm-disk-marker' | dd of=/dev/${dev} bs=512 conv=sync,fsync 2>/dev/null && ` +
        `echo 3 > /proc/sys/vm/drop_caches && dd if=/dev/${dev} bs=19 count=1 2>/dev/null`,
    );
    expect(rw).toMatchObject({ exitCode: 0, stdout: 'localvm-disk-marker' });

    expect(await listDisks(VM, ctx)).toEqual([{ ...info, attached: true }]);
    const record = JSON.parse(await readFile(join(vmDir, 'vm.json'), 'utf8')) as {
      disks: { id: string }[];
      spec: { disks: unknown[] };
      fingerprint: string;
    };
    expect(record.disks.map((d) => d.id)).toEqual(['disk-data']);
    expect(record.spec.disks).toEqual([{ name: 'data', size: 64 << 20 }]);
    expect((await vmInfo(VM, ctx)).fingerprint).toBe(record.fingerprint);
  });

  it('re-declaring the VM with the new disk list adopts it', async () => {
    const before = await vmInfo(VM, ctx);
    const result = await createVmWithRetry(
      { name: VM, image: 'tiny', memory: 128, disks: [{ name: 'data', size: '64M' }] },
      {},
      ctx,
    );
    expect(result.adopted).toBe(true);
    const adopted = result.info;
    expect(adopted.pid).toBe(before.pid);
    expect(adopted.fingerprint).toBe(before.fingerprint);
  });

  it('refuses a second disk of the same name: ALREADY_EXISTS', async () => {
    expect(await codeOf(addDisk(VM, { name: 'data', size: '1M' }, ctx))).toBe('ALREADY_EXISTS');
  });

  it('keeps the disk and its data across stop + start (from the record)', async () => {
    await stopVm(VM, { force: true }, ctx);
    expect((await listDisks(VM, ctx)).map((d) => d.attached)).toEqual([false]);
    await startVm(VM, ctx);
    await waitForVmReady(VM, {}, ctx);
    expect(await listDisks(VM, ctx)).toEqual([
      { name: 'data', sizeBytes: 64 << 20, path: join(vmDir, 'disk-data.qcow2'), attached: true },
    ]);
    const seen = await waitBlocks((b) => b.length === 1);
    expect(seen).toHaveLength(1);
    dev = seen[0] ?? '';
    expect((await sh(`dd if=/dev/${dev} bs=19 count=1 2>/dev/null`)).stdout).toBe('localvm-disk-marker');
  });

  it('refuses add and remove while the VM has snapshots (loadvm would refuse them)', async () => {
    await snapshotVm(VM, 'before', ctx);
    expect(await codeOf(addDisk(VM, { name: 'late', size: '1M' }, ctx))).toBe('CONFLICT');
    expect(await exists(join(vmDir, 'disk-late.qcow2'))).toBe(false);
    expect(await codeOf(removeDisk(VM, 'data', ctx))).toBe('CONFLICT');
    expect(await exists(join(vmDir, 'disk-data.qcow2'))).toBe(true);
    expect(await deleteSnapshot(VM, 'before', ctx)).toEqual({ deleted: true });
  });

  it('hot-unplugs a disk attached at launch: the guest loses it, then the file goes', async () => {
    expect(await removeDisk(VM, 'data', ctx)).toEqual({ removed: true });
    expect(await waitBlocks((b) => b.length === 0)).toEqual([]);
    expect(await exists(join(vmDir, 'disk-data.qcow2'))).toBe(false);
    expect(await listDisks(VM, ctx)).toEqual([]);
    expect(await removeDisk(VM, 'data', ctx)).toEqual({ removed: false });
    expect(await codeOf(removeDisk(`${PREFIX}ghost`, 'data', ctx))).toBe('NOT_FOUND');
    expect((await vmInfo(VM, ctx)).state).toBe('running');
  });

  it('a failed add leaves vm.json and the directory unchanged', async () => {
    const recordBefore = await readFile(join(vmDir, 'vm.json'), 'utf8');
    const dirBefore = (await readdir(vmDir)).sort();
    // A real qemu-img failure: qcow2 cannot be that large with its default cluster size.
    expect(await codeOf(addDisk(VM, { name: 'huge', size: '8000T' }, ctx))).toBe('COMMAND_FAILED');
    expect(await readFile(join(vmDir, 'vm.json'), 'utf8')).toBe(recordBefore);
    expect((await readdir(vmDir)).sort()).toEqual(dirBefore);

    // An injected failure after qemu-img made the file: it is removed again.
    const real = ctx.runner;
    const failing: CommandRunner = {
      async run(cmd, opts) {
        const result = await real.run(cmd, opts);
        if (cmd.file === 'qemu-img' && cmd.args[0] === 'create') return { ...result, exitCode: 1, stderr: 'injected' };
        return result;
      },
    };
    const failCtx: OperationContext = {
      ...ctx,
      backends: { qemu: createQemuBackend({ config: ctx.config, runner: failing }) },
    };
    expect(await codeOf(addDisk(VM, { name: 'inj', size: '1M' }, failCtx))).toBe('COMMAND_FAILED');
    expect(await readFile(join(vmDir, 'vm.json'), 'utf8')).toBe(recordBefore);
    expect((await readdir(vmDir)).sort()).toEqual(dirBefore);
    expect(await blocks()).toEqual([]);
  });

  it('extra disks on an OrbStack VM are UNSUPPORTED', async () => {
    const orb = createOrbstackBackend({ config: ctx.config, runner: ctx.runner });
    expect(() => requireCapability(orb, 'disks')).toThrow(expect.objectContaining({ code: 'UNSUPPORTED' }));
    const info: VmInfo = {
      name: `${PREFIX}orb`,
      backend: 'orbstack',
      state: 'running',
      ports: [],
      image: 'ubuntu',
      arch: 'x86_64',
      cpus: 1,
      memory: 1024,
      labels: {},
    };
    const known: Backend = { ...orb, info: async (n) => (n === info.name ? info : orb.info(n)) };
    const orbCtx: OperationContext = { ...ctx, backends: { orbstack: known } };
    expect(await codeOf(addDisk(info.name, { name: 'data', size: '1M' }, orbCtx))).toBe('UNSUPPORTED');
    expect(await codeOf(removeDisk(info.name, 'data', orbCtx))).toBe('UNSUPPORTED');
    expect(await codeOf(listDisks(info.name, orbCtx))).toBe('UNSUPPORTED');
  });

  it('measures hot-plug add and hot-unplug remove (median of 5)', async () => {
    const backend = requireCapability(await getBackend('qemu', ctx), 'disks');
    const add: number[] = [];
    const remove: number[] = [];
    for (let i = 0; i < 5; i++) {
      let t = performance.now();
      await backend.diskAdd(VM, { name: `bench-${i}`, size: 16 << 20 });
      add.push(performance.now() - t);
      // Let the guest bind the device first: an unplug request during its probe is slower.
      expect(await waitBlocks((b) => b.length === 1)).toHaveLength(1);
      t = performance.now();
      expect(await backend.diskRemove(VM, `bench-${i}`)).toEqual({ removed: true });
      remove.push(performance.now() - t);
      expect(await waitBlocks((b) => b.length === 0)).toEqual([]);
    }
    measured['diskAdd running (qemu-img + hot-plug) median of 5'] = `${Math.round(median(add))} ms`;
    measured['diskRemove running (hot-unplug + rm) median of 5'] = `${Math.round(median(remove))} ms`;
    expect(await listDisks(VM, ctx)).toEqual([]);
  });

  it('adds and removes on a stopped VM without QEMU; the next start attaches it', async () => {
    await stopVm(VM, { force: true }, ctx);
    const t = performance.now();
    await addDisk(VM, { name: 'cold', size: '2M' }, ctx);
    measured['diskAdd stopped'] = `${Math.round(performance.now() - t)} ms`;
    expect((await listDisks(VM, ctx)).map((d) => [d.name, d.attached])).toEqual([['cold', false]]);
    await startVm(VM, ctx);
    await waitForVmReady(VM, {}, ctx);
    expect((await listDisks(VM, ctx)).map((d) => [d.name, d.attached])).toEqual([['cold', true]]);
    const seen = await waitBlocks((b) => b.length === 1);
    expect((await sh(`cat /sys/block/${seen[0] ?? 'none'}/size`)).stdout.trim()).toBe('4096');
    await stopVm(VM, { force: true }, ctx);
    expect(await removeDisk(VM, 'cold', ctx)).toEqual({ removed: true });
    expect(await exists(join(vmDir, 'disk-cold.qcow2'))).toBe(false);
    expect(await listDisks(VM, ctx)).toEqual([]);
  });
});
