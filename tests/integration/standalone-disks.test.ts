/**
 * Standalone disks on real QEMU (TCG) with two tiny guests: a disk written by VM A is read
 * by VM B after a detach and an attach, delete is refused while attached, a read-write
 * double attach is refused while read-only ones share, an online resize is seen by the
 * guest, the attachment survives stop + start, and deleting a VM detaches its disks without
 * deleting them. The tests run in file order over the same two VMs.
 */
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { realClock, type OperationContext } from '../../src/context.js';
import {
  attachDisk,
  createDisk,
  deleteDisk,
  detachDisk,
  diskInfo,
  listStandaloneDisks,
  resizeDisk,
} from '../../src/operations/standaloneDisk.js';
import { createVm, deleteVm, listVms, startVm, stopVm, waitForVmReady } from '../../src/operations/vm.js';
import { doctor } from '../../src/operations/doctor.js';
import { createExecaRunner } from '../../src/runner.js';
import { codeOf } from '../fixtures/rejection.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';

const skip = (await missingQemuOrTiny()) !== undefined;

const PREFIX = 'pytest-test-vol-';
const A = `${PREFIX}a`;
const B = `${PREFIX}b`;
const MARKER = 'localvm-standalone-marker';
const exists = (p: string) =>
  access(p).then(
    () => true,
    () => false,
  );

describe.skipIf(skip)('standalone disks (real QEMU)', () => {
  let home: string;
  let ctx: OperationContext;
  const sh = async (vm: string, script: string) => (await connect(vm, ctx)).shell(script);
  const blocks = async (vm: string) =>
    (await sh(vm, 'ls /sys/block')).stdout
      .split(/\s+/)
      .filter((b) => b.startsWith('vd'))
      .sort();

  /** Polls the guest until its vd* list satisfies `ok` (a hot-plug shows ~100 ms later). */
  async function waitBlocks(vm: string, ok: (b: string[]) => boolean, timeoutMs = 10_000): Promise<string[]> {
    const deadline = performance.now() + timeoutMs;
    let seen = await blocks(vm);
    while (!ok(seen) && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      seen = await blocks(vm);
    }
    return seen;
  }

  /** The one vd* device of `vm` (the tiny guest has no other disk). */
  async function onlyDevice(vm: string): Promise<string> {
    const seen = await waitBlocks(vm, (b) => b.length === 1);
    expect(seen).toHaveLength(1);
    return seen[0] ?? '';
  }

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'lvm-vol-'));
    ctx = {
      // Another test prefix for this private home: `doctor --fix` below would otherwise delete
      // these VMs as test VMs no fixture session owns (TEST_VM_ORPHANED).
      config: loadConfig({ ...process.env, LOCALVM_HOME: home, LOCALVM_TEST_PREFIX: 'lvm-vol-unowned-' }),
      runner: createExecaRunner(),
      clock: realClock,
    };
    await Promise.all(
      [A, B].map(async (vm) => {
        await createVm({ name: vm, image: 'tiny', memory: 128 }, ctx);
        await waitForVmReady(vm, {}, ctx);
        // The tiny guest loads virtio_blk in the background after boot.
        await waitBlocks(vm, () => true);
      }),
    );
  });

  afterAll(async () => {
    for (const v of await listVms(ctx).catch(() => [])) await deleteVm(v.name, ctx).catch(() => undefined);
    await rm(home, { recursive: true, force: true });
  });

  it('a disk written by VM A is read by VM B after detach and attach; delete waits for the detach', async () => {
    const created = await createDisk('shared', '64M', {}, ctx);
    expect(created).toMatchObject({ name: 'shared', sizeBytes: 64 << 20, format: 'qcow2', attachedTo: [] });
    expect(created.path).toBe(join(home, 'disks', 'shared', 'disk.qcow2'));
    expect(await codeOf(createDisk('shared', '64M', {}, ctx))).toBe('ALREADY_EXISTS');

    expect((await attachDisk(A, 'shared', {}, ctx)).attachedTo).toEqual([{ vm: A, readonly: false }]);
    const devA = await onlyDevice(A);
    expect((await sh(A, `cat /sys/block/${devA}/size`)).stdout.trim()).toBe('131072');
    const wrote = await sh(A, `printf '${MARKER}' | dd of=/dev/${devA} bs=512 conv=sync,fsync 2>/dev/null`);
    expect(wrote.exitCode).toBe(0);
    // Attaching again the same way changes nothing.
    expect((await attachDisk(A, 'shared', {}, ctx)).attachedTo).toEqual([{ vm: A, readonly: false }]);

    // Read-write to a second VM, or read-only beside a writer: refused, nothing recorded.
    expect(await codeOf(attachDisk(B, 'shared', {}, ctx))).toBe('CONFLICT');
    expect(await codeOf(attachDisk(B, 'shared', { readonly: true }, ctx))).toBe('CONFLICT');
    expect(await blocks(B)).toEqual([]);
    expect(await codeOf(deleteDisk('shared', ctx))).toBe('CONFLICT');
    expect(await exists(created.path)).toBe(true);

    expect(await detachDisk(A, 'shared', {}, ctx)).toEqual({ detached: true });
    expect(await waitBlocks(A, (b) => b.length === 0)).toEqual([]);
    expect(await detachDisk(A, 'shared', {}, ctx)).toEqual({ detached: false });

    await attachDisk(B, 'shared', {}, ctx);
    const devB = await onlyDevice(B);
    expect((await sh(B, `dd if=/dev/${devB} bs=${MARKER.length} count=1 2>/dev/null`)).stdout).toBe(MARKER);
    expect((await listStandaloneDisks(ctx)).map((d) => [d.name, d.attachedTo])).toEqual([
      ['shared', [{ vm: B, readonly: false }]],
    ]);
    const record = JSON.parse(await readFile(join(home, 'vms', B, 'vm.json'), 'utf8')) as { attachedDisks: unknown };
    expect(record.attachedDisks).toEqual([{ disk: 'shared', path: created.path, readonly: false }]);
  });

  it('grows online: the guest sees the new size; a shrink is VALIDATION', async () => {
    expect((await resizeDisk('shared', '128M', ctx)).sizeBytes).toBe(128 << 20);
    const dev = await onlyDevice(B);
    const deadline = performance.now() + 5_000;
    let size = '';
    while (performance.now() < deadline && size !== '262144') {
      size = (await sh(B, `cat /sys/block/${dev}/size`)).stdout.trim();
      if (size !== '262144') await new Promise((r) => setTimeout(r, 100));
    }
    expect(size).toBe('262144');
    expect(await codeOf(resizeDisk('shared', '64M', ctx))).toBe('VALIDATION');
    expect((await diskInfo('shared', ctx)).sizeBytes).toBe(128 << 20);
  });

  it('the attachment and the data survive stop + start', async () => {
    await stopVm(B, {}, ctx);
    expect((await diskInfo('shared', ctx)).attachedTo).toEqual([{ vm: B, readonly: false }]);
    await startVm(B, ctx);
    await waitForVmReady(B, {}, ctx);
    const dev = await onlyDevice(B);
    expect((await sh(B, `cat /sys/block/${dev}/size`)).stdout.trim()).toBe('262144');
    expect((await sh(B, `dd if=/dev/${dev} bs=${MARKER.length} count=1 2>/dev/null`)).stdout).toBe(MARKER);
  });

  it('of two concurrent read-write attaches exactly one wins; a detach cut short by its deadline is TIMEOUT', async () => {
    await createDisk('race', '16M', {}, ctx);
    const results = await Promise.allSettled([attachDisk(A, 'race', {}, ctx), attachDisk(B, 'race', {}, ctx)]);
    const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [[A, B][i] ?? ''] : []));
    const lost = results.flatMap((r) => (r.status === 'rejected' ? [(r.reason as { code?: string }).code] : []));
    expect(won).toHaveLength(1);
    expect(lost).toEqual(['CONFLICT']);
    const winner = won[0] ?? '';
    expect((await diskInfo('race', ctx)).attachedTo).toEqual([{ vm: winner, readonly: false }]);
    // Wait until the guest has the device: its ACPI unplug answer takes longer than 1 ms.
    expect(await waitBlocks(winner, (b) => b.length === (winner === B ? 2 : 1))).toHaveLength(winner === B ? 2 : 1);
    expect(await codeOf(detachDisk(winner, 'race', { timeoutMs: 1 }, ctx))).toBe('TIMEOUT');
    // Nothing was recorded as detached: a retry finishes the unplug.
    expect((await diskInfo('race', ctx)).attachedTo).toEqual([{ vm: winner, readonly: false }]);
    expect(await detachDisk(winner, 'race', {}, ctx)).toEqual({ detached: true });
    expect(await waitBlocks(winner, (b) => b.length === (winner === B ? 1 : 0))).toHaveLength(winner === B ? 1 : 0);
    expect(await deleteDisk('race', ctx)).toEqual({ deleted: true });
  });

  it('read-only attachments share; deleting a VM detaches its disks and keeps them', async () => {
    expect(await detachDisk(B, 'shared', {}, ctx)).toEqual({ detached: true });
    expect(await waitBlocks(B, (b) => b.length === 0)).toEqual([]);
    await attachDisk(A, 'shared', { readonly: true }, ctx);
    const info = await attachDisk(B, 'shared', { readonly: true }, ctx);
    expect(info.attachedTo).toEqual([
      { vm: A, readonly: true },
      { vm: B, readonly: true },
    ]);
    for (const vm of [A, B]) {
      const dev = await onlyDevice(vm);
      expect((await sh(vm, `cat /sys/block/${dev}/ro`)).stdout.trim()).toBe('1');
      expect((await sh(vm, `dd if=/dev/${dev} bs=${MARKER.length} count=1 2>/dev/null`)).stdout).toBe(MARKER);
    }
    // A read-write attach beside readers, and a resize under them: refused.
    expect(await codeOf(resizeDisk('shared', '256M', ctx))).toBe('CONFLICT');

    await deleteVm(A, ctx);
    const after = await diskInfo('shared', ctx);
    expect(after.attachedTo).toEqual([{ vm: B, readonly: true }]);
    expect(JSON.parse(await readFile(join(home, 'disks', 'shared', 'disk.json'), 'utf8'))).toMatchObject({
      attachments: [{ vm: B, readonly: true }],
    });
    expect(await exists(after.path)).toBe(true);

    expect(await detachDisk(B, 'shared', {}, ctx)).toEqual({ detached: true });
    expect(await deleteDisk('shared', ctx)).toEqual({ deleted: true });
    expect(await exists(after.path)).toBe(false);
    expect(await deleteDisk('shared', ctx)).toEqual({ deleted: false });
    expect(await listStandaloneDisks(ctx)).toEqual([]);
  });

  it('a disk made from an image holds its bytes; an image larger than the size is VALIDATION', async () => {
    const src = join(home, 'src.raw');
    await writeFile(src, Buffer.concat([Buffer.from(MARKER), Buffer.alloc((1 << 20) - MARKER.length)]));
    expect(await codeOf(createDisk('small', 4096, { from: src }, ctx))).toBe('VALIDATION');
    expect(await exists(join(home, 'disks', 'small'))).toBe(false);
    const d = await createDisk('copy', '32M', { from: src }, ctx);
    expect(d).toMatchObject({ sizeBytes: 32 << 20, from: src });
    await attachDisk(B, 'copy', {}, ctx);
    const dev = await onlyDevice(B);
    expect((await sh(B, `cat /sys/block/${dev}/size`)).stdout.trim()).toBe('65536');
    expect((await sh(B, `dd if=/dev/${dev} bs=${MARKER.length} count=1 2>/dev/null`)).stdout).toBe(MARKER);
    await detachDisk(B, 'copy', {}, ctx);
    expect(await deleteDisk('copy', ctx)).toEqual({ deleted: true });
  });

  it('doctor finds what a crash between the two records or an out-of-band removal leaves, and fixes it', async () => {
    const diskCodes = async (fix = false) =>
      (await doctor({ fix }, ctx)).left.filter((f) => f.code.startsWith('DISK_')).map((f) => [f.code, f.vm ?? f.path]);
    expect(await diskCodes()).toEqual([]);
    const d = await createDisk('crash', '16M', {}, ctx);
    await stopVm(B, {}, ctx);
    await attachDisk(B, 'crash', {}, ctx);

    // Detach writes the VM record first: a crash right after leaves the claim in disk.json.
    const vmJson = join(home, 'vms', B, 'vm.json');
    const record = JSON.parse(await readFile(vmJson, 'utf8')) as Record<string, unknown>;
    await writeFile(vmJson, JSON.stringify({ ...record, attachedDisks: [] }));
    expect((await diskInfo('crash', ctx)).attachedTo).toEqual([]);
    expect(await diskCodes()).toEqual([['DISK_CLAIM_STALE', B]]);
    const report = await doctor({ fix: true }, ctx);
    expect(report.findings.find((f) => f.code === 'DISK_CLAIM_STALE')?.status).toBe('fixed');
    expect(await diskCodes()).toEqual([]);
    expect(JSON.parse(await readFile(join(home, 'disks', 'crash', 'disk.json'), 'utf8'))).toMatchObject({
      attachments: [],
    });

    // A disk removed behind localvm's back: the VM could not start until doctor drops it.
    await attachDisk(B, 'crash', {}, ctx);
    await rm(join(home, 'disks', 'crash'), { recursive: true });
    await mkdir(join(home, 'disks', 'half'));
    await writeFile(join(home, 'disks', 'half', 'disk.qcow2'), '');
    expect((await diskCodes()).sort()).toEqual([
      ['DISK_HALF_CREATED', join(home, 'disks', 'half')],
      ['DISK_MISSING', B],
    ]);
    expect(await diskCodes(true)).toEqual([]);
    expect(await exists(join(home, 'disks', 'half'))).toBe(false);
    expect(await exists(d.path)).toBe(false);
    await startVm(B, ctx);
    await waitForVmReady(B, {}, ctx);
  });
});
