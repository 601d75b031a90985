import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { classifyVirshFailure } from '../../src/backends/libvirt/classify.js';
import { chooseDomainType } from '../../src/backends/libvirt/observe.js';
import {
  parseCapabilities,
  parseDomainDisks,
  parseDominfo,
  parseDomstate,
  parseFreecell,
  parseNames,
  parseNodeinfo,
  parseSnapshotList,
  parseVolList,
} from '../../src/backends/libvirt/parse.js';
import { poolDirFor } from '../../src/backends/libvirt/target.js';
import { parseLibvirtUri, runsOnThisMachine } from '../../src/backends/libvirt/uri.js';
import { createVirsh } from '../../src/backends/libvirt/virsh.js';
import { volumesOf } from '../../src/backends/libvirt/volumes.js';
import type { RunResult } from '../../src/runner.js';
import { parseVmSpec } from '../../src/schema.js';
import { codeOfSync } from '../fixtures/rejection.js';

const fixture = (f: string) => readFileSync(new URL(`../fixtures/libvirt/${f}`, import.meta.url), 'utf8');

describe('virsh output parsers (captured from libvirt 9.0)', () => {
  it('domstate --reason', () => {
    expect(parseDomstate(fixture('domstate-running.txt'))).toEqual({
      state: 'running',
      reason: 'unpaused',
      raw: 'running',
    });
    expect(parseDomstate(fixture('domstate-destroyed.txt'))).toEqual({
      state: 'stopped',
      reason: 'destroyed',
      raw: 'shut off',
    });
    expect(parseDomstate('in shutdown (user)\n').state).toBe('stopping');
    expect(parseDomstate('crashed (panicked)\n')).toMatchObject({ state: 'stopped', reason: 'crashed' });
    expect(parseDomstate('paused (user)\n')).toMatchObject({ state: 'unknown', reason: 'paused' });
  });

  it('dominfo, running and shut off', () => {
    expect(parseDominfo(fixture('dominfo-running.txt'))).toEqual({
      id: 6,
      uuid: '46252d6a-e6f5-4c50-875d-1050d81fb955',
      cpus: 1,
      maxMemoryKib: 262144,
      persistent: true,
    });
    expect(parseDominfo(fixture('dominfo-shutoff.txt')).id).toBeUndefined();
  });

  it('list --name, nodeinfo, freecell', () => {
    expect(parseNames(fixture('list-names.txt'))).toEqual(['lvcoret-a']);
    expect(parseNames('\n')).toEqual([]);
    expect(parseNodeinfo(fixture('nodeinfo.txt'))).toEqual({ arch: 'x86_64', cpus: 2, memoryKib: 11495160 });
    expect(parseFreecell(fixture('freecell.txt'))).toBe(8218816);
    expect(parseFreecell('    0:    1000 KiB\n    1:    2000 KiB\n')).toBe(3000);
  });

  it('vol-list and snapshot-list tables (a column value with spaces stays whole)', () => {
    expect(parseVolList(fixture('vol-list.txt'))).toEqual([
      { name: 'k.initrd', path: '/var/lib/libvirt/images/lvcoretest/k.initrd' },
      { name: 'k.vmlinux', path: '/var/lib/libvirt/images/lvcoretest/k.vmlinux' },
      { name: 'st.qcow2', path: '/var/lib/libvirt/images/lvcoretest/st.qcow2' },
    ]);
    expect(parseSnapshotList(fixture('snapshot-list.txt'))).toEqual([
      { name: 'second', createdAt: '2026-12-01T23:33:17.000Z' },
      { name: 'snap-one', createdAt: '2026-12-01T23:33:17.000Z' },
    ]);
    expect(parseSnapshotList(' Name   Creation Time   State\n-------------------------\n\n')).toEqual([]);
  });

  it('capabilities: host arch and the domain types per guest arch', () => {
    const caps = parseCapabilities(fixture('capabilities.xml'));
    expect(caps.hostArch).toBe('x86_64');
    expect([...(caps.guests.get('x86_64') ?? [])].sort()).toEqual(['kvm', 'qemu']);
    expect(caps.guests.has('aarch64')).toBe(false);
  });

  it('the disks of a dumped domain', () => {
    expect(parseDomainDisks(fixture('dumpxml-running.xml'))).toEqual([
      { target: 'vda', pool: 'lvcoretest', volume: 'st.qcow2' },
    ]);
  });
});

describe('choosing the domain type from the host capabilities', () => {
  const caps = parseCapabilities(fixture('capabilities.xml'));
  const host = 'host default (qemu:///system)';
  it('kvm where offered and (on this machine) working, qemu otherwise or when asked for tcg', () => {
    expect(chooseDomainType(caps, 'x86_64', 'auto', true, host)).toBe('kvm');
    expect(chooseDomainType(caps, 'x86_64', 'auto', undefined, host)).toBe('kvm');
    expect(chooseDomainType(caps, 'x86_64', 'auto', false, host)).toBe('qemu');
    expect(chooseDomainType(caps, 'x86_64', 'tcg', true, host)).toBe('qemu');
    expect(chooseDomainType(caps, 'x86_64', 'kvm', false, host)).toBe('kvm');
    const noKvm = { hostArch: 'x86_64', guests: new Map([['x86_64', new Set(['qemu'])]]) };
    expect(chooseDomainType(noKvm, 'x86_64', 'auto', true, host)).toBe('qemu');
    expect(codeOfSync(() => chooseDomainType(noKvm, 'x86_64', 'kvm', true, host))).toBe('UNSUPPORTED');
  });
  it('an arch the host lacks is UNSUPPORTED naming the host', () => {
    expect(() => chooseDomainType(caps, 'aarch64', 'auto', true, host)).toThrow(
      /\(qemu:\/\/\/system\) cannot run aarch64 guests/,
    );
    expect(codeOfSync(() => chooseDomainType(caps, 'aarch64', 'auto', true, host))).toBe('UNSUPPORTED');
    expect(codeOfSync(() => chooseDomainType(caps, 'x86_64', 'hvf', true, host))).toBe('UNSUPPORTED');
  });
});

describe('virsh argv', () => {
  const v = createVirsh('qemu+ssh://u@h/system?keyfile=/k', '/usr/bin/virsh');
  it('names every value by its option, one argv element each; XML only by file', () => {
    expect(v.define('/tmp/x/input')).toEqual({
      file: '/usr/bin/virsh',
      args: ['-c', 'qemu+ssh://u@h/system?keyfile=/k', 'define', '--file', '/tmp/x/input'],
    });
    expect(v.agentCommand('-vm', '{"execute":"guest-ping"}', 5).args.slice(2)).toEqual([
      'qemu-agent-command',
      '--timeout',
      '5',
      '--domain',
      '-vm',
      '--cmd',
      '{"execute":"guest-ping"}',
    ]);
    expect(v.volUpload('localvm', 'img-1.vmlinux', '/a b/k').args.slice(2)).toEqual([
      'vol-upload',
      '--pool',
      'localvm',
      '--vol',
      'img-1.vmlinux',
      '--file',
      '/a b/k',
    ]);
    expect(v.attachDevice('a', '/f', true).args.slice(-2)).toEqual(['--live', '--config']);
    expect(v.detachDevice('a', '/f', false).args.slice(-1)).toEqual(['--config']);
    expect(v.undefine('a').args.slice(2)).toEqual(['undefine', '--snapshots-metadata', '--domain', 'a']);
    expect(v.metadata('a', 'https://n/').args.slice(2)).toEqual([
      'metadata',
      '--config',
      '--domain',
      'a',
      '--uri',
      'https://n/',
    ]);
  });
  it("a VM's volumes are exactly those named `<vm>.`", () => {
    expect(
      volumesOf('a', ['a.state.qcow2', 'ab.state.qcow2', 'a-b.root.qcow2', 'img-1.vmlinux', 'a.console.log']),
    ).toEqual(['a.state.qcow2', 'a.console.log']);
  });
});

describe('connection URIs', () => {
  it('accepts the local daemons and ssh with a key file', () => {
    expect(parseLibvirtUri('qemu:///system')).toMatchObject({ transport: 'local', daemon: 'system' });
    expect(parseLibvirtUri('qemu:///session')).toMatchObject({ transport: 'local', daemon: 'session' });
    expect(
      parseLibvirtUri('qemu+ssh://alice@127.0.0.1:2222/session?keyfile=/home/a/.ssh/id_ed25519&no_verify=1'),
    ).toEqual({
      uri: 'qemu+ssh://alice@127.0.0.1:2222/session?keyfile=/home/a/.ssh/id_ed25519&no_verify=1',
      transport: 'ssh',
      daemon: 'session',
      user: 'alice',
      host: '127.0.0.1',
      port: 2222,
      keyfile: '/home/a/.ssh/id_ed25519',
      noVerify: true,
    });
  });
  it.each([
    'qemu+tcp://h/system',
    'xen:///system',
    'qemu:///embed?root=/tmp',
    'qemu+ssh://h/system?command=/bin/sh',
    'qemu+ssh://h/system?keyfile=relative',
    'qemu+ssh://h/system?keyfile=/a;rm',
    'qemu+ssh://a b@h/system',
    'qemu+ssh://-oProxyCommand=x/system',
    'qemu+ssh://h:99999/system',
    'qemu+ssh://h/other',
  ])('refuses %s at the schema', (connect) => {
    expect(codeOfSync(() => parseVmSpec({ name: 'a', backend: 'libvirt', connect }))).toBe('VALIDATION');
  });
  it('knows which URIs run QEMU on this machine: the local daemons and ssh to a loopback address', () => {
    expect(runsOnThisMachine('qemu:///system')).toBe(true);
    expect(runsOnThisMachine('qemu:///session')).toBe(true);
    expect(runsOnThisMachine('qemu+ssh://lvremote@127.0.0.1:2222/session?no_verify=1')).toBe(true);
    expect(runsOnThisMachine('qemu+ssh://127.3.4.5/system')).toBe(true);
    expect(runsOnThisMachine('qemu+ssh://bob@localhost/system')).toBe(true);
    expect(runsOnThisMachine('qemu+ssh://bob@build-7/system')).toBe(false);
    expect(runsOnThisMachine('qemu+ssh://10.0.0.127/system')).toBe(false);
    expect(runsOnThisMachine('qemu+ssh://127.0.0.1.example.com/system')).toBe(false);
  });
  it('puts the pool under the system image dir, or the session user home', () => {
    const config = { stateDir: '/st' };
    expect(poolDirFor('qemu:///system', config)).toBe('/var/lib/libvirt/images/localvm');
    expect(poolDirFor('qemu:///session', config)).toBe('/st/libvirt/pool');
    expect(poolDirFor('qemu+ssh://bob@h/session', config)).toBe('/home/bob/.local/share/libvirt/images/localvm');
  });
});

describe('virsh failures', () => {
  const r = (stderr: string, args = ['-c', 'qemu:///system', 'start', '--domain', 'a']): RunResult => ({
    file: 'virsh',
    args,
    exitCode: 1,
    stdout: '',
    stderr,
    timedOut: false,
    durationMs: 5,
  });
  it.each([
    ["error: failed to get domain 'a'\n", 'NOT_FOUND'],
    ["error: Storage volume not found: no storage vol with matching path 'x'\n", 'NOT_FOUND'],
    ["error: operation failed: domain 'a' already exists with uuid 1\n", 'ALREADY_EXISTS'],
    ['error: Requested operation is not valid: domain is not running\n', 'CONFLICT'],
    ['error: Guest agent is not responding: QEMU guest agent is not connected\n', 'TRANSIENT'],
    ["error: XML error: Invalid value for attribute 'type' in element 'backend': 'passt'.\n", 'UNSUPPORTED'],
    ['error: something new\n', 'COMMAND_FAILED'],
  ])('%s → %s, naming the URI', (stderr, code) => {
    const e = classifyVirshFailure(r(stderr), 'qemu:///system', 'a');
    expect(e.code).toBe(code);
    expect(e.message).toContain('qemu:///system');
    expect(e.vm).toBe('a');
  });
  it('an unreachable daemon says so, names the URI and is marked for list to skip', () => {
    const e = classifyVirshFailure(
      r(
        'error: failed to connect to the hypervisor\nerror: Cannot recv data: ssh: connect to host 127.0.0.1 port 22: Connection refused: Connection reset by peer\n',
        ['-c', 'qemu+ssh://u@127.0.0.1/system', 'list'],
      ),
      'qemu+ssh://u@127.0.0.1/system',
    );
    expect(e.message).toMatch(/^cannot reach libvirt at qemu\+ssh:\/\/u@127\.0\.0\.1\/system: Cannot recv data/);
    expect(e.details).toMatchObject({ unreachable: true });
    expect(e.transient).toBe(false);
    const key = classifyVirshFailure(
      r('error: Cannot recv data: Permission denied (publickey).\n'),
      'qemu+ssh://u@h/system',
    );
    expect(key.hint).toMatch(/keyfile/);
  });
  it('a timeout is TIMEOUT', () => {
    expect(classifyVirshFailure({ ...r(''), timedOut: true, exitCode: -1 }, 'qemu:///system').code).toBe('TIMEOUT');
  });
});
