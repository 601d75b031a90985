import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { mergeCreateSpec, parseDiskArg, parseLabelArg, parseProbeArg } from '../../src/cli/parse.js';
import { checkUserData, parseSpecFile } from '../../src/cli/specFile.js';

import { parseVmSpec } from '../../src/schema.js';
import { FakeBackend } from '../fixtures/fakeBackend.js';
import { codeOfSync } from '../fixtures/rejection.js';
import { cliHarness } from '../fixtures/cli.js';

const cli = () => cliHarness('localvm-cli-flags-', new FakeBackend());

describe('create flags: every spec field is reachable from the command line', () => {
  it('parses disks, labels and probes, and refuses malformed ones with the flag named', () => {
    expect(parseDiskArg('data:10G')).toEqual({ name: 'data', size: '10G' });
    expect(parseLabelArg('team=web=1')).toEqual(['team', 'web=1']);
    expect(parseProbeArg('test -f /ready')).toEqual({ argv: ['test', '-f', '/ready'] });
    expect(parseProbeArg('["/bin/sh","-c","test -f /a && test -f /b"]')).toEqual({
      argv: ['/bin/sh', '-c', 'test -f /a && test -f /b'],
    });
    for (const [fn, property] of [
      [() => parseDiskArg('data'), 'disk'],
      [() => parseLabelArg('=x'), 'label'],
      [() => parseProbeArg('[1,2]'), 'probe'],
      [() => parseProbeArg('   '), 'probe'],
    ] as const) {
      expect(codeOfSync(fn)).toBe('VALIDATION');
      try {
        fn();
      } catch (e) {
        expect((e as { issues: { property: string }[] }).issues[0]?.property).toBe(property);
      }
    }
  });

  it('merges a spec file with the flags over it, into a spec the schema accepts', () => {
    const base = parseSpecFile(
      'name: web\nmemory: 512\nlabels: { team: a }\nports: [{ host: 8080, guest: 80 }]\n',
      'vm.yaml',
    );
    const spec = parseVmSpec(
      mergeCreateSpec(
        base,
        { name: 'web', cpus: 2 },
        {
          disk: ['data:64M'],
          label: ['env=ci'],
          probe: ['true'],
          isolated: true,
          kernel: '/k',
          initrd: '/i',
          append: 'console=ttyS0',
          arch: 'amd64',
          accel: 'tcg',
          diskSize: '2G',
        },
        '#cloud-config\n{}\n',
      ),
    );
    expect(spec).toMatchObject({
      name: 'web',
      memory: 512,
      cpus: 2,
      labels: { team: 'a', env: 'ci' },
      ports: [{ host: 8080, guest: 80 }],
      disks: [{ name: 'data', size: 64 * 1024 * 1024 }],
      readiness: [{ argv: ['true'] }],
      isolated: true,
      kernel: '/k',
      arch: 'x86_64',
      accel: 'tcg',
      userData: '#cloud-config\n{}\n',
    });
  });

  it('--transport reaches the spec; an unknown transport is a usage error naming it, nothing created', async () => {
    const { backend, run } = cli();
    const ok = await run('create', 'tr-ssh', '--image', '/srv/guest.qcow2', '--transport', 'ssh', '--no-wait');
    expect(ok.code, ok.stderr).toBe(0);
    expect(backend.vms.get('tr-ssh')?.info.spec?.transport).toBe('ssh');
    const bad = await run('create', 'tr-bad', '--transport', 'telnet', '--no-wait', '--json');
    expect(bad.code).toBe(2);
    expect(JSON.parse(bad.stderr).error.issues.map((i: { property: string }) => i.property)).toContain('transport');
    expect(backend.vms.has('tr-bad')).toBe(false);
  });

  it('reads JSON spec files too, and refuses a file that holds no mapping', () => {
    expect(parseSpecFile('{"name": "web"}', 'vm.json')).toEqual({ name: 'web' });
    expect(codeOfSync(() => parseSpecFile('- a\n- b\n', 'vm.yaml'))).toBe('VALIDATION');
    expect(codeOfSync(() => parseSpecFile('name: [unclosed', 'vm.yaml'))).toBe('VALIDATION');
  });

  it('checks user-data as cloud-init reads it: refuses non-YAML, warns about a missing header', () => {
    expect(checkUserData('#cloud-config\nusers: []\n', 'u')).toBeUndefined();
    expect(checkUserData('#!/bin/sh\necho hi\n', 'u')).toBeUndefined();
    expect(checkUserData('hostname: x\n', 'u')).toMatch(/does not start with #cloud-config/);
    expect(codeOfSync(() => checkUserData('#cloud-config\nusers: [\n', 'u'))).toBe('VALIDATION');
    expect(codeOfSync(() => checkUserData('#cloud-config\n- a list\n', 'u'))).toBe('VALIDATION');
  });

  it('create -f file --label --user-data reaches the backend; bad files fail with 2 or 3 and create nothing', async () => {
    const { home, backend, run } = cli();
    const file = join(home, 'vm.yaml');
    writeFileSync(file, 'name: fromfile\nmemory: 384\n');
    const ud = join(home, 'user-data');
    writeFileSync(ud, '#cloud-config\nwrite_files: []\n');
    const ok = await run('create', '-f', file, '--label', 'a=b', '--user-data', ud, '--disk', 'data:32M', '--json');
    expect(ok.code, ok.stderr).toBe(0);
    const vm = backend.vms.get('fromfile')?.info;
    expect(vm).toMatchObject({ memory: 384, labels: { a: 'b' } });
    expect(vm?.spec?.userData).toBe('#cloud-config\nwrite_files: []\n');

    writeFileSync(ud, '#cloud-config\nusers: [\n');
    expect((await run('create', 'bad1', '--user-data', ud)).code).toBe(2);
    expect((await run('create', 'bad2', '--user-data', join(home, 'missing'))).code).toBe(3);
    const unreadable = join(home, 'secret');
    writeFileSync(unreadable, '#cloud-config\n{}\n');
    chmodSync(unreadable, 0o000);
    // root reads any file; elsewhere an unreadable file is a VALIDATION error naming userData.
    const r = await run('create', 'bad3', '--user-data', unreadable);
    expect(process.getuid?.() === 0 ? 0 : 2).toBe(r.code);
    expect((await run('create', '--memory', '256')).code).toBe(2);
    expect([...backend.vms.keys()].filter((n) => n.startsWith('bad'))).toEqual(
      process.getuid?.() === 0 ? ['bad3'] : [],
    );
  });
});
