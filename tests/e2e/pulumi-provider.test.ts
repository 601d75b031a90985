/**
 * Level C: the real dynamic-provider host from @pulumi/pulumi, started in a project
 * directory as the engine starts it, driven over gRPC with the serialized providers of a
 * real program run, against real QEMU VMs. One VM serves most scenarios (boots are slow
 * under TCG); scenarios that destroy it come last.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { deleteVm, findVm, stopVm } from '../../src/operations/vm.js';
import { createExecaRunner } from '../../src/runner.js';
import {
  PROJECT_DIR,
  ProviderHost,
  linkLocalvm,
  runProgramUnderMocks,
  urnOf,
  type CheckResult,
} from '../fixtures/pulumi/harness.js';
import { missingTools } from '../fixtures/tools.js';

const UNKNOWN = '04da6b54-80e4-46f7-96ec-b56ff0331ba9';
const VM_TYPE = 'pulumi-nodejs:dynamic/localvm:Vm';
const CMD_TYPE = 'pulumi-nodejs:dynamic/localvm:VmCommand';
const FILE_TYPE = 'pulumi-nodejs:dynamic/localvm:VmFile';
const skip = missingTools('qemu-system-x86_64', 'qemu-img');

type Props = Record<string, unknown>;

describe.skipIf(skip)('Pulumi provider through the real provider host', () => {
  const home = mkdtempSync(join(tmpdir(), 'lvm-pulumi-'));
  const config = loadConfig({ ...process.env, LOCALVM_HOME: home });
  const ctx = { config, runner: createExecaRunner() };
  const vmName = `${config.testPrefix}pulumi-a`;
  const providers: Record<string, string> = {};
  let host: ProviderHost;
  const timings: Record<string, number> = {};

  const urn = (type: string, name: string) => urnOf(type, name);
  const withProvider = (type: string, props: Props): Props => ({ ...props, __provider: providers[type] });

  /** Check as the engine does before create/update; fails the test on any failure. */
  async function checked(type: string, olds: Props, news: Props): Promise<Props> {
    const r: CheckResult = await host.check(urn(type, 'r'), olds, withProvider(type, news));
    expect(r.failures).toEqual([]);
    return r.inputs;
  }

  beforeAll(async () => {
    linkLocalvm(PROJECT_DIR);
    const registered = await runProgramUnderMocks({
      program: join(PROJECT_DIR, 'index.mjs'),
      cwd: PROJECT_DIR,
      expected: 3,
    });
    for (const r of registered) providers[r.type] = r.inputs.__provider as string;
    expect(Object.keys(providers).sort()).toEqual([VM_TYPE, CMD_TYPE, FILE_TYPE].sort());
    host = await ProviderHost.start({
      cwd: PROJECT_DIR,
      env: {
        LOCALVM_HOME: home,
        PULUMI_NODEJS_PROJECT: 'localvm-provider-test',
        PULUMI_PROJECT: 'localvm-provider-test',
      },
    });
    timings.hostStartMs = host.startMs;
    expect(await host.getPluginInfo()).toMatch(/^\d+\.\d+\.\d+/);
    // The dynamic provider host takes no secrets: the engine sends plaintext and re-marks outputs.
    expect(await host.configure({ 'localvm-provider-test:unused': 'x' })).toEqual({ acceptSecrets: false });
    // The first call loads localvm inside the host; later calls reuse it.
    for (const key of ['firstCheckMs', 'warmCheckMs']) {
      const t0 = performance.now();
      await host.check(urn(VM_TYPE, 'warm'), {}, withProvider(VM_TYPE, { name: 'warm-up' }));
      timings[key] = performance.now() - t0;
    }
  }, 120_000);

  afterAll(async () => {
    await deleteVm(vmName, ctx).catch(() => undefined);
    await host?.stop();
    rmSync(home, { recursive: true, force: true });
    console.log(
      `[pulumi-provider] timings (ms): ${JSON.stringify(timings, (_k, v: unknown) => (typeof v === 'number' ? Math.round(v) : v))}`,
    );
  }, 120_000);

  it('check with bad input returns failures with property paths and creates nothing', async () => {
    const vm = await host.check(
      urn(VM_TYPE, 'bad'),
      {},
      withProvider(VM_TYPE, {
        name: '../etc;reboot',
        memory: 0,
        ports: [{ host: 99999, guest: 22 }],
      }),
    );
    expect(vm.failures.map((f) => f.property).sort()).toEqual(['memory', 'name', 'ports.0.host']);
    const cmd = await host.check(urn(CMD_TYPE, 'bad'), {}, withProvider(CMD_TYPE, { vm: 'x', create: [] }));
    expect(cmd.failures.map((f) => f.property)).toEqual(['create']);
    const file = await host.check(
      urn(FILE_TYPE, 'bad'),
      {},
      withProvider(FILE_TYPE, { vm: 'x', path: 'rel', content: 'c' }),
    );
    expect(file.failures.map((f) => f.property)).toEqual(['path']);
    const vmsDir = join(home, 'vms');
    expect(existsSync(vmsDir) ? readdirSync(vmsDir) : []).toEqual([]);
  });

  it('check with unknown values (preview) passes, and diff counts them as changes', async () => {
    const r = await host.check(
      urn(VM_TYPE, 'preview'),
      {},
      withProvider(VM_TYPE, { name: UNKNOWN, memory: UNKNOWN, ports: [{ host: UNKNOWN, guest: 22 }] }),
    );
    expect(r.failures).toEqual([]);
    const c = await host.check(
      urn(CMD_TYPE, 'preview'),
      {},
      withProvider(CMD_TYPE, { vm: UNKNOWN, create: ['true'], env: { A: UNKNOWN } }),
    );
    expect(c.failures).toEqual([]);
  });

  describe('with one VM', () => {
    let vmOuts: Props;
    let vmInputs: Props;

    it('creates the Vm: booted, ready, outputs filled', async () => {
      vmInputs = await checked(
        VM_TYPE,
        {},
        {
          name: vmName,
          image: 'tiny',
          memory: 256,
          labels: { suite: 'pulumi' },
          userData: '#cloud-config\n',
          readiness: [{ argv: ['test', '-d', '/proc'] }],
        },
      );
      const t0 = performance.now();
      const created = await host.create(urn(VM_TYPE, 'a'), vmInputs);
      timings.vmCreateMs = performance.now() - t0;
      expect(created.id).toBe(vmName);
      vmOuts = created.props;
      expect(vmOuts).toMatchObject({
        name: vmName,
        backend: 'qemu',
        state: 'running',
        image: 'tiny',
        memory: 256,
        accel: 'tcg',
      });
      expect(vmOuts.fingerprint).toMatch(/^[0-9a-f]{16}$/);
      expect(vmOuts.__provider).toBe(providers[VM_TYPE]);
      expect((await findVm(vmName, ctx))?.state).toBe('running');
    });

    it('a VmFile and VmCommand go through a full cycle and are visible in the guest', async () => {
      const t0 = performance.now();
      const fileIn = await checked(
        FILE_TYPE,
        {},
        { vm: vmName, path: '/tmp/pulumi-file', content: 'hello from pulumi\n', mode: 0o640 },
      );
      const file = await host.create(urn(FILE_TYPE, 'f'), fileIn);
      expect(file.props.sha256).toBe(createHash('sha256').update('hello from pulumi\n').digest('hex'));
      const conn = await connect(vmName, ctx);
      const cat = await conn.exec(['cat', '/tmp/pulumi-file']);
      expect(cat.stdout).toBe('hello from pulumi\n');
      expect((await conn.exec(['stat', '-c', '%a', '/tmp/pulumi-file'])).stdout.trim()).toBe('640');

      // Mode and content change in place (same id, same path).
      const modeIn = await checked(FILE_TYPE, file.props, { ...fileIn, mode: 0o600 });
      expect(await host.diff(file.id, urn(FILE_TYPE, 'f'), file.props, modeIn)).toMatchObject({
        changes: 'some',
        replaces: [],
      });
      const updatedFile = await host.update(file.id, urn(FILE_TYPE, 'f'), file.props, modeIn);
      expect((await conn.exec(['stat', '-c', '%a', '/tmp/pulumi-file'])).stdout.trim()).toBe('600');
      const contentIn = await checked(FILE_TYPE, updatedFile, { ...fileIn, mode: 0o600, content: 'other\n' });
      expect(await host.diff(file.id, urn(FILE_TYPE, 'f'), updatedFile, contentIn)).toMatchObject({
        changes: 'some',
        replaces: [],
      });

      const cmdIn = await checked(
        CMD_TYPE,
        {},
        {
          vm: vmName,
          create: 'cat /tmp/pulumi-file; echo "$WHO" > /tmp/pulumi-marker; echo warn >&2',
          delete: ['rm', '-f', '/tmp/pulumi-marker'],
          env: { WHO: 'pulumi' },
        },
      );
      const cmd = await host.create(urn(CMD_TYPE, 'c'), cmdIn);
      expect(cmd.props).toMatchObject({ stdout: 'hello from pulumi\n', stderr: 'warn\n', exitCode: 0 });
      expect((await conn.exec(['cat', '/tmp/pulumi-marker'])).stdout).toBe('pulumi\n');
      expect(await host.diff(cmd.id, urn(CMD_TYPE, 'c'), cmd.props, cmdIn)).toMatchObject({ changes: 'none' });
      const triggered = await checked(CMD_TYPE, cmd.props, { ...cmdIn, triggers: ['v2'] });
      expect((await host.diff(cmd.id, urn(CMD_TYPE, 'c'), cmd.props, triggered)).replaces).toEqual(['triggers']);

      await host.delete(cmd.id, urn(CMD_TYPE, 'c'), cmd.props);
      expect((await conn.exec(['test', '-e', '/tmp/pulumi-marker'])).exitCode).not.toBe(0);
      await host.delete(file.id, urn(FILE_TYPE, 'f'), updatedFile);
      expect((await conn.exec(['test', '-e', '/tmp/pulumi-file'])).exitCode).not.toBe(0);
      timings.fileAndCommandCyclesMs = performance.now() - t0;
    });

    it('a failing command fails the create with the stderr tail, unless allowed', async () => {
      const failing = await checked(CMD_TYPE, {}, { vm: vmName, create: 'echo boom-on-stderr >&2; exit 3' });
      await expect(host.create(urn(CMD_TYPE, 'fail'), failing)).rejects.toThrow(
        /COMMAND_FAILED.*exited with 3.*boom-on-stderr/s,
      );
      const allowed = await checked(CMD_TYPE, {}, { vm: vmName, create: 'exit 3', allowFailure: true });
      expect((await host.create(urn(CMD_TYPE, 'allowed'), allowed)).props.exitCode).toBe(3);
    });

    it('nothing changed: read shows no drift and diff says none', async () => {
      const read = await host.read(vmName, urn(VM_TYPE, 'a'), vmOuts);
      expect(read.id).toBe(vmName);
      expect(read.props).toMatchObject({ state: 'running', memory: 256 });
      const again = await checked(VM_TYPE, read.props, vmInputs);
      expect(await host.diff(vmName, urn(VM_TYPE, 'a'), read.props, again)).toMatchObject({
        changes: 'none',
        replaces: [],
      });
    });

    it('changing the image means replace, deleting first', async () => {
      const news = await checked(VM_TYPE, vmOuts, { ...vmInputs, image: '/var/lib/images/other.qcow2' });
      expect(await host.diff(vmName, urn(VM_TYPE, 'a'), vmOuts, news)).toEqual({
        changes: 'some',
        replaces: ['image'],
        deleteBeforeReplace: true,
      });
    });

    it('memory is updated in place: diff says update, the guest sees the new memory', async () => {
      const news = await checked(VM_TYPE, vmOuts, { ...vmInputs, memory: 384 });
      expect(await host.diff(vmName, urn(VM_TYPE, 'a'), vmOuts, news)).toMatchObject({ changes: 'some', replaces: [] });
      const t0 = performance.now();
      const outs = await host.update(vmName, urn(VM_TYPE, 'a'), vmOuts, news);
      timings.vmUpdateMs = performance.now() - t0;
      expect(outs).toMatchObject({ memory: 384, state: 'running', name: vmName });
      expect((await findVm(vmName, ctx))?.memory).toBe(384);
      const meminfo = (await (await connect(vmName, ctx)).exec(['cat', '/proc/meminfo'])).stdout;
      const totalKb = Number(/MemTotal:\s+(\d+)/.exec(meminfo)?.[1]);
      expect(totalKb).toBeGreaterThan(300 * 1024);
      vmOuts = outs;
    });

    it('refresh after an out-of-band stop shows the VM stopped', async () => {
      await stopVm(vmName, { force: true }, ctx);
      const read = await host.read(vmName, urn(VM_TYPE, 'a'), vmOuts);
      expect(read.id).toBe(vmName);
      expect(read.props.state).toBe('stopped');
    });

    it('refresh after an out-of-band delete drops it; delete twice is fine', async () => {
      await deleteVm(vmName, ctx);
      const read = await host.read(vmName, urn(VM_TYPE, 'a'), vmOuts);
      expect(read.id).toBe('');
      const t0 = performance.now();
      await host.delete(vmName, urn(VM_TYPE, 'a'), vmOuts);
      await host.delete(vmName, urn(VM_TYPE, 'a'), vmOuts);
      timings.deleteTwiceMs = performance.now() - t0;
      // Files and commands of a VM that is gone delete cleanly too.
      const fileIn = await checked(FILE_TYPE, {}, { vm: vmName, path: '/tmp/x', content: 'x' });
      await host.delete(`${vmName}:/tmp/x`, urn(FILE_TYPE, 'g'), { ...fileIn, sha256: 'x' });
      const cmdIn = await checked(CMD_TYPE, {}, { vm: vmName, create: ['true'], delete: ['true'] });
      await host.delete(`${vmName}/x`, urn(CMD_TYPE, 'g'), cmdIn);
      expect(await findVm(vmName, ctx)).toBeUndefined();
    });
  });
});
