import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { realClock, resolveBackend } from '../../src/context.js';
import { LocalVmError, isLocalVmError } from '../../src/errors.js';
import { DEFAULT_HOST, findHost, loadHosts, parseHostsFile } from '../../src/hosts/config.js';
import { answered, fanOut, unanswered } from '../../src/hosts/fanout.js';
import { chooseHost } from '../../src/hosts/placement.js';
import { hostOf, hostsConfigured, hostTargets, resolveHostTarget } from '../../src/hosts/targets.js';
import { createRecordingRunner, type CommandRunner } from '../../src/runner.js';
import { checkVm, diffVm } from '../../src/provider/logic.js';
import { parseVmSpec, specFingerprint } from '../../src/schema.js';
import { reuseHash } from '../../src/vitest/index.js';
import { codeOf, codeOfSync, rejection } from '../fixtures/rejection.js';
import { testTempDir } from '../fixtures/tempDir.js';

function thrown(fn: () => unknown): LocalVmError {
  try {
    fn();
  } catch (error) {
    if (isLocalVmError(error)) return error;
    throw error;
  }
  throw new Error('expected a LocalVmError');
}

describe('hosts file', () => {
  it('maps names to URIs in file order', () => {
    const text = JSON.stringify({ hosts: { box: 'qemu+ssh://me@box.lan/system?keyfile=/k', local: 'qemu:///system' } });
    expect(parseHostsFile(text, '/h.json')).toEqual([
      { name: 'box', uri: 'qemu+ssh://me@box.lan/system?keyfile=/k' },
      { name: 'local', uri: 'qemu:///system' },
    ]);
  });

  it('refuses bad JSON, bad names, bad URIs and an empty list, naming the file', () => {
    for (const text of [
      '{',
      '{"hosts":{}}',
      '{"hosts":{"Bad Name":"qemu:///system"}}',
      '{"hosts":{"a":"http://x/system"}}',
      '{"hosts":{"a":"qemu:///system"},"extra":1}',
    ]) {
      const error = thrown(() => parseHostsFile(text, '/etc/h.json'));
      expect(error.code, text).toBe('VALIDATION');
      expect(error.message, text).toContain('/etc/h.json');
    }
  });

  it('without a file there is one host, local, at the default URI; with one, the file is the list', async () => {
    const dir = testTempDir('localvm-hosts-');
    const config = loadConfig({ HOME: dir, LOCALVM_HOME: dir });
    expect(config.hostsFile).toBe(join(dir, 'hosts.json'));
    expect(await loadHosts(config, 'qemu:///session')).toEqual({
      hosts: [{ name: DEFAULT_HOST, uri: 'qemu:///session' }],
    });
    const file = join(dir, 'other.json');
    writeFileSync(file, JSON.stringify({ hosts: { a: 'qemu:///system' } }));
    const fromEnv = loadConfig({ HOME: dir, LOCALVM_HOME: dir, LOCALVM_HOSTS: file });
    expect(await loadHosts(fromEnv, 'qemu:///session')).toEqual({
      hosts: [{ name: 'a', uri: 'qemu:///system' }],
      source: file,
    });
    writeFileSync(file, 'not json');
    expect(await codeOf(loadHosts(fromEnv, 'qemu:///system'))).toBe('VALIDATION');
  });

  it('an unknown host name is VALIDATION naming the known hosts and the file', () => {
    const list = {
      hosts: [
        { name: 'a', uri: 'qemu:///system' },
        { name: 'b', uri: 'qemu:///session' },
      ],
      source: '/h.json',
    };
    expect(findHost(list, 'b').uri).toBe('qemu:///session');
    const error = thrown(() => findHost(list, 'nope'));
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toContain('"nope"');
    expect(error.message).toContain('a, b');
    expect(error.message).toContain('/h.json');
    expect(error.issues?.[0]?.property).toBe('host');
  });
});

describe('libvirt URIs in the hosts file', () => {
  const file = (uri: string) => JSON.stringify({ hosts: { h: uri } });

  it('accepts local and SSH QEMU URIs', () => {
    for (const uri of [
      'qemu:///system',
      'qemu:///session',
      'qemu+ssh://user@host.example/system?keyfile=/home/u/.ssh/id&no_verify=1',
      'qemu+ssh://localvm-remote@127.0.0.1:2222/session?keyfile=/tmp/k',
    ])
      expect(parseHostsFile(file(uri), '/h.json'), uri).toEqual([{ name: 'h', uri }]);
  });

  it('refuses other schemes and paths, hosts that could read as ssh options, unknown parameters', () => {
    for (const uri of [
      'http://host/system',
      'xen:///system',
      'qemu:///other',
      'qemu+ssh:///system',
      'qemu+ssh://-oProxyCommand=x/system',
      'qemu+ssh://-user@host/system',
      'qemu+ssh://u@host/system?command=/bin/sh',
      'qemu:///system ',
    ])
      expect(
        codeOfSync(() => parseHostsFile(file(uri), '/h.json')),
        uri,
      ).toBe('VALIDATION');
  });

  it('a spec may name a host or auto; a bad one is VALIDATION on host', () => {
    expect(parseVmSpec({ name: 'a', host: 'box' }).host).toBe('box');
    expect(parseVmSpec({ name: 'a', host: 'auto' }).host).toBe('auto');
    const error = thrown(() => parseVmSpec({ name: 'a', host: '-oX' }));
    expect(error.issues?.map((i) => i.property)).toEqual(['host']);
  });
});

describe('placement', () => {
  const MiB = 1024 * 1024;

  it('picks the answering host with the most free memory that fits', () => {
    const hosts = [
      { host: 'a', freeBytes: 1000 * MiB },
      { host: 'b', freeBytes: 3000 * MiB },
      { host: 'c', error: 'connection refused' },
      { host: 'd', freeBytes: 2000 * MiB },
    ];
    expect(chooseHost(hosts, 256)).toBe('b');
    expect(chooseHost(hosts, 3000)).toBe('b');
    // ties go to the earlier host
    expect(
      chooseHost(
        [
          { host: 'x', freeBytes: MiB * 512 },
          { host: 'y', freeBytes: MiB * 512 },
        ],
        256,
      ),
    ).toBe('x');
  });

  it('none fits, or none answers: UNSUPPORTED naming every host and what it has', () => {
    const error = thrown(() =>
      chooseHost(
        [
          { host: 'a', freeBytes: 100 * MiB },
          { host: 'c', error: 'connection refused' },
        ],
        256,
      ),
    );
    expect(error.code).toBe('UNSUPPORTED');
    expect(error.message).toContain('a: 100 MiB free');
    expect(error.message).toContain('c: unreachable (connection refused)');
    expect(thrown(() => chooseHost([], 256)).code).toBe('UNSUPPORTED');
  });
});

describe('fanOut', () => {
  const hosts = [
    { host: 'a', uri: 'qemu:///system' },
    { host: 'b', uri: 'qemu+ssh://b/system' },
    { host: 'c', uri: 'qemu+ssh://c/system' },
  ];

  it('a failing host is its own result and never the others', async () => {
    const results = await fanOut(
      hosts,
      async (h) => {
        if (h.host === 'b') throw new LocalVmError('COMMAND_FAILED', 'Connection refused');
        if (h.host === 'c') throw new Error('boom');
        return [h.host];
      },
      { timeoutMs: 5000 },
    );
    expect(results.map((r) => [r.host, r.ok])).toEqual([
      ['a', true],
      ['b', false],
      ['c', false],
    ]);
    expect(answered(results)).toEqual(['a']);
    const failed = unanswered(results);
    expect(failed.map((f) => [f.host, f.error.code])).toEqual([
      ['b', 'COMMAND_FAILED'],
      ['c', 'INTERNAL'],
    ]);
    // the error names the host it came from
    expect(failed[0]?.error.message).toContain('host b (qemu+ssh://b/system)');
  });

  it('a host that hangs is cut off by its deadline (TIMEOUT), the others answer', async () => {
    const results = await fanOut(
      hosts.slice(0, 2),
      (h, signal) =>
        h.host === 'a'
          ? Promise.resolve([1])
          : new Promise<number[]>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason))),
      { timeoutMs: 50 },
    );
    expect(answered(results)).toEqual([1]);
    expect(unanswered(results).map((f) => f.error.code)).toEqual(['TIMEOUT']);
  });
});

describe('targets', () => {
  // A runner standing in for virsh: freecell answers per URI, or fails like an unreachable host.
  function virshRunner(free: Record<string, number | 'down'>): CommandRunner & { calls: string[][] } {
    const calls: string[][] = [];
    return {
      calls,
      async run(cmd) {
        calls.push([cmd.file, ...cmd.args]);
        const uri = cmd.args[1] ?? '';
        const kib = free[uri];
        const result = { file: cmd.file, args: cmd.args, signal: undefined, timedOut: false, durationMs: 1 };
        if (kib === undefined || kib === 'down')
          return { ...result, exitCode: 1, stdout: '', stderr: 'error: failed to connect to the hypervisor\n' };
        return { ...result, exitCode: 0, stdout: `Total: ${kib} KiB\n`, stderr: '' };
      },
    };
  }

  function hostsCtx(hosts: Record<string, string> | undefined, free: Record<string, number | 'down'> = {}) {
    const dir = testTempDir('localvm-targets-');
    if (hosts) writeFileSync(join(dir, 'hosts.json'), JSON.stringify({ hosts }));
    const runner = virshRunner(free);
    return { config: loadConfig({ HOME: dir, LOCALVM_HOME: dir }), runner, defaultUri: 'qemu:///system' };
  }

  const HOSTS = { a: 'qemu:///system', b: 'qemu+ssh://u@b/session', c: 'qemu+ssh://u@c/system' };

  it('no host: the first host, asking nothing', async () => {
    const ctx = hostsCtx(HOSTS);
    expect(await resolveHostTarget({ memory: 256 }, ctx)).toEqual({ host: 'a', uri: 'qemu:///system' });
    expect(await resolveHostTarget({ memory: 256 }, hostsCtx(undefined))).toEqual({
      host: 'local',
      uri: 'qemu:///system',
    });
    expect(ctx.runner.calls).toEqual([]);
  });

  it('a named host; an unknown one is VALIDATION naming the known hosts', async () => {
    const ctx = hostsCtx(HOSTS);
    expect(await resolveHostTarget({ host: 'b', memory: 256 }, ctx)).toEqual({ host: 'b', uri: HOSTS.b });
    const error = await rejection(resolveHostTarget({ host: 'zz', memory: 256 }, ctx));
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toContain('a, b, c');
  });

  it('auto: the answering host with the most free memory; a down host is passed over', async () => {
    const ctx = hostsCtx(HOSTS, { [HOSTS.a]: 1024 * 1024, [HOSTS.b]: 'down', [HOSTS.c]: 4 * 1024 * 1024 });
    expect(await resolveHostTarget({ host: 'auto', memory: 256 }, ctx)).toEqual({ host: 'c', uri: HOSTS.c });
    expect(ctx.runner.calls.map((c) => c.join(' ')).sort()).toEqual(
      Object.values(HOSTS)
        .map((u) => `virsh -c ${u} freecell`)
        .sort(),
    );
    const error = await rejection(resolveHostTarget({ host: 'auto', memory: 8192 }, ctx));
    expect(error.code).toBe('UNSUPPORTED');
    expect(error.message).toContain('b: unreachable');
  });

  it('connect: that URI, named after the configured host with it; with host too, VALIDATION', async () => {
    const ctx = hostsCtx(HOSTS);
    expect(await resolveHostTarget({ connect: HOSTS.b, memory: 256 }, ctx)).toEqual({ host: 'b', uri: HOSTS.b });
    expect(await resolveHostTarget({ connect: 'qemu:///session', memory: 256 }, ctx)).toEqual({
      host: 'qemu:///session',
      uri: 'qemu:///session',
    });
    expect(await codeOf(resolveHostTarget({ connect: 'http://x/system', memory: 256 }, ctx))).toBe('VALIDATION');
    expect(await codeOf(resolveHostTarget({ connect: HOSTS.b, host: 'b', memory: 256 }, ctx))).toBe('VALIDATION');
  });

  it('--host and --connect narrow the targets to one host', async () => {
    const ctx = hostsCtx(HOSTS);
    expect((await hostTargets(ctx)).map((t) => t.host)).toEqual(['a', 'b', 'c']);
    expect(await hostTargets({ ...ctx, config: { ...ctx.config, libvirtHost: 'c' } })).toEqual([
      { host: 'c', uri: HOSTS.c },
    ]);
    expect(await hostTargets({ ...ctx, config: { ...ctx.config, libvirtConnect: 'qemu:///session' } })).toEqual([
      { host: 'qemu:///session', uri: 'qemu:///session' },
    ]);
    expect(await codeOf(hostTargets({ ...ctx, config: { ...ctx.config, libvirtHost: 'nope' } }))).toBe('VALIDATION');
  });

  it('hostOf: the one host with the VM; several is CONFLICT; none is NOT_FOUND unless a host did not answer', () => {
    const yes = (host: string) => ({ host, uri: host, ok: true as const, value: true });
    const no = (host: string) => ({ host, uri: host, ok: true as const, value: false });
    const down = (host: string) => ({
      host,
      uri: host,
      ok: false as const,
      error: new LocalVmError('COMMAND_FAILED', `host ${host}: refused`),
    });
    expect(hostOf('vm', [no('a'), yes('b')])).toEqual({ host: 'b', uri: 'b' });
    expect(hostOf('vm', [down('a'), yes('b')])).toEqual({ host: 'b', uri: 'b' });
    expect(thrown(() => hostOf('vm', [yes('a'), yes('b')])).code).toBe('CONFLICT');
    expect(thrown(() => hostOf('vm', [no('a'), no('b')])).code).toBe('NOT_FOUND');
    const error = thrown(() => hostOf('vm', [no('a'), down('b')]));
    expect(error.code).toBe('COMMAND_FAILED');
    expect(error.message).toContain('host b');
  });

  it('the implicit default host not answering (no libvirtd here) holds no VMs: NOT_FOUND saying so', () => {
    const down = {
      host: 'local',
      uri: 'qemu:///system',
      ok: false as const,
      error: new LocalVmError('COMMAND_FAILED', 'host local (qemu:///system): failed to connect'),
    };
    const error = thrown(() => hostOf('vm', [down], { downIsAbsent: true }));
    expect(error.code).toBe('NOT_FOUND');
    expect(error.hint).toContain('failed to connect');
  });

  it('hosts count as configured with a hosts file, --host or --connect; not without', async () => {
    expect(await hostsConfigured(hostsCtx(undefined))).toBe(false);
    expect(await hostsConfigured(hostsCtx(HOSTS))).toBe(true);
    const bare = hostsCtx(undefined);
    expect(await hostsConfigured({ ...bare, config: { ...bare.config, libvirtConnect: 'qemu:///session' } })).toBe(
      true,
    );
  });
});

describe('Pulumi Vm on hosts', () => {
  it('host passes check; changing host replaces the VM, an unchanged host does not', () => {
    const checked = checkVm({ name: 'web', backend: 'auto', host: 'box' });
    expect(checked.failures).toEqual([]);
    expect(checked.inputs.host).toBe('box');
    const olds = { ...checked.inputs, state: 'running' };
    expect(diffVm(olds, checkVm({ name: 'web', backend: 'auto', host: 'other' }).inputs).replaces).toEqual(['host']);
    expect(diffVm(olds, checked.inputs).changes).toBe(false);
    expect(checkVm({ name: 'web', host: 'Bad!' }).failures.map((f) => f.property)).toEqual(['host']);
  });
});

describe('fixtures on hosts', () => {
  it('a reused VM is named per host: another host never adopts it; without a host the name is what it was', () => {
    const spec = { image: 'tiny', memory: 256 };
    expect(reuseHash(spec)).toBe(specFingerprint(parseVmSpec({ ...spec, name: 'reuse' })).slice(0, 10));
    const onA = reuseHash({ ...spec, backend: 'auto', host: 'a' });
    expect(onA).toMatch(/^[0-9a-f]{10}$/);
    expect(onA).not.toBe(reuseHash({ ...spec, backend: 'auto', host: 'b' }));
    expect(onA).not.toBe(reuseHash(spec));
  });
});

describe('backend for a spec with a host', () => {
  const ctx = {
    config: loadConfig({ HOME: '/nonexistent', PATH: '/nonexistent' }),
    runner: createRecordingRunner(),
    clock: realClock,
  };

  it('a backend without hosts refuses host and connect (VALIDATION on host), never ignores them', async () => {
    const error = await rejection(resolveBackend('qemu', ctx, 'tiny', { host: 'box' }));
    expect(error.code).toBe('VALIDATION');
    expect(error.issues?.[0]?.property).toBe('host');
    expect(await codeOf(resolveBackend('orbstack', ctx, undefined, { connect: 'qemu:///system' }))).toBe('VALIDATION');
  });

  it('auto with a host never lands on a backend without hosts (tiny would otherwise pick qemu)', async () => {
    const picked = await resolveBackend('auto', ctx, 'tiny', { host: 'box' }).then(
      (r) => r.backend.name,
      (e: LocalVmError) => e.code,
    );
    expect(picked).not.toBe('qemu');
    expect((await resolveBackend('auto', ctx, 'tiny')).backend.name).toBe('qemu');
  });
});
