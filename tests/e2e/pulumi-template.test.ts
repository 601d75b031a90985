/**
 * Level C for templates: the real dynamic-provider host from @pulumi/pulumi, driven over
 * gRPC with the serialized providers of a real program (a Template and a clone of it),
 * against real QEMU. One template and one clone keep it short: the template is built once
 * (one boot), the clone restores in a fraction of one.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { deleteTemplate, listTemplates } from '../../src/operations/template.js';
import { deleteVm, findVm } from '../../src/operations/vm.js';
import { createExecaRunner } from '../../src/runner.js';
import {
  PROJECT_DIR,
  ProviderHost,
  TEMPLATE_TYPE,
  VM_TYPE,
  linkLocalvm,
  runProgramUnderMocks,
  urnOf,
} from '../fixtures/pulumi/harness.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';

const skip = (await missingQemuOrTiny()) !== undefined;

type Props = Record<string, unknown>;

describe.skipIf(skip)('Pulumi Template and a clone through the real provider host', () => {
  const home = mkdtempSync(join(tmpdir(), 'lvm-pulumi-tpl-'));
  const config = loadConfig({ ...process.env, LOCALVM_HOME: home });
  const ctx = { config, runner: createExecaRunner() };
  const tplName = `${config.testPrefix}ptpl`;
  const cloneName = `${config.testPrefix}ptpl-clone`;
  const providers: Record<string, string> = {};
  const timings: Record<string, number> = {};
  let host: ProviderHost;

  const withProvider = (type: string, props: Props): Props => ({ ...props, __provider: providers[type] });
  async function checked(type: string, olds: Props, news: Props): Promise<Props> {
    const r = await host.check(urnOf(type, 'r'), olds, withProvider(type, news));
    expect(r.failures).toEqual([]);
    return r.inputs;
  }

  beforeAll(async () => {
    linkLocalvm(PROJECT_DIR);
    const registered = await runProgramUnderMocks({
      program: join(PROJECT_DIR, 'template.mjs'),
      cwd: PROJECT_DIR,
      expected: 2,
    });
    for (const r of registered) providers[r.type] = r.inputs.__provider as string;
    expect(Object.keys(providers).sort()).toEqual([TEMPLATE_TYPE, VM_TYPE].sort());
    // Wired as documented: the clone's template input is the Template's name output.
    expect(registered.find((r) => r.type === VM_TYPE)?.inputs.template).toBe('fixture-tpl');
    host = await ProviderHost.start({
      cwd: PROJECT_DIR,
      env: {
        LOCALVM_HOME: home,
        PULUMI_NODEJS_PROJECT: 'localvm-provider-test',
        PULUMI_PROJECT: 'localvm-provider-test',
      },
    });
    await host.configure({ 'localvm-provider-test:unused': 'x' });
  }, 120_000);

  afterAll(async () => {
    await deleteVm(cloneName, ctx).catch(() => undefined);
    await deleteTemplate(tplName, ctx).catch(() => undefined);
    await host?.stop();
    rmSync(home, { recursive: true, force: true });
    console.log(
      `[pulumi-template] timings (ms): ${JSON.stringify(timings, (_k, v: unknown) => (typeof v === 'number' ? Math.round(v) : v))}`,
    );
  }, 120_000);

  it('check fails a bad template name and template with image, with property paths, and builds nothing', async () => {
    const tpl = await host.check(
      urnOf(TEMPLATE_TYPE, 'bad'),
      {},
      withProvider(TEMPLATE_TYPE, { name: '../etc', spec: { template: 'x', memory: 1 }, setup: [[]] }),
    );
    expect(tpl.failures.map((f) => f.property).sort()).toEqual(['name', 'setup.0', 'spec.memory', 'spec.template']);
    const both = await host.check(
      urnOf(VM_TYPE, 'bad'),
      {},
      withProvider(VM_TYPE, { name: cloneName, template: tplName, image: 'tiny' }),
    );
    expect(both.failures.map((f) => f.property)).toEqual(['image']);
    expect(both.failures[0]!.reason).toMatch(/cannot be given with template/);
    const badRef = await host.check(
      urnOf(VM_TYPE, 'bad'),
      {},
      withProvider(VM_TYPE, { name: cloneName, template: 'a/b' }),
    );
    expect(badRef.failures.map((f) => f.property)).toEqual(['template']);
    expect(await listTemplates(ctx)).toEqual([]);
  });

  describe('with one template and one clone', () => {
    let tplOuts: Props;
    let cloneOuts: Props;
    let cloneInputs: Props;
    const tplUrn = urnOf(TEMPLATE_TYPE, 'tpl');
    const cloneUrn = urnOf(VM_TYPE, 'clone');

    it('creates the Template: built, set up, frozen, outputs filled', async () => {
      const inputs = await checked(
        TEMPLATE_TYPE,
        {},
        { name: tplName, spec: { memory: 128 }, setup: [['/bin/sh', '-c', 'echo from-setup > /tmp/marker']] },
      );
      const t0 = performance.now();
      const created = await host.create(tplUrn, inputs);
      timings.templateCreateMs = performance.now() - t0;
      expect(created.id).toBe(tplName);
      tplOuts = created.props;
      expect(tplOuts).toMatchObject({ name: tplName, memory: 128, spec: { memory: 128 } });
      expect(tplOuts.sizeBytes).toBeGreaterThan(0);
      expect(tplOuts.qemuVersion).toMatch(/^QEMU emulator version \d/);
      expect(typeof tplOuts.createdAt).toBe('string');
      expect(tplOuts.__provider).toBe(providers[TEMPLATE_TYPE]);
      // Unchanged inputs diff as no change; another setup replaces, deleting first.
      expect(await host.diff(created.id, tplUrn, tplOuts, inputs)).toMatchObject({ changes: 'none' });
      const other = await checked(TEMPLATE_TYPE, tplOuts, { ...inputs, setup: [['true']] });
      expect(await host.diff(created.id, tplUrn, tplOuts, other)).toMatchObject({
        changes: 'some',
        replaces: ['setup'],
        deleteBeforeReplace: true,
      });
    });

    it('creates a Vm with template: restored, its hostname its name, the template set-up inside', async () => {
      cloneInputs = await checked(VM_TYPE, {}, { name: cloneName, template: tplName });
      const t0 = performance.now();
      const created = await host.create(cloneUrn, cloneInputs);
      timings.cloneCreateMs = performance.now() - t0;
      expect(created.id).toBe(cloneName);
      cloneOuts = created.props;
      expect(cloneOuts).toMatchObject({ name: cloneName, template: tplName, state: 'running', memory: 128 });
      expect(cloneOuts).not.toHaveProperty('image');
      const conn = await connect(cloneName, ctx);
      expect((await conn.exec(['cat', '/proc/sys/kernel/hostname'])).stdout.trim()).toBe(cloneName);
      expect((await conn.exec(['cat', '/tmp/marker'])).stdout).toBe('from-setup\n');
      // The clone's real memory and cpus are not a change against inputs that name none.
      expect(await host.diff(cloneName, cloneUrn, cloneOuts, cloneInputs)).toMatchObject({ changes: 'none' });
      const retargeted = await checked(VM_TYPE, cloneOuts, { name: cloneName, template: `${tplName}-b` });
      expect((await host.diff(cloneName, cloneUrn, cloneOuts, retargeted)).replaces).toEqual(['template']);
    });

    it('refresh reads both back', async () => {
      const tpl = await host.read(tplName, tplUrn, tplOuts);
      expect(tpl.id).toBe(tplName);
      expect(tpl.props).toMatchObject({ name: tplName, memory: 128, createdAt: tplOuts.createdAt });
      const clone = await host.read(cloneName, cloneUrn, cloneOuts);
      expect(clone.id).toBe(cloneName);
      expect(clone.props).toMatchObject({ state: 'running', template: tplName, memory: 128 });
    });

    it('deleting the Template while the clone exists is a CONFLICT naming the clone, and keeps the template', async () => {
      await expect(host.delete(tplName, tplUrn, tplOuts)).rejects.toThrow(
        new RegExp(`CONFLICT: template ${tplName} is used by 1 clone\\(s\\): ${cloneName}.*template: tpl\\.name`, 's'),
      );
      expect((await host.read(tplName, tplUrn, tplOuts)).id).toBe(tplName);
      expect((await findVm(cloneName, ctx))?.state).toBe('running');
    });

    it('deletes the Vm, then the Template; refresh then drops both, and a second delete succeeds', async () => {
      await host.delete(cloneName, cloneUrn, cloneOuts);
      expect(await findVm(cloneName, ctx)).toBeUndefined();
      await host.delete(tplName, tplUrn, tplOuts);
      expect(await listTemplates(ctx)).toEqual([]);
      expect((await host.read(tplName, tplUrn, tplOuts)).id).toBe('');
      expect((await host.read(cloneName, cloneUrn, cloneOuts)).id).toBe('');
      await host.delete(tplName, tplUrn, tplOuts);
    });
  });
});
