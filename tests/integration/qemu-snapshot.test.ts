/**
 * Snapshots on real QEMU (TCG): savevm/loadvm revert the guest's RAM (the tiny guest's
 * root file system is the initramfs, so /tmp lives in RAM), an exec works straight after
 * a restore, and the offline (stopped VM) paths use qemu-img. One VM serves every test;
 * they run in file order and the last ones stop it.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireCapability, type Backend, type VmInfo } from '../../src/backend.js';
import { createOrbstackBackend } from '../../src/backends/orbstack/index.js';
import { qemuImg } from '../../src/backends/qemu/qemuImg.js';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { getBackend, realClock, type OperationContext } from '../../src/context.js';
import { deleteSnapshot, listSnapshots, restoreSnapshot, snapshotVm } from '../../src/operations/snapshot.js';
import { createVm, deleteVm, listVms, stopVm, vmInfo, waitForVmReady } from '../../src/operations/vm.js';
import { createExecaRunner } from '../../src/runner.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';
import { codeOf } from '../fixtures/rejection.js';

const skip = (await missingQemuOrTiny()) !== undefined;

const PREFIX = 'pytest-test-snap-';
const VM = `${PREFIX}a`;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

describe.skipIf(skip)('QEMU snapshots (real QEMU)', () => {
  let home: string;
  let ctx: OperationContext;
  const measured: Record<string, string> = {};
  const sh = async (script: string) => (await connect(VM, ctx)).shell(script);

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'lvm-snap-'));
    ctx = {
      config: loadConfig({ ...process.env, LOCALVM_HOME: home }),
      runner: createExecaRunner(),
      clock: realClock,
    };
    const started = performance.now();
    await createVm({ name: VM, image: 'tiny', memory: 128 }, ctx);
    await waitForVmReady(VM, {}, ctx);
    measured['create + ready'] = `${Math.round(performance.now() - started)} ms`;
  });

  afterAll(async () => {
    for (const v of await listVms(ctx).catch(() => [])) await deleteVm(v.name, ctx).catch(() => undefined);
    await rm(home, { recursive: true, force: true });
    console.log(`[qemu-snapshot] ${JSON.stringify(measured)}`);
  });

  it('gives a new VM a vmstate disk that QEMU holds without a guest device', async () => {
    const info = await vmInfo(VM, ctx);
    const cmdline = (await readFile(`/proc/${info.pid}/cmdline`, 'utf8')).split('\0');
    const stateDisk = join(home, 'vms', VM, 'state.qcow2');
    expect(cmdline).toContain(`file=${stateDisk},format=qcow2,if=none,id=vmstate`);
    expect(cmdline.some((a) => a.includes('drive=vmstate'))).toBe(false);
    // The guest sees no extra disk: the tiny VM has no block devices at all.
    const blocks = await sh('ls /sys/block | grep -v -e ^loop -e ^ram || true');
    expect(blocks.stdout.trim()).toBe('');
  });

  it('restores RAM state: a file written after the snapshot is gone, a removed one is back', async () => {
    expect((await sh('echo A > /tmp/a && sync')).exitCode).toBe(0);
    const snap = await snapshotVm(VM, 'clean', ctx);
    expect(snap.name).toBe('clean');
    expect(snap.sizeBytes).toBeGreaterThan(1024 * 1024);
    expect(Date.parse(snap.createdAt ?? '')).toBeGreaterThan(Date.now() - 120_000);

    expect((await sh('echo B > /tmp/b && rm /tmp/a && ls /tmp')).stdout).toContain('b');
    await restoreSnapshot(VM, 'clean', ctx);
    // The very next exec, over a fresh agent session, sees the reverted guest.
    const after = await sh('cat /tmp/a; test -e /tmp/b && echo b-still-there; true');
    expect(after).toMatchObject({ exitCode: 0, stdout: 'A\n' });
    expect((await vmInfo(VM, ctx)).state).toBe('running');
  });

  it('lists snapshots with size and time, and refuses a duplicate name', async () => {
    const list = await listSnapshots(VM, ctx);
    expect(list.map((s) => s.name)).toEqual(['clean']);
    expect(list[0]?.sizeBytes).toBeGreaterThan(1024 * 1024);
    expect(await codeOf(snapshotVm(VM, 'clean', ctx))).toBe('ALREADY_EXISTS');
  });

  it('restoring a missing snapshot is NOT_FOUND and leaves the VM running and usable', async () => {
    expect(await codeOf(restoreSnapshot(VM, 'no-such-snap', ctx))).toBe('NOT_FOUND');
    expect((await sh('echo alive')).stdout).toBe('alive\n');
  });

  it('rejects hostile snapshot names with VALIDATION before anything runs', async () => {
    for (const bad of ['', 'x y', 'a;quit', '-c', 'Clean', 'a\nquit', `x${'y'.repeat(63)}`, '../x', 'é']) {
      expect(await codeOf(snapshotVm(VM, bad, ctx)), JSON.stringify(bad)).toBe('VALIDATION');
      expect(await codeOf(restoreSnapshot(VM, bad, ctx)), JSON.stringify(bad)).toBe('VALIDATION');
      expect(await codeOf(deleteSnapshot(VM, bad, ctx)), JSON.stringify(bad)).toBe('VALIDATION');
    }
    expect((await listSnapshots(VM, ctx)).map((s) => s.name)).toEqual(['clean']);
    expect((await vmInfo(VM, ctx)).state).toBe('running');
  });

  it('deletes a snapshot (idempotently) while running', async () => {
    await snapshotVm(VM, 'tmp.1', ctx);
    expect((await listSnapshots(VM, ctx)).map((s) => s.name)).toEqual(['clean', 'tmp.1']);
    expect(await deleteSnapshot(VM, 'tmp.1', ctx)).toEqual({ deleted: true });
    expect((await listSnapshots(VM, ctx)).map((s) => s.name)).toEqual(['clean']);
    expect(await deleteSnapshot(VM, 'tmp.1', ctx)).toEqual({ deleted: false });
    expect(await codeOf(listSnapshots(`${PREFIX}ghost`, ctx))).toBe('NOT_FOUND');
  });

  it('measures savevm and loadvm (median of 5) and the state disk create', async () => {
    const backend = requireCapability(await getBackend('qemu', ctx), 'snapshots');
    const save: number[] = [];
    const load: number[] = [];
    for (let i = 0; i < 5; i++) {
      let t = performance.now();
      await backend.snapshotCreate(VM, `bench-${i}`);
      save.push(performance.now() - t);
      t = performance.now();
      await backend.snapshotRestore(VM, `bench-${i}`);
      load.push(performance.now() - t);
    }
    const exec = performance.now();
    expect((await sh('cat /tmp/a')).stdout).toBe('A\n');
    measured['exec after restore'] = `${Math.round(performance.now() - exec)} ms`;
    for (let i = 0; i < 5; i++) await backend.snapshotDelete(VM, `bench-${i}`);
    measured['snapshotCreate (savevm) median of 5'] = `${Math.round(median(save))} ms`;
    measured['snapshotRestore (loadvm) median of 5'] = `${Math.round(median(load))} ms`;

    const disk: number[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await ctx.runner.run(qemuImg.create({ path: join(home, `probe-${i}.qcow2`), size: 64 << 20 }));
      expect(r.exitCode).toBe(0);
      disk.push(r.durationMs);
    }
    measured['state disk qemu-img create median of 5'] = `${Math.round(median(disk))} ms`;
    expect(save.every((ms) => ms > 0)).toBe(true);
  });

  it('snapshots on an OrbStack VM are UNSUPPORTED', async () => {
    const orb = createOrbstackBackend({ config: ctx.config, runner: ctx.runner });
    expect(() => requireCapability(orb, 'snapshots')).toThrow(expect.objectContaining({ code: 'UNSUPPORTED' }));
    // Through the operations: an orbstack backend that knows a VM, and QEMU that does not.
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
    expect(await codeOf(snapshotVm(info.name, 'clean', orbCtx))).toBe('UNSUPPORTED');
    expect(await codeOf(listSnapshots(info.name, orbCtx))).toBe('UNSUPPORTED');
    expect(await codeOf(restoreSnapshot(info.name, 'clean', orbCtx))).toBe('UNSUPPORTED');
    expect(await codeOf(deleteSnapshot(info.name, 'clean', orbCtx))).toBe('UNSUPPORTED');
  });

  it('on a stopped VM: lists and deletes with qemu-img, refuses create and restore', async () => {
    await snapshotVm(VM, 'keep', ctx);
    await stopVm(VM, { force: true }, ctx);
    expect((await vmInfo(VM, ctx)).state).toBe('stopped');
    const offline = await listSnapshots(VM, ctx);
    expect(offline.map((s) => s.name)).toEqual(['clean', 'keep']);
    expect(offline[0]?.sizeBytes).toBeGreaterThan(1024 * 1024);
    expect(await codeOf(restoreSnapshot(VM, 'clean', ctx))).toBe('CONFLICT');
    expect(await codeOf(snapshotVm(VM, 'offline', ctx))).toBe('CONFLICT');
    expect(await deleteSnapshot(VM, 'keep', ctx)).toEqual({ deleted: true });
    expect(await deleteSnapshot(VM, 'keep', ctx)).toEqual({ deleted: false });
    expect((await listSnapshots(VM, ctx)).map((s) => s.name)).toEqual(['clean']);
  });

  it('a VM created before state disks cannot take snapshots: UNSUPPORTED', async () => {
    const recordPath = join(home, 'vms', VM, 'vm.json');
    const record = JSON.parse(await readFile(recordPath, 'utf8')) as Record<string, unknown>;
    delete record.stateDisk;
    await writeFile(recordPath, JSON.stringify(record));
    expect(await codeOf(snapshotVm(VM, 'legacy', ctx))).toBe('UNSUPPORTED');
    // Still lists what its disks hold (nothing: the state disk is no longer its own).
    expect(await listSnapshots(VM, ctx)).toEqual([]);
  });
});
