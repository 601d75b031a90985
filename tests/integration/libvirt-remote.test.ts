/**
 * Many libvirt hosts for real: this machine's system daemon (`local`) and a second,
 * independent daemon — another user's session daemon — reached over SSH through an sshd on
 * 127.0.0.1 (`remote`, tests/fixtures/libvirtRemote.ts). VMs go to both, `list` shows both
 * with their host, a host whose sshd is gone is reported while the other keeps working, and
 * bad hosts fail naming the host with nothing left defined.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/program.js';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { realClock, type OperationContext } from '../../src/context.js';
import { listVmsByHost } from '../../src/operations/hosts.js';
import { planCreateVm } from '../../src/operations/plan.js';
import { cleanupVms, createVm, startVm, stopVm, vmInfo, waitForVmReady } from '../../src/operations/vm.js';
import { createExecaRunner } from '../../src/runner.js';
import { REMOTE_USER, startRemoteHost, type RemoteHost } from '../fixtures/libvirtRemote.js';
import { rejection } from '../fixtures/rejection.js';
import { missingQemuOrTiny, missingRoot } from '../fixtures/tools.js';

const skip = missingRoot('virsh', 'sshd', 'ssh', 'ssh-keygen') ?? (await missingQemuOrTiny());
const PREFIX = 'lvhosts-test-';
const LOCAL_VM = `${PREFIX}here`;
const REMOTE_VM = `${PREFIX}there`;

/** Domain names on `uri` (straight from virsh, not through localvm). */
function domains(uri: string): string[] {
  return execFileSync('virsh', ['-c', uri, 'list', '--all', '--name'], { encoding: 'utf8' })
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean);
}

describe.skipIf(skip)('libvirt across two hosts (local system daemon, remote session daemon over SSH)', () => {
  let remote: RemoteHost;
  let home: string;
  let ctx: OperationContext;
  let env: NodeJS.ProcessEnv;

  async function cli(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    let stdout = '';
    let stderr = '';
    const code = await runCli(argv, {
      stdout: { write: (c) => (stdout += String(c)) },
      stderr: { write: (c) => (stderr += String(c)) },
      env,
    });
    return { code, stdout, stderr };
  }

  beforeAll(async () => {
    remote = await startRemoteHost();
    home = mkdtempSync(join(tmpdir(), 'localvm-lvhosts-'));
    writeFileSync(
      join(home, 'hosts.json'),
      JSON.stringify({ hosts: { local: 'qemu:///system', remote: remote.uri } }, null, 2),
    );
    env = { ...process.env, LOCALVM_HOME: home };
    ctx = { config: loadConfig(env), runner: createExecaRunner(), clock: realClock };
  });

  afterAll(async () => {
    await remote?.startSshd().catch(() => {});
    if (ctx) await cleanupVms({ prefix: PREFIX }, ctx).catch(() => {});
    if (remote) await remote.close(PREFIX);
    if (home) rmSync(home, { recursive: true, force: true });
  });

  it('puts VMs on both hosts; list shows both with HOST; the guest agent works over SSH', async () => {
    const spec = { backend: 'libvirt', image: 'tiny', memory: 192 } as const;
    await Promise.all([
      createVm({ ...spec, name: LOCAL_VM, host: 'local' }, ctx),
      createVm({ ...spec, name: REMOTE_VM, host: 'remote' }, ctx),
    ]);
    await Promise.all([waitForVmReady(LOCAL_VM, {}, ctx), waitForVmReady(REMOTE_VM, {}, ctx)]);
    expect(domains('qemu:///system')).toContain(LOCAL_VM);
    expect(domains(remote.uri)).toContain(REMOTE_VM);
    expect(domains(remote.uri)).not.toContain(LOCAL_VM);

    const listing = await listVmsByHost(ctx);
    const ours = listing.vms.filter((v) => v.name.startsWith(PREFIX)).map((v) => [v.name, v.host, v.state]);
    expect(ours).toEqual([
      [LOCAL_VM, 'local', 'running'],
      [REMOTE_VM, 'remote', 'running'],
    ]);
    expect(listing.unreachable).toEqual([]);

    const table = await cli('list');
    expect(table.code).toBe(0);
    expect(table.stdout.split('\n')[0]).toMatch(/^NAME +STATE +BACKEND +HOST /);
    expect(table.stdout).toMatch(new RegExp(`${REMOTE_VM} +running +libvirt +remote `));
    const json = await cli('list', '--json');
    expect(
      (JSON.parse(json.stdout) as { name: string; host?: string }[]).filter((v) => v.name.startsWith(PREFIX)),
    ).toMatchObject([
      { name: LOCAL_VM, host: 'local' },
      { name: REMOTE_VM, host: 'remote' },
    ]);

    // --host narrows any command to one host.
    const narrowed = await cli('--host', 'remote', 'list', '--json');
    expect((JSON.parse(narrowed.stdout) as { name: string }[]).map((v) => v.name)).toEqual([REMOTE_VM]);

    // exec through libvirt's agent channel on the far side: no network path to the guest.
    const there = await connect(REMOTE_VM, ctx);
    expect((await there.exec(['cat', '/proc/sys/kernel/hostname'])).stdout.trim()).not.toBe('');

    // auto places on one of the two hosts (the same machine: both report its free memory).
    const plan = await planCreateVm({ ...spec, name: `${PREFIX}auto`, host: 'auto' }, ctx);
    const uris = JSON.stringify(plan.steps);
    expect(uris.includes('qemu:///system') || uris.includes(remote.uri)).toBe(true);
  });

  it('a host whose sshd is gone is unreachable in list; the local host keeps working', async () => {
    await remote.stopSshd();
    try {
      const listing = await listVmsByHost(ctx);
      expect(listing.vms.filter((v) => v.name.startsWith(PREFIX)).map((v) => v.name)).toEqual([LOCAL_VM]);
      expect(listing.unreachable.map((u) => u.host)).toEqual(['remote']);
      expect(listing.unreachable[0]?.error.message).toContain('remote');

      const table = await cli('list');
      expect(table.code).toBe(0);
      expect(table.stdout).toMatch(/^- +unreachable +libvirt +remote /m);
      expect(table.stdout).toContain(LOCAL_VM);

      const here = await connect(LOCAL_VM, ctx);
      expect((await here.exec(['true'])).exitCode).toBe(0);
      expect((await vmInfo(LOCAL_VM, ctx)).host).toBe('local');
      // The remote VM cannot be reached: its host's error, naming it, never NOT_FOUND.
      const error = await rejection(vmInfo(REMOTE_VM, ctx));
      expect(error.code).not.toBe('NOT_FOUND');
      expect(error.message).toContain('remote');
    } finally {
      await remote.startSshd();
    }
    expect((await vmInfo(REMOTE_VM, ctx)).host).toBe('remote');
    // Back: operations by name find the VM on its host again.
    expect((await stopVm(REMOTE_VM, { force: true }, ctx)).state).toBe('stopped');
    expect((await startVm(REMOTE_VM, ctx)).host).toBe('remote');
  });

  it('an unknown host, a URI that does not answer, a bad key: errors naming the host, nothing defined', async () => {
    const spec = { backend: 'libvirt', image: 'tiny', memory: 128, name: `${PREFIX}bad` } as const;
    const unknown = await rejection(createVm({ ...spec, host: 'nope' }, ctx));
    expect(unknown.code).toBe('VALIDATION');
    expect(unknown.message).toContain('local, remote');

    const refused = `qemu+ssh://${REMOTE_USER}@127.0.0.1:1/session?keyfile=${remote.keyFile}&no_verify=1`;
    const down = await rejection(createVm({ ...spec, connect: refused }, ctx));
    expect(down.message).toContain('127.0.0.1:1');

    const otherKey = join(remote.dir, 'not-authorized');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', otherKey]);
    const badKey = remote.uri.replace(remote.keyFile, otherKey);
    const denied = await rejection(createVm({ ...spec, connect: badKey }, ctx));
    expect(denied.message).toContain('127.0.0.1');

    expect(domains('qemu:///system')).not.toContain(spec.name);
    expect(domains(remote.uri)).not.toContain(spec.name);
  });
});
