/**
 * Level B: the example stack and the test project's program run under
 * `pulumi.runtime.setMocks` (in a plain Node process, from the compiled dist/), and what
 * they register is what the engine would receive: types, inputs, a serialized provider
 * that carries no secret, and secrets still marked as such.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  EXAMPLE_DIR,
  PROJECT_DIR,
  REPO_ROOT,
  SECRET_SIG,
  SECRET_VALUE,
  linkLocalvm,
  runProgramUnderMocks,
  type Registered,
} from '../fixtures/pulumi/harness.js';

const version = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const USER_DATA = '#cloud-config\npassword: mock-secret-8c41e\n';

function byName(list: Registered[], name: string): Registered {
  const found = list.find((r) => r.name === name);
  if (!found) throw new Error(`${name} was not registered (got ${list.map((r) => r.name).join(', ')})`);
  return found;
}

function expectSecret(value: unknown, plaintext: string): void {
  expect(value).toEqual({ [SECRET_SIG]: SECRET_VALUE, value: plaintext });
}

describe('the example stack under mocks (compiled as its README says)', () => {
  let registered: Registered[];

  beforeAll(async () => {
    linkLocalvm(EXAMPLE_DIR);
    // What `npm run build` does in the example: tsc to bin/, then Pulumi runs bin/index.js.
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    await execa(process.execPath, [tsc, '-p', join(EXAMPLE_DIR, 'tsconfig.json')], { timeout: 120_000 });
    registered = await runProgramUnderMocks({
      program: join(EXAMPLE_DIR, 'bin/index.js'),
      cwd: EXAMPLE_DIR,
      expected: 8,
      env: {
        PULUMI_CONFIG: JSON.stringify({ 'localvm-mock:userData': USER_DATA, 'localvm-mock:prefix': 'demo' }),
        PULUMI_CONFIG_SECRET_KEYS: JSON.stringify(['localvm-mock:userData']),
      },
    });
  }, 60_000);

  it('registers two VMs, a template, a file, two commands, a disk and its attachment as localvm dynamic resources', () => {
    const types = Object.fromEntries(registered.map((r) => [r.name, r.type]));
    expect(types).toEqual({
      server: 'pulumi-nodejs:dynamic/localvm:Vm',
      client: 'pulumi-nodejs:dynamic/localvm:Vm',
      base: 'pulumi-nodejs:dynamic/localvm:Template',
      motd: 'pulumi-nodejs:dynamic/localvm:VmFile',
      'server-hello': 'pulumi-nodejs:dynamic/localvm:VmCommand',
      'client-hello': 'pulumi-nodejs:dynamic/localvm:VmCommand',
      data: 'pulumi-nodejs:dynamic/localvm:Disk',
      'data-on-client': 'pulumi-nodejs:dynamic/localvm:DiskAttachment',
    });
  });

  it('passes the spec as inputs, with the package version', () => {
    const server = byName(registered, 'server').inputs;
    expect(server).toMatchObject({
      name: 'demo-server',
      image: 'tiny',
      memory: 256,
      ports: [{ host: 18080, guest: 8080 }],
      labels: { role: 'server' },
      readiness: [{ argv: ['true'] }],
      providerVersion: version,
    });
    // Output-only properties are not inputs.
    expect(server).not.toHaveProperty('state');
    expect(server).not.toHaveProperty('ip4');
    expect(server).not.toHaveProperty('bootedAt');
  });

  it('names the owner of each VM: project, stack and resource name (the provider never sees the URN)', () => {
    expect(byName(registered, 'server').inputs.owner).toBe('localvm-mock/dev/server');
    expect(byName(registered, 'client').inputs.owner).toBe('localvm-mock/dev/client');
  });

  it('wires the command and file to the VMs through their outputs', () => {
    expect(byName(registered, 'motd').inputs).toMatchObject({
      vm: 'demo-server',
      path: '/etc/motd',
      content: 'served by demo-server\n',
      mode: 0o644,
    });
    expect(byName(registered, 'server-hello').inputs).toMatchObject({
      vm: 'demo-server',
      create: ['cat', '/etc/motd'],
    });
    expect(byName(registered, 'client').inputs).toMatchObject({ template: 'demo-base' });
    expect(byName(registered, 'base').inputs).toMatchObject({
      name: 'demo-base',
      spec: { image: 'tiny', memory: 256 },
    });
    expect(byName(registered, 'client-hello').inputs).toMatchObject({
      vm: 'demo-client',
      env: { GREETING: 'out-of-server-hello' },
      delete: ['rm', '-f', '/tmp/greeting'],
    });
    expect(byName(registered, 'data').inputs).toMatchObject({ name: 'demo-data', size: '64M' });
    // The attachment takes both outputs, so Pulumi deletes it before the disk and the client.
    expect(byName(registered, 'data-on-client').inputs).toMatchObject({ vm: 'demo-client', disk: 'demo-data' });
    expect(byName(registered, 'data').inputs.__provider).toContain('diskCreate');
    expect(byName(registered, 'data-on-client').inputs.__provider).toContain('diskAttachmentCreate');
  });

  it('keeps userData secret and out of every serialized provider', () => {
    expectSecret(byName(registered, 'server').inputs.userData, USER_DATA);
    for (const r of registered) {
      const provider = r.inputs.__provider;
      expect(typeof provider, `${r.name}: __provider must be a plain (non-secret) string`).toBe('string');
      expect(provider as string).toMatch(/^exports\.handler = /);
      expect(provider as string).not.toContain('mock-secret-8c41e');
    }
  });
});

describe('the test project program under mocks (plain Node, as a compiled program)', () => {
  let registered: Registered[];

  beforeAll(async () => {
    linkLocalvm(PROJECT_DIR);
    registered = await runProgramUnderMocks({ program: join(PROJECT_DIR, 'index.mjs'), cwd: PROJECT_DIR, expected: 3 });
  }, 60_000);

  it('serializes small providers that load the implementation at call time', () => {
    for (const r of registered) {
      const provider = r.inputs.__provider as string;
      expect(provider).toMatch(/^exports\.handler = /);
      // Loaded lazily from the project's node_modules, not captured by value.
      expect(provider).toContain("'localvm/pulumi'");
      expect(provider).toContain('loadProviderImpl');
      // No local module, path or the schema was captured.
      expect(provider).not.toMatch(/zod|vmSpecSchema|createVmWithRetry|\/work\/|require\(/);
      expect(provider.length).toBeLessThan(4_000);
      expect(provider).not.toContain('fixture-secret-5d1c');
    }
    expectSecret(byName(registered, 'vm').inputs.userData, '#cloud-config\npassword: fixture-secret-5d1c\n');
  });

  it('gives each resource type its own provider', () => {
    const providers = new Set(registered.map((r) => r.inputs.__provider));
    expect(providers.size).toBe(3);
    expect(byName(registered, 'vm').inputs.__provider).toContain('vmCreate');
    expect(byName(registered, 'cmd').inputs.__provider).toContain('vmCommandCreate');
    expect(byName(registered, 'file').inputs.__provider).toContain('vmFileCreate');
  });
});
