import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { ExecOptions, ExecResult, ProbeResult } from '../../src/backend.js';
import { ready, waitForVmReady } from '../../src/index.js';
import { createVm } from '../../src/operations/vm.js';
import {
  AGENT_SILENT,
  agentSilenceNote,
  cloudInitVerdict,
  consoleShowsLogin,
  readSshBanner,
} from '../../src/operations/readyGuest.js';
import type { GuestTransport } from '../../src/transport.js';
import { FakeBackend, fakeContext } from '../fixtures/fakeBackend.js';
import { rejection } from '../fixtures/rejection.js';

// The end of the Debian noagent guest's console once it is up (captured).
const LOGIN_CONSOLE =
  '[  OK  ] Finished cloud-final.service - Execute cloud user/final scripts.\n' +
  '[  OK  ] Reached target cloud-init.target - Cloud-init target.\n\n' +
  'Debian GNU/Linux 12 pytest-test-distro-noagent ttyS0\n\npytest-test-distro-noagent login: ';
const BOOTING_CONSOLE = '[    3.1] systemd[1]: Starting systemd-udevd.service...\n';

/** A guest whose agent never answers, with SSH that may, and a console that shows `console`. */
class SilentAgentBackend extends FakeBackend {
  console = LOGIN_CONSOLE;
  sshReady = false;
  cloudInit = { exitCode: 0, stdout: 'status: done\n' };
  override async probe(_name: string): Promise<ProbeResult> {
    return { ready: false, detail: 'no reply in 10 s' };
  }
  override async consoleTail(): Promise<string> {
    return this.console;
  }
  override async exec(name: string, argv: string[], options?: ExecOptions): Promise<ExecResult> {
    if (argv[0] === 'cloud-init') {
      const enc = new TextEncoder();
      return {
        ...this.cloudInit,
        stderr: '',
        stdoutBytes: enc.encode(this.cloudInit.stdout),
        stderrBytes: new Uint8Array(),
        durationMs: 1,
      };
    }
    return super.exec(name, argv, options);
  }
  transport(name: string, kind: string): GuestTransport | undefined {
    if (kind === 'agent') return { ...this.guest(name), kind: 'agent' };
    if (kind !== 'ssh') return undefined;
    return {
      ...this.guest(name),
      kind: 'ssh',
      probe: async () =>
        this.sshReady ? { ready: true, detail: 'ssh answered in 40 ms' } : { ready: false, detail: 'ssh: refused' },
    };
  }
}

async function setup() {
  const backend = new SilentAgentBackend();
  const ctx = fakeContext(backend);
  await createVm({ name: 'up', backend: 'qemu' }, ctx);
  return { backend, ctx };
}

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

describe('an agent that stays silent on a guest that is up', () => {
  it('is said from a login prompt on the console or an SSH banner, and not otherwise', () => {
    expect(consoleShowsLogin(LOGIN_CONSOLE)).toBe(true);
    expect(consoleShowsLogin(BOOTING_CONSOLE)).toBe(false);
    expect(consoleShowsLogin('Password for login: is what we ask\nmore')).toBe(false);
    expect(agentSilenceNote({ consoleTail: BOOTING_CONSOLE })).toBeUndefined();
    expect(
      agentSilenceNote({ consoleTail: BOOTING_CONSOLE, sshBanner: 'SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3' }),
    ).toBe(`${AGENT_SILENT} (port 22 answers (SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3))`);
    expect(agentSilenceNote({ consoleTail: LOGIN_CONSOLE })).toBe(`${AGENT_SILENT} (the console shows a login prompt)`);
  });

  it('the readiness TIMEOUT says so in its message and hint', async () => {
    const { ctx } = await setup();
    const e = await rejection(waitForVmReady('up', { timeoutMs: 300, strategies: ready.agent() }, ctx));
    expect(e.code).toBe('TIMEOUT');
    expect(e.message).toContain(AGENT_SILENT);
    expect(e.hint).toContain(AGENT_SILENT);
  });

  it('a TIMEOUT without evidence of an up guest does not', async () => {
    const { backend, ctx } = await setup();
    backend.console = BOOTING_CONSOLE;
    const e = await rejection(waitForVmReady('up', { timeoutMs: 300 }, ctx));
    expect(e.code).toBe('TIMEOUT');
    expect(e.message).not.toContain(AGENT_SILENT);
  });

  it('a TIMEOUT of the SSH strategy is not blamed on the agent', async () => {
    const { ctx } = await setup();
    const e = await rejection(waitForVmReady('up', { timeoutMs: 300, strategies: ready.ssh() }, ctx));
    expect(e.code).toBe('TIMEOUT');
    expect(e.message).toContain('last probe: ssh: refused');
    expect(e.message).not.toContain(AGENT_SILENT);
  });
});

describe('ready.ssh() and ready.cloudInit()', () => {
  it('ready.ssh() is ready when the SSH transport answers, whatever the agent does', async () => {
    const { backend, ctx } = await setup();
    backend.sshReady = true;
    const r = await waitForVmReady('up', { timeoutMs: 5_000, strategies: ready.ssh() }, ctx);
    expect(r.probes).toBe(1);
  });

  it('ready.ssh() on a backend without an SSH transport is UNSUPPORTED', async () => {
    const backend = new FakeBackend();
    const ctx = fakeContext(backend);
    await createVm({ name: 'plain', backend: 'qemu' }, ctx);
    const e = await rejection(waitForVmReady('plain', { timeoutMs: 1_000, strategies: ready.ssh() }, ctx));
    expect(e.code).toBe('UNSUPPORTED');
  });

  it('ready.cloudInit() waits for `status: done`', async () => {
    const { backend, ctx } = await setup();
    backend.cloudInit = { exitCode: 1, stdout: 'status: error\n' };
    const e = await rejection(waitForVmReady('up', { timeoutMs: 300, strategies: ready.cloudInit() }, ctx));
    expect(e.message).toContain('last probe: cloud-init status: error');
    backend.cloudInit = { exitCode: 0, stdout: '\nstatus: done\n' };
    expect((await waitForVmReady('up', { timeoutMs: 1_000, strategies: ready.cloudInit() }, ctx)).probes).toBe(1);
  });

  it('reads cloud-init status output as cloud-init 22.4 prints it', () => {
    expect(cloudInitVerdict(0, 'status: done\n', '')).toEqual({ ready: true, detail: 'cloud-init status: done' });
    expect(cloudInitVerdict(0, 'status: running\n', '').ready).toBe(false);
    expect(cloudInitVerdict(1, 'status: error\n', '').detail).toBe('cloud-init status: error (status: error)');
    expect(cloudInitVerdict(127, '', 'sh: 1: cloud-init: not found').detail).toBe(
      'cloud-init status: exit 127 (sh: 1: cloud-init: not found)',
    );
  });
});

describe('readSshBanner', () => {
  const listen = (onConnect: (s: import('node:net').Socket) => void) =>
    new Promise<number>((resolve) => {
      const server = createServer(onConnect);
      servers.push(server);
      server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
    });

  it('returns an SSH server’s first line, and nothing for a forward that accepts and closes', async () => {
    const sshd = await listen((s) => s.write('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n'));
    expect(await readSshBanner(sshd)).toBe('SSH-2.0-OpenSSH_9.2p1 Debian-2');
    const slirp = await listen((s) => s.destroy());
    expect(await readSshBanner(slirp)).toBeUndefined();
    const silent = await listen(() => undefined);
    expect(await readSshBanner(silent, 100)).toBeUndefined();
  });
});
