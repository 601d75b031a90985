/**
 * Level C for standalone disks: the real dynamic-provider host over gRPC with the
 * serialized providers of a real program (a Vm, a Disk and a DiskAttachment), against real
 * QEMU. One tiny VM; the disk is created, attached (the guest sees it), grown in place (the
 * guest sees that too), refused deletion while attached, and refreshed after out-of-band
 * changes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { deleteDisk, detachDisk, diskInfo, listStandaloneDisks } from '../../src/operations/standaloneDisk.js';
import { createVm, deleteVm, waitForVmReady } from '../../src/operations/vm.js';
import { createExecaRunner } from '../../src/runner.js';
import {
  PROJECT_DIR,
  ProviderHost,
  VM_TYPE,
  linkLocalvm,
  runProgramUnderMocks,
  urnOf,
} from '../fixtures/pulumi/harness.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';

const skip = (await missingQemuOrTiny()) !== undefined;

const DISK_TYPE = 'pulumi-nodejs:dynamic/localvm:Disk';
const ATTACH_TYPE = 'pulumi-nodejs:dynamic/localvm:DiskAttachment';
type Props = Record<string, unknown>;

describe.skipIf(skip)('Pulumi Disk and DiskAttachment through the real provider host', () => {
  const home = mkdtempSync(join(tmpdir(), 'lvm-pulumi-disk-'));
  const config = loadConfig({ ...process.env, LOCALVM_HOME: home });
  const ctx = { config, runner: createExecaRunner() };
  const vmName = `${config.testPrefix}pdisk`;
  const providers: Record<string, string> = {};
  let host: ProviderHost;

  const withProvider = (type: string, props: Props): Props => ({ ...props, __provider: providers[type] });
  async function checked(type: string, olds: Props, news: Props): Promise<Props> {
    const r = await host.check(urnOf(type, 'r'), olds, withProvider(type, news));
    expect(r.failures).toEqual([]);
    return r.inputs;
  }
  const sh = async (script: string) => (await connect(vmName, ctx)).shell(script);
  async function guestBlocks(ok: (b: string[]) => boolean): Promise<string[]> {
    const deadline = performance.now() + 10_000;
    for (;;) {
      const seen = (await sh('ls /sys/block')).stdout.split(/\s+/).filter((b) => b.startsWith('vd'));
      if (ok(seen) || performance.now() > deadline) return seen;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  beforeAll(async () => {
    linkLocalvm(PROJECT_DIR);
    const registered = await runProgramUnderMocks({
      program: join(PROJECT_DIR, 'disk.mjs'),
      cwd: PROJECT_DIR,
      expected: 3,
    });
    for (const r of registered) providers[r.type] = r.inputs.__provider as string;
    expect(Object.keys(providers).sort()).toEqual([ATTACH_TYPE, DISK_TYPE, VM_TYPE].sort());
    // Wired as documented: the attachment's inputs are the Vm's and the Disk's name outputs.
    expect(registered.find((r) => r.type === ATTACH_TYPE)?.inputs).toMatchObject({
      vm: 'fixture-disk-vm',
      disk: 'fixture-data',
    });
    host = await ProviderHost.start({
      cwd: PROJECT_DIR,
      env: {
        LOCALVM_HOME: home,
        PULUMI_NODEJS_PROJECT: 'localvm-provider-test',
        PULUMI_PROJECT: 'localvm-provider-test',
      },
    });
    await host.configure({ 'localvm-provider-test:unused': 'x' });
    await createVm({ name: vmName, image: 'tiny', memory: 128 }, ctx);
    await waitForVmReady(vmName, {}, ctx);
    await guestBlocks(() => true);
  }, 180_000);

  afterAll(async () => {
    await deleteVm(vmName, ctx).catch(() => undefined);
    for (const d of await listStandaloneDisks(ctx).catch(() => []))
      await deleteDisk(d.name, ctx).catch(() => undefined);
    await host?.stop();
    rmSync(home, { recursive: true, force: true });
  }, 120_000);

  it('check fails bad names, a shrink and a bad attachment with property paths', async () => {
    const bad = await host.check(urnOf(DISK_TYPE, 'bad'), {}, withProvider(DISK_TYPE, { name: '../x', size: 'big' }));
    expect(bad.failures.map((f) => f.property).sort()).toEqual(['name', 'size']);
    const shrink = await host.check(
      urnOf(DISK_TYPE, 'd'),
      { name: 'pd', size: 64 << 20 },
      withProvider(DISK_TYPE, { name: 'pd', size: '32M' }),
    );
    expect(shrink.failures.map((f) => f.property)).toEqual(['size']);
    const att = await host.check(
      urnOf(ATTACH_TYPE, 'bad'),
      {},
      withProvider(ATTACH_TYPE, { vm: 'A/B', disk: 'x', readonly: 'yes' }),
    );
    expect(att.failures.map((f) => f.property).sort()).toEqual(['readonly', 'vm']);
    expect(await listStandaloneDisks(ctx)).toEqual([]);
  });

  it('Vm passes imageChecksum and imageChecksumUrl through; another checksum replaces', async () => {
    const url = 'https://images.invalid/debian.qcow2';
    const sum = `sha256:${'a'.repeat(64)}`;
    const inputs = await checked(VM_TYPE, {}, { name: vmName, image: url, imageChecksum: sum });
    expect(inputs).toMatchObject({ image: url, imageChecksum: sum });
    const other = await checked(VM_TYPE, inputs, {
      name: vmName,
      image: url,
      imageChecksum: `sha256:${'b'.repeat(64)}`,
    });
    expect((await host.diff(vmName, urnOf(VM_TYPE, 'v'), inputs, other)).replaces).toEqual(['imageChecksum']);
    const bySums = await checked(
      VM_TYPE,
      {},
      { name: vmName, image: url, imageChecksumUrl: 'https://images.invalid/SHA256SUMS' },
    );
    expect(bySums.imageChecksumUrl).toBe('https://images.invalid/SHA256SUMS');
  });

  describe('one disk attached to the VM', () => {
    const diskName = 'pdata';
    const diskUrn = urnOf(DISK_TYPE, 'data');
    const attUrn = urnOf(ATTACH_TYPE, 'data-on-vm');
    let diskOuts: Props;
    let attOuts: Props;
    let attInputs: Props;

    it('creates the Disk, then the attachment: the guest sees the disk', async () => {
      const inputs = await checked(DISK_TYPE, {}, { name: diskName, size: '64M' });
      expect(inputs.size).toBe(64 << 20);
      const created = await host.create(diskUrn, inputs);
      expect(created.id).toBe(diskName);
      diskOuts = created.props;
      expect(diskOuts).toMatchObject({ name: diskName, sizeBytes: 64 << 20, format: 'qcow2' });
      expect(await host.diff(diskName, diskUrn, diskOuts, inputs)).toMatchObject({ changes: 'none' });
      const renamed = await checked(DISK_TYPE, diskOuts, { name: `${diskName}-b`, size: '64M' });
      expect(await host.diff(diskName, diskUrn, diskOuts, renamed)).toMatchObject({
        replaces: ['name'],
        deleteBeforeReplace: false,
      });

      attInputs = await checked(ATTACH_TYPE, {}, { vm: vmName, disk: diskName });
      expect(attInputs.readonly).toBe(false);
      const att = await host.create(attUrn, attInputs);
      expect(att.id).toBe(`${vmName}/${diskName}`);
      attOuts = att.props;
      expect(typeof attOuts.instance).toBe('string');
      expect(await guestBlocks((b) => b.length === 1)).toHaveLength(1);
      const ro = await checked(ATTACH_TYPE, attOuts, { ...attInputs, readonly: true });
      expect(await host.diff(att.id, attUrn, attOuts, ro)).toMatchObject({
        replaces: ['readonly'],
        deleteBeforeReplace: true,
      });
    });

    it('deleting the attached Disk is a CONFLICT saying how to wire it, and keeps the disk', async () => {
      await expect(host.delete(diskName, diskUrn, diskOuts)).rejects.toThrow(
        new RegExp(`CONFLICT: disk ${diskName} is attached to ${vmName}.*disk: disk\\.name`, 's'),
      );
      expect((await diskInfo(diskName, ctx)).attachedTo).toEqual([{ vm: vmName, readonly: false }]);
    });

    it('a larger size is an update that grows the disk online', async () => {
      const bigger = await checked(DISK_TYPE, diskOuts, { name: diskName, size: '128M' });
      expect(await host.diff(diskName, diskUrn, diskOuts, bigger)).toMatchObject({ changes: 'some', replaces: [] });
      diskOuts = await host.update(diskName, diskUrn, diskOuts, bigger);
      expect(diskOuts).toMatchObject({ size: 128 << 20, sizeBytes: 128 << 20 });
      const [dev] = await guestBlocks((b) => b.length === 1);
      expect((await sh(`cat /sys/block/${dev}/size`)).stdout.trim()).toBe('262144');
    });

    it('refresh keeps both, drops the attachment detached out of band, then the disk deleted out of band', async () => {
      expect((await host.read(diskName, diskUrn, diskOuts)).id).toBe(diskName);
      expect((await host.read(String(attOuts.vm) + '/' + diskName, attUrn, attOuts)).id).toBe(`${vmName}/${diskName}`);
      expect(await detachDisk(vmName, diskName, {}, ctx)).toEqual({ detached: true });
      expect((await host.read(`${vmName}/${diskName}`, attUrn, attOuts)).id).toBe('');
      // Deleting an attachment already gone succeeds; then the Disk goes.
      await host.delete(`${vmName}/${diskName}`, attUrn, attOuts);
      await deleteDisk(diskName, ctx);
      expect((await host.read(diskName, diskUrn, diskOuts)).id).toBe('');
      await host.delete(diskName, diskUrn, diskOuts);
    });

    it('delete in the engine order: the attachment (detached, waiting for the guest), then the Disk', async () => {
      const inputs = await checked(DISK_TYPE, {}, { name: diskName, size: '16M' });
      diskOuts = (await host.create(diskUrn, inputs)).props;
      attOuts = (await host.create(attUrn, attInputs)).props;
      expect(await guestBlocks((b) => b.length === 1)).toHaveLength(1);
      await host.delete(`${vmName}/${diskName}`, attUrn, attOuts);
      expect(await guestBlocks((b) => b.length === 0)).toEqual([]);
      await host.delete(diskName, diskUrn, diskOuts);
      expect(await listStandaloneDisks(ctx)).toEqual([]);
    });
  });
});
