import { describe, expect, it } from 'vitest';
import type { VmInfo } from '../../src/backend.js';

import { formatVmTable, vmToJson } from '../../src/cli/format.js';

import { LocalVmError } from '../../src/errors.js';
import type { HostResult } from '../../src/hosts/fanout.js';
import { listVmsByHost } from '../../src/operations/hosts.js';
import { cleanupVms } from '../../src/operations/vm.js';

import { FakeBackend } from '../fixtures/fakeBackend.js';
import { cliHarness } from '../fixtures/cli.js';

function vm(name: string, host?: string): VmInfo {
  return {
    name,
    backend: 'qemu',
    host,
    state: 'running',
    ports: [],
    image: 'tiny',
    arch: 'x86_64',
    cpus: 1,
    memory: 256,
    labels: {},
  };
}

/** The fake backend with hosts: `a` answers with its VMs, `b` is down. */
class HostsBackend extends FakeBackend {
  async listByHost(): Promise<HostResult<VmInfo[]>[]> {
    const mine = await super.list();
    return [
      { host: 'a', uri: 'qemu:///system', ok: true, value: mine.map((v) => ({ ...v, host: 'a' })) },
      {
        host: 'b',
        uri: 'qemu+ssh://u@127.0.0.1/session',
        ok: false,
        error: new LocalVmError('COMMAND_FAILED', 'host b (qemu+ssh://u@127.0.0.1/session): Connection refused'),
      },
    ];
  }
}

const harness = () => cliHarness('localvm-hosts-cli-', new HostsBackend());

describe('list across hosts', () => {
  it('the table has a HOST column only when some VM has a host', () => {
    expect(formatVmTable([vm('x')]).split('\n')[0]).not.toContain('HOST');
    const table = formatVmTable([vm('web', 'box')]);
    expect(table.split('\n')[0]).toMatch(/^NAME +STATE +BACKEND +HOST +CPUS/);
    expect(table.split('\n')[1]).toMatch(/^web +running +qemu +box +1/);
    expect(vmToJson(vm('web', 'box')).host).toBe('box');
    expect('host' in vmToJson(vm('x'))).toBe(false);
  });

  it('a host that is down is a row and a line with its error; the others are listed, exit 0', async () => {
    const { run } = harness();
    expect((await run('create', 'web', '--no-wait')).code).toBe(0);
    const listed = await run('list');
    expect(listed.code).toBe(0);
    const lines = listed.stdout.split('\n');
    expect(lines[0]).toMatch(/HOST/);
    expect(lines[1]).toMatch(/^web +running +qemu +a /);
    expect(lines[2]).toMatch(/^- +unreachable +qemu +b /);
    expect(listed.stdout).toContain('unreachable: host b (qemu+ssh://u@127.0.0.1/session): Connection refused');

    const json = await run('list', '--json');
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject([{ name: 'web', host: 'a' }]);
    expect(JSON.parse(json.stderr)).toMatchObject({
      unreachable: { host: 'b', uri: 'qemu+ssh://u@127.0.0.1/session', error: { code: 'COMMAND_FAILED' } },
    });
  });

  it('listVmsByHost and cleanup report the host that did not answer and clean the others', async () => {
    const { run, backend, context } = harness();
    await run('create', 'pfx-one', '--no-wait');
    await run('create', 'other', '--no-wait');
    const listing = await listVmsByHost(context);
    expect(listing.vms.map((v) => [v.name, v.host])).toEqual([
      ['other', 'a'],
      ['pfx-one', 'a'],
    ]);
    expect(listing.unreachable.map((u) => u.host)).toEqual(['b']);
    const r = await cleanupVms({ prefix: 'pfx-' }, context);
    expect(r.deleted).toEqual(['pfx-one']);
    expect(r.unreachable.map((u) => [u.host, u.error.code])).toEqual([['b', 'COMMAND_FAILED']]);
    expect([...backend.vms.keys()]).toEqual(['other']);
    const cli = await run('cleanup', '--prefix', 'other');
    expect(cli.code).toBe(0);
    expect(cli.stderr).toContain('not cleaned (unreachable): host b');
  });
});
