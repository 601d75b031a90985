/**
 * Level C: what a `pulumi up` user hits (issue 15), through the real dynamic-provider host
 * over gRPC against one real QEMU VM: previews that must agree with `up`, files that must
 * not vanish, refresh that must notice lost guest state, VMs that must not be taken over.
 * The calls are the ones the engine makes, in the engine's order; scenarios that restart or
 * delete the VM come last.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { deleteVm, findVm, listVms, stopVm } from '../../src/operations/vm.js';
import { createExecaRunner } from '../../src/runner.js';
import {
  CMD_TYPE,
  FILE_TYPE,
  VM_TYPE,
  startProjectHost,
  urnOf,
  type ProviderHost,
} from '../fixtures/pulumi/harness.js';
import { missingTools } from '../fixtures/tools.js';

const UNKNOWN = '04da6b54-80e4-46f7-96ec-b56ff0331ba9';
/** The label that records which Pulumi resource owns a VM. */
const OWNER_LABEL = 'pulumi.localvm/owner';
const skip = missingTools('qemu-system-x86_64', 'qemu-img');
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

type Props = Record<string, unknown>;

describe.skipIf(skip)('pulumi up through the real provider host (issue 15)', () => {
  const home = mkdtempSync(join(tmpdir(), 'lvm-pulumi-up-'));
  const config = loadConfig({ ...process.env, LOCALVM_HOME: home });
  const ctx = { config, runner: createExecaRunner() };
  const vmName = `${config.testPrefix}pulumi-up`;
  const ownerA = 'localvm-provider-test/dev/a';
  const ownerB = 'localvm-provider-test/dev/b';
  let host: ProviderHost;
  let providers: Record<string, string>;
  /** What the program sends for the Vm (before check), and what the state holds after create. */
  let vmArgs: Props;
  let vmOuts: Props;

  const urn = (type: string, name: string) => urnOf(type, name);
  const withProvider = (type: string, props: Props): Props => ({ ...props, __provider: providers[type] });
  async function checked(type: string, olds: Props, news: Props): Promise<Props> {
    const r = await host.check(urn(type, 'r'), olds, withProvider(type, news));
    expect(r.failures).toEqual([]);
    return r.inputs;
  }
  const guest = async (argv: string[]) => (await connect(vmName, ctx)).exec(argv);

  beforeAll(async () => {
    ({ host, providers } = await startProjectHost(home));
  }, 120_000);

  afterAll(async () => {
    await deleteVm(vmName, ctx).catch(() => undefined);
    await host?.stop();
    rmSync(home, { recursive: true, force: true });
  }, 120_000);

  it('creates the Vm and records its owner in the VM labels', async () => {
    vmArgs = { name: vmName, image: 'tiny', memory: 256, labels: { suite: 'pulumi-up' }, owner: ownerA };
    const created = await host.create(urn(VM_TYPE, 'a'), await checked(VM_TYPE, {}, vmArgs));
    vmOuts = created.props;
    expect(vmOuts).toMatchObject({ state: 'running', owner: ownerA, labels: { suite: 'pulumi-up' } });
    expect(vmOuts.createdAt).toEqual(expect.any(String));
    expect(vmOuts.bootedAt).toEqual(expect.any(String));
    expect((await findVm(vmName, ctx))?.labels).toEqual({ suite: 'pulumi-up', [OWNER_LABEL]: ownerA });
  });

  it('1: preview with an unknown input shows the update that up does, not a replace', async () => {
    const r = await host.check(urn(VM_TYPE, 'a'), vmOuts, withProvider(VM_TYPE, { ...vmArgs, memory: UNKNOWN }));
    expect(r.failures).toEqual([]);
    // Defaults are applied to the known inputs; the unknown one stays unknown.
    expect(r.inputs).toMatchObject({ memory: UNKNOWN, disks: [], isolated: false, ports: [], cpus: 1 });
    expect(await host.diff(vmName, urn(VM_TYPE, 'a'), vmOuts, r.inputs)).toMatchObject({
      changes: 'some',
      replaces: [],
    });
    const f = await host.check(
      urn(FILE_TYPE, 'f'),
      {},
      withProvider(FILE_TYPE, { vm: vmName, path: '/tmp/p', content: UNKNOWN }),
    );
    expect(f).toMatchObject({ failures: [], inputs: { content: UNKNOWN, mode: 0o644, timeoutMs: 60_000 } });
  });

  it('2: changing a VmFile content rewrites it in place, and a delete never removes what it did not write', async () => {
    const v1 = await checked(FILE_TYPE, {}, { vm: vmName, path: '/tmp/up-file', content: 'one\n' });
    const file = await host.create(urn(FILE_TYPE, 'f'), v1);
    const v2 = await checked(FILE_TYPE, file.props, { vm: vmName, path: '/tmp/up-file', content: 'two\n' });
    expect(await host.diff(file.id, urn(FILE_TYPE, 'f'), file.props, v2)).toMatchObject({
      changes: 'some',
      replaces: [],
    });
    const updated = await host.update(file.id, urn(FILE_TYPE, 'f'), file.props, v2);
    expect(updated.sha256).toBe(sha('two\n'));
    expect((await guest(['cat', '/tmp/up-file'])).stdout).toBe('two\n');
    // What a replace used to do after writing the new file: delete with the old state.
    await host.delete(file.id, urn(FILE_TYPE, 'f'), file.props);
    expect((await guest(['cat', '/tmp/up-file'])).stdout).toBe('two\n');
    await host.delete(file.id, urn(FILE_TYPE, 'f'), updated);
    expect((await guest(['test', '-e', '/tmp/up-file'])).exitCode).not.toBe(0);
  });

  it('6: a labels-only update shows in `localvm list` and does not restart the VM', async () => {
    const before = await findVm(vmName, ctx);
    const news = await checked(VM_TYPE, vmOuts, { ...vmArgs, labels: { suite: 'pulumi-up', tier: 'b' } });
    expect(await host.diff(vmName, urn(VM_TYPE, 'a'), vmOuts, news)).toMatchObject({ changes: 'some', replaces: [] });
    vmOuts = await host.update(vmName, urn(VM_TYPE, 'a'), vmOuts, news);
    vmArgs = { ...vmArgs, labels: { suite: 'pulumi-up', tier: 'b' } };
    const listed = (await listVms(ctx)).find((v) => v.name === vmName);
    expect(listed?.labels).toEqual({ suite: 'pulumi-up', tier: 'b', [OWNER_LABEL]: ownerA });
    expect(listed).toMatchObject({ state: 'running', pid: before?.pid, startedAt: before?.startedAt });
  });

  it('5: a second owner of the same VM name is refused with CONFLICT; adopt: true takes it over', async () => {
    const other = await checked(VM_TYPE, {}, { ...vmArgs, owner: ownerB });
    await expect(host.create(urn(VM_TYPE, 'b'), other)).rejects.toThrow(
      new RegExp(`CONFLICT: .*${vmName}.*owned by ${ownerA}.*adopt`, 's'),
    );
    expect((await findVm(vmName, ctx))?.labels[OWNER_LABEL]).toBe(ownerA);
    const adopting = await checked(VM_TYPE, {}, { ...vmArgs, owner: ownerB, adopt: true });
    const adopted = await host.create(urn(VM_TYPE, 'b'), adopting);
    expect(adopted).toMatchObject({ id: vmName, props: { owner: ownerB, state: 'running' } });
    expect((await findVm(vmName, ctx))?.labels[OWNER_LABEL]).toBe(ownerB);
    // The first owner's delete (its stack destroyed, or the rename's old resource) leaves the VM to its new owner.
    await host.delete(vmName, urn(VM_TYPE, 'a'), vmOuts);
    expect((await findVm(vmName, ctx))?.state).toBe('running');
    vmArgs = { ...vmArgs, owner: ownerB, adopt: true };
    vmOuts = adopted.props;
  });

  describe('dependents of the VM', () => {
    let file: { id: string; props: Props };
    let cmd: { id: string; props: Props };
    let fileIn: Props;
    let cmdIn: Props;

    it('3: refresh keeps an intact file and command, and drops a file changed in the guest', async () => {
      fileIn = await checked(FILE_TYPE, {}, { vm: vmName, path: '/tmp/kept', content: 'kept\n' });
      file = await host.create(urn(FILE_TYPE, 'k'), fileIn);
      cmdIn = await checked(CMD_TYPE, {}, { vm: vmName, create: 'echo ran > /tmp/ran' });
      cmd = await host.create(urn(CMD_TYPE, 'c'), cmdIn);
      expect((await host.read(file.id, urn(FILE_TYPE, 'k'), file.props)).id).toBe(file.id);
      expect((await host.read(cmd.id, urn(CMD_TYPE, 'c'), cmd.props)).id).toBe(cmd.id);

      const tampered = await checked(FILE_TYPE, {}, { vm: vmName, path: '/tmp/tampered', content: 'mine\n' });
      const t = await host.create(urn(FILE_TYPE, 't'), tampered);
      await (await connect(vmName, ctx)).putFile('/tmp/tampered', new TextEncoder().encode('someone else\n'));
      expect((await host.read(t.id, urn(FILE_TYPE, 't'), t.props)).id).toBe('');
    });

    it('4: a memory update warns in the diff that the restart loses guest state; dependents notice', async () => {
      const logged = host.log.length;
      const news = await checked(VM_TYPE, vmOuts, { ...vmArgs, memory: 320 });
      expect(await host.diff(vmName, urn(VM_TYPE, 'a'), vmOuts, news)).toMatchObject({
        changes: 'some',
        replaces: [],
      });
      // The host's stderr is a pipe: the warning may arrive a moment after the gRPC reply.
      const warning = new RegExp(`warning: .*${vmName}.*restart.*lost`, 's');
      for (let i = 0; i < 100 && !warning.test(host.log.slice(logged)); i++)
        await new Promise((r) => setTimeout(r, 20));
      expect(host.log.slice(logged)).toMatch(warning);
      const outs = await host.update(vmName, urn(VM_TYPE, 'a'), vmOuts, news);
      expect(outs.bootedAt).not.toBe(vmOuts.bootedAt);
      vmOuts = outs;
      vmArgs = { ...vmArgs, memory: 320 };

      // In the same `up` (their diff runs after the VM's update): both see the new boot.
      expect((await host.diff(cmd.id, urn(CMD_TYPE, 'c'), cmd.props, cmdIn)).changes).toBe('some');
      expect((await host.diff(file.id, urn(FILE_TYPE, 'k'), file.props, fileIn)).changes).toBe('some');
      // On refresh: the file is gone (tiny keeps its files in RAM), the command ran in another boot.
      expect((await host.read(file.id, urn(FILE_TYPE, 'k'), file.props)).id).toBe('');
      expect((await host.read(cmd.id, urn(CMD_TYPE, 'c'), cmd.props)).id).toBe('');
      // The update `up` runs puts both back.
      const rewritten = await host.update(file.id, urn(FILE_TYPE, 'k'), file.props, fileIn);
      expect((await guest(['cat', '/tmp/kept'])).stdout).toBe('kept\n');
      const rerun = await host.update(cmd.id, urn(CMD_TYPE, 'c'), cmd.props, cmdIn);
      expect((await guest(['cat', '/tmp/ran'])).stdout).toBe('ran\n');
      expect((await host.diff(file.id, urn(FILE_TYPE, 'k'), rewritten, fileIn)).changes).toBe('none');
      expect((await host.diff(cmd.id, urn(CMD_TYPE, 'c'), rerun, cmdIn)).changes).toBe('none');
      file = { id: file.id, props: rewritten };
      cmd = { id: cmd.id, props: rerun };
    });

    it('6: a VM stopped out of band is started again by the next up (running defaults to true)', async () => {
      await stopVm(vmName, { force: true }, ctx);
      const read = await host.read(vmName, urn(VM_TYPE, 'a'), vmOuts);
      expect(read.props.state).toBe('stopped');
      const news = await checked(VM_TYPE, read.props, vmArgs);
      expect(await host.diff(vmName, urn(VM_TYPE, 'a'), read.props, news)).toMatchObject({
        changes: 'some',
        replaces: [],
      });
      vmOuts = await host.update(vmName, urn(VM_TYPE, 'a'), read.props, news);
      expect(vmOuts.state).toBe('running');
      expect((await findVm(vmName, ctx))?.state).toBe('running');
      // A VM asked to stay stopped is not started.
      const stopped = await checked(VM_TYPE, vmOuts, { ...vmArgs, running: false });
      expect((await host.diff(vmName, urn(VM_TYPE, 'a'), vmOuts, stopped)).replaces).toEqual([]);
    });

    it('6: a name change creates before deleting unless host ports collide; VmCommand offers deleteBeforeReplace', async () => {
      const renamed = await checked(VM_TYPE, vmOuts, { ...vmArgs, name: `${vmName}-2` });
      expect(await host.diff(vmName, urn(VM_TYPE, 'a'), vmOuts, renamed)).toMatchObject({
        replaces: ['name'],
        deleteBeforeReplace: false,
      });
      const port = { host: 18_222, guest: 22 };
      const withPort = { ...vmOuts, ports: [{ ...port, protocol: 'tcp', bind: '127.0.0.1' }] };
      const renamedWithPort = await checked(VM_TYPE, withPort, { ...vmArgs, name: `${vmName}-2`, ports: [port] });
      expect((await host.diff(vmName, urn(VM_TYPE, 'a'), withPort, renamedWithPort)).deleteBeforeReplace).toBe(true);

      const first = await checked(CMD_TYPE, cmd.props, { ...cmdIn, triggers: ['v2'] });
      expect(await host.diff(cmd.id, urn(CMD_TYPE, 'c'), cmd.props, first)).toMatchObject({
        replaces: ['triggers'],
        deleteBeforeReplace: false,
      });
      const deleteFirst = await checked(CMD_TYPE, cmd.props, { ...cmdIn, triggers: ['v2'], deleteBeforeReplace: true });
      expect(await host.diff(cmd.id, urn(CMD_TYPE, 'c'), cmd.props, deleteFirst)).toMatchObject({
        replaces: ['triggers'],
        deleteBeforeReplace: true,
      });
    });

    it('3: after the VM was deleted out of band, refresh drops its files and commands', async () => {
      await deleteVm(vmName, ctx);
      expect((await host.read(file.id, urn(FILE_TYPE, 'k'), file.props)).id).toBe('');
      expect((await host.read(cmd.id, urn(CMD_TYPE, 'c'), cmd.props)).id).toBe('');
    });
  });
});
