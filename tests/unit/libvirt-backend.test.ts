/**
 * The libvirt backend over a scripted runner (no virsh here): a create that fails at start
 * removes exactly what it made, and guest-agent commands travel as one JSON argv element.
 * The real daemon is exercised by tests/integration/libvirt.test.ts.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLibvirtBackend } from '../../src/backends/libvirt/backend.js';
import { virshAgentChannel } from '../../src/backends/libvirt/guest.js';
import { createLibvirtHost } from '../../src/backends/libvirt/host.js';
import { homeId, metadataNode } from '../../src/backends/libvirt/metadata.js';
import { loadConfig } from '../../src/config.js';
import type { Command, CommandRunner, RunResult } from '../../src/runner.js';
import { parseVmSpec } from '../../src/schema.js';
import { fakeClock } from '../fixtures/fakeBackend.js';
import { rejection } from '../fixtures/rejection.js';

const fixture = (f: string) => readFileSync(new URL(`../fixtures/libvirt/${f}`, import.meta.url), 'utf8');

type Reply = Partial<Pick<RunResult, 'exitCode' | 'stdout' | 'stderr'>>;

/** A runner answering virsh subcommands from `script`; records every argv after `-c URI`. */
function scripted(script: Record<string, Reply | ((args: string[]) => Reply)>): CommandRunner & { seen: string[][] } {
  const seen: string[][] = [];
  return {
    seen,
    async run(cmd: Command) {
      const args = cmd.args.slice(2);
      seen.push(args);
      const entry = script[args[0] ?? ''];
      const r = typeof entry === 'function' ? entry(args) : (entry ?? {});
      return {
        file: cmd.file,
        args: cmd.args,
        exitCode: 0,
        stdout: '',
        stderr: '',
        timedOut: false,
        durationMs: 1,
        ...r,
      };
    },
  };
}

let dir: string;
let kernel: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lvcore-unit-'));
  kernel = join(dir, 'vmlinux');
  await writeFile(kernel, 'not really a kernel');
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const config = () => loadConfig({ HOME: dir, PATH: '', LOCALVM_HOME: join(dir, 'state') });

describe('libvirt create', () => {
  it('that fails at start removes the domain and the volumes it made, newest first, and nothing else', async () => {
    const runner = scripted({
      domstate: { exitCode: 1, stderr: "error: failed to get domain 'lv-a'\n" },
      capabilities: { stdout: fixture('capabilities.xml') },
      nodeinfo: { stdout: fixture('nodeinfo.txt') },
      'pool-dumpxml': { stdout: "<pool type='dir'><target><path>/pool</path></target></pool>\n" },
      'pool-info': { stdout: 'Name: localvm\nState: running\n' },
      'vol-list': { stdout: ' Name   Path\n------------\n other.state.qcow2   /pool/other.state.qcow2\n' },
      start: {
        exitCode: 1,
        stderr: 'error: Failed to start domain\nerror: internal error: qemu unexpectedly closed the monitor\n',
      },
    });
    const backend = createLibvirtBackend({ config: config(), runner });
    const spec = parseVmSpec({
      name: 'lv-a',
      backend: 'libvirt',
      kernel,
      accel: 'tcg',
      disks: [{ name: 'data', size: '1M' }],
    });
    const e = await rejection(backend.create(spec));
    expect(e.code).toBe('COMMAND_FAILED');
    expect(e.message).toContain('qemu:///system');
    const after = runner.seen.slice(runner.seen.findIndex((a) => a[0] === 'start') + 1).map((a) => a.join(' '));
    expect(after.filter((a) => !a.startsWith('pool-') && !a.startsWith('vol-list'))).toEqual([
      'destroy --domain lv-a',
      'undefine --snapshots-metadata --domain lv-a',
      'vol-delete --pool localvm --vol lv-a.disk-data.qcow2',
      'vol-delete --pool localvm --vol lv-a.state.qcow2',
    ]);
  });

  it('refuses a name libvirt already has, before it makes anything', async () => {
    const runner = scripted({ domstate: { stdout: 'running (booted)\n' } });
    const backend = createLibvirtBackend({ config: config(), runner });
    const e = await rejection(backend.create(parseVmSpec({ name: 'lv-a', backend: 'libvirt', kernel, accel: 'tcg' })));
    expect(e.code).toBe('ALREADY_EXISTS');
    expect(runner.seen.map((a) => a[0])).toEqual(['domstate']);
  });
});

describe('libvirt create: images', () => {
  const pool = {
    domstate: { exitCode: 1, stderr: "error: failed to get domain 'lv-u'\n" },
    capabilities: { stdout: fixture('capabilities.xml') },
    nodeinfo: { stdout: fixture('nodeinfo.txt') },
    'pool-dumpxml': { stdout: "<pool type='dir'><target><path>/pool</path></target></pool>\n" },
    'pool-info': { stdout: 'Name: localvm\nState: running\n' },
    'vol-list': { stdout: ' Name   Path\n------------\n' },
  };

  it('plans the download of a URL image that is not cached (a dry run downloads nothing, defines nothing)', async () => {
    const runner = scripted(pool);
    const backend = createLibvirtBackend({ config: config(), runner });
    const checksum = `sha256:${'ab'.repeat(32)}`;
    const plan = await backend.plan({
      operation: 'create',
      spec: parseVmSpec({
        name: 'lv-u',
        backend: 'libvirt',
        image: 'http://127.0.0.1:9/images/cloud.qcow2',
        imageChecksum: checksum,
        accel: 'tcg',
      }),
    });
    expect(plan.steps.map((s) => s.summary)).toEqual([
      `download http://127.0.0.1:9/images/cloud.qcow2 into the image cache, verified against ${checksum}`,
      'then upload it into pool localvm on local (once per host), define and start lv-u',
    ]);
    expect(runner.seen.map((a) => a[0]).filter((c) => c === 'define' || c === 'vol-create' || c === 'start')).toEqual(
      [],
    );
  });

  it('refuses a kernel together with an image instead of dropping the image', async () => {
    const runner = scripted(pool);
    const backend = createLibvirtBackend({ config: config(), runner });
    const e = await rejection(
      backend.create(parseVmSpec({ name: 'lv-u', backend: 'libvirt', kernel, image: '/srv/root.qcow2', accel: 'tcg' })),
    );
    expect(e.code).toBe('UNSUPPORTED');
    expect(e.message).toContain('/srv/root.qcow2');
    expect(runner.seen.map((a) => a[0])).not.toContain('define');
  });
});

describe('libvirt delete beside a running upload', () => {
  it('waits while libvirt refuses pool-refresh for running jobs, then deletes; other refresh errors still fail', async () => {
    const cfg = config();
    const spec = parseVmSpec({ name: 'lv-a', backend: 'libvirt' });
    const ours = metadataNode({
      fingerprint: 'f',
      owner: 'o',
      home: homeId(hostname(), cfg.stateDir),
      createdAt: 'c',
      labels: {},
      spec,
    }).xml;
    const busy = { exitCode: 1, stderr: "error: internal error: pool 'localvm' has asynchronous jobs running.\n" };
    let refreshes = 0;
    const script = (refresh: () => Reply) =>
      scripted({
        domstate: { stdout: 'running (booted)\n' },
        metadata: { stdout: `${ours}\n` },
        'pool-dumpxml': { stdout: "<pool type='dir'><target><path>/pool</path></target></pool>\n" },
        'pool-info': { stdout: 'Name: localvm\nState: running\n' },
        'pool-refresh': refresh,
        'vol-list': { stdout: ' Name   Path\n------------\n lv-a.state.qcow2   /pool/lv-a.state.qcow2\n' },
      });
    const runner = script(() => (++refreshes < 3 ? busy : {}));
    const clock = fakeClock();
    await createLibvirtBackend({ config: cfg, runner, clock }).delete('lv-a');
    expect(refreshes).toBe(3);
    expect(clock.sleeps).toHaveLength(2);
    expect(runner.seen.map((a) => a[0])).toEqual(expect.arrayContaining(['destroy', 'undefine', 'vol-delete']));

    const broken = script(() => ({ exitCode: 1, stderr: 'error: some other failure\n' }));
    expect((await rejection(createLibvirtBackend({ config: cfg, runner: broken, clock }).delete('lv-a'))).code).toBe(
      'COMMAND_FAILED',
    );
    expect(broken.seen.map((a) => a[0])).not.toContain('undefine');
  });
});

describe('guest agent through virsh', () => {
  it('sends one command as one JSON argv element and returns its reply', async () => {
    const runner = scripted({ 'qemu-agent-command': { stdout: '{"return":{"pid":42}}\n' } });
    const host = createLibvirtHost({ config: config(), runner, target: { host: 'default', uri: 'qemu:///system' } });
    const reply = await virshAgentChannel(host, 'lv-a').execute(
      'guest-exec',
      { path: "/bin/sh'; reboot", arg: ['-c', 'x'] },
      2500,
    );
    expect(reply).toEqual({ pid: 42 });
    expect(runner.seen[0]).toEqual([
      'qemu-agent-command',
      '--timeout',
      '3',
      '--domain',
      'lv-a',
      '--cmd',
      JSON.stringify({ execute: 'guest-exec', arguments: { path: "/bin/sh'; reboot", arg: ['-c', 'x'] } }),
    ]);
  });

  it('an agent that is not connected yet is TRANSIENT; an error reply is COMMAND_FAILED', async () => {
    const runner = scripted({
      'qemu-agent-command': (args) =>
        args.at(-1)?.includes('guest-ping')
          ? { exitCode: 1, stderr: 'error: Guest agent is not responding: QEMU guest agent is not connected\n' }
          : {
              exitCode: 1,
              stderr: "error: internal error: unable to execute QEMU agent command 'guest-file-open': No such file\n",
            },
    });
    const host = createLibvirtHost({ config: config(), runner, target: { host: 'default', uri: 'qemu:///system' } });
    const channel = virshAgentChannel(host, 'lv-a');
    expect((await rejection(channel.execute('guest-ping'))).code).toBe('TRANSIENT');
    expect((await rejection(channel.execute('guest-file-open', { path: '/nope', mode: 'rb' }))).code).toBe(
      'COMMAND_FAILED',
    );
  });
});
