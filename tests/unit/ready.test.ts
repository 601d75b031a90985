import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { ExecOptions, ExecResult, ProbeResult } from '../../src/backend.js';
import type { OperationContext } from '../../src/context.js';
import { ready, waitForVmReady, type ReadinessStrategy } from '../../src/index.js';
import { createVm } from '../../src/operations/vm.js';
import { hasNetwork, listeningPorts } from '../../src/operations/readyPort.js';
import { FakeBackend, fakeContext } from '../fixtures/fakeBackend.js';

const fakeSetup = () => ({ ctx: fakeContext(new FakeBackend()) });
import { manualClock } from '../fixtures/manualClock.js';
import { rejection } from '../fixtures/rejection.js';

// Captured from the tiny guest: before its network is up (right after the agent answers),
// and with `busybox httpd -p 80` running once it is.
const ROUTE_HEADER =
  'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT                                                       \n';
const ROUTE_UP =
  ROUTE_HEADER +
  'eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0                                                                               \n' +
  'eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0                                                                               \n';
const TCP_EMPTY =
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     \n';
const TCP6_HTTPD =
  '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n' +
  '   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 10914 1 0000000054c22fc2 100 0 0 10 0\n';
const guestNet = (tcp: string, route: string) => `${tcp}@@route\n${route}`;

/** The fake backend, recording the time each probe and exec was given. */
class TimedBackend extends FakeBackend {
  probeLimits: number[] = [];
  execLimits: (number | undefined)[] = [];
  /** What the guest's /proc/net says (ready.port's look inside). */
  procNet = guestNet(TCP_EMPTY + TCP6_HTTPD, ROUTE_UP);
  override async probe(name: string, timeoutMs?: number): Promise<ProbeResult> {
    this.probeLimits.push(timeoutMs ?? -1);
    return super.probe(name);
  }
  override async exec(name: string, argv: string[], options?: ExecOptions): Promise<ExecResult> {
    this.execLimits.push(options?.timeoutMs);
    const r = await super.exec(name, argv, options);
    if (argv[0] === '/bin/sh' && argv[2]?.includes('/proc/net/tcp')) {
      return { ...r, stdout: this.procNet, stdoutBytes: new TextEncoder().encode(this.procNet) };
    }
    return r;
  }
}

function setup() {
  const backend = new TimedBackend();
  const clock = manualClock();
  const ctx: OperationContext = { ...fakeContext(backend), clock };
  return { backend, clock, ctx };
}

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

/** A real listener on 127.0.0.1; `onConnection` decides what it does with a client. */
async function listen(onConnection: (sock: import('node:net').Socket) => void = () => undefined): Promise<number> {
  const server = createServer(onConnection);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as { port: number }).port;
}

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

describe('ready.agent', () => {
  it('polls the backend probe with its own timeout, never past the deadline', async () => {
    const { backend, clock, ctx } = setup();
    backend.bootProbes = 2;
    await createVm({ name: 'web' }, ctx);
    const r = await waitForVmReady('web', { strategies: ready.agent({ timeoutMs: 3_000 }), timeoutMs: 60_000 }, ctx);
    expect(r.probes).toBe(3);
    expect(backend.probeLimits).toEqual([3_000, 3_000, 3_000]);
    expect(clock.sleeps).toEqual([20, 30]);

    backend.probeLimits = [];
    await waitForVmReady('web', { strategies: [ready.agent()], timeoutMs: 1_234 }, ctx);
    expect(backend.probeLimits).toEqual([1_234]);
  });
});

describe('ready.command', () => {
  it('is ready when the guest command exits 0, each probe with its own timeout', async () => {
    const { backend, ctx } = setup();
    await createVm({ name: 'web' }, ctx);
    const r = await waitForVmReady('web', { strategies: ready.command(['true', 'up'], { timeoutMs: 2_000 }) }, ctx);
    expect(r.probes).toBe(1);
    expect(backend.calls.filter((c) => c.startsWith('probe'))).toEqual([]);
    expect(backend.execLimits).toEqual([2_000]);
  });

  it('a command that keeps failing times out saying how it exited, with the console tail', async () => {
    const { ctx } = setup();
    await createVm({ name: 'web' }, ctx);
    const error = await rejection(
      waitForVmReady('web', { strategies: ready.command(['false']), timeoutMs: 1_000 }, ctx),
    );
    expect(error.code).toBe('TIMEOUT');
    expect(error.details?.lastProbe).toBe('probe ["false"] exited 1: failed');
    expect(error.details?.consoleTail).toBe('fake console: booting');
    expect(error.message).toMatch(/^VM web was not ready after 1 s \(\d+ probes\); last probe: probe \["false"\]/);
  });
});

describe('the last verdict', () => {
  it('a probe the deadline cut short does not hide the verdict of the one before it', async () => {
    const { ctx } = fakeSetup();
    await createVm({ name: 'web' }, ctx);
    // Like ready.port's look inside the guest: a command that needs 400 ms, whose last run
    // gets less than that and times out with the overall deadline.
    const strategy: ReadinessStrategy = {
      description: 'slow look',
      async check(c) {
        const left = c.deadline.remainingMs();
        await c.clock.sleep(Math.min(400, left));
        return left < 400
          ? { ready: false, detail: `cannot look inside the guest: took longer than ${Math.round(left)} ms` }
          : { ready: false, detail: 'nothing listens on guest port 80' };
      },
    };
    const error = await rejection(waitForVmReady('web', { strategies: strategy, timeoutMs: 1_000 }, ctx));
    expect(error.code).toBe('TIMEOUT');
    expect(error.details?.lastProbe).toBe('nothing listens on guest port 80');
  });
});

describe('ready.port, inside the guest', () => {
  it('reads listening ports from /proc/net/tcp and tcp6, and the network from /proc/net/route', () => {
    expect([...listeningPorts(TCP_EMPTY + TCP6_HTTPD)]).toEqual([80]);
    expect(listeningPorts(TCP_EMPTY).size).toBe(0);
    const established =
      '   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 0 1\n';
    expect(listeningPorts(TCP_EMPTY + established).size).toBe(0);
    expect(hasNetwork(ROUTE_UP)).toBe(true);
    expect(hasNetwork(ROUTE_HEADER)).toBe(false);
    expect(hasNetwork('Iface\tDestination\nlo\t0000007F\n')).toBe(false);
  });

  it('is not ready while nothing listens in the guest, whatever the host side does', async () => {
    const { backend, ctx } = setup();
    backend.procNet = guestNet(TCP_EMPTY, ROUTE_UP);
    const port = await listen();
    await createVm({ name: 'web', ports: [{ host: port, guest: 80 }] }, ctx);
    const error = await rejection(waitForVmReady('web', { strategies: ready.port(80), timeoutMs: 100 }, ctx));
    expect(error.details?.lastProbe).toBe('nothing listens on guest port 80');
  });

  it('is not ready while the guest network is down: the forward would accept and hang', async () => {
    const { backend, ctx } = setup();
    backend.procNet = guestNet(TCP_EMPTY + TCP6_HTTPD, ROUTE_HEADER);
    const port = await listen();
    await createVm({ name: 'web', ports: [{ host: port, guest: 80 }] }, ctx);
    const error = await rejection(waitForVmReady('web', { strategies: ready.port(80), timeoutMs: 100 }, ctx));
    expect(error.details?.lastProbe).toBe('guest port 80 listens, but the guest network is not up yet');
  });
});

describe('ready.port, through the forward', () => {
  it('is ready once the host side of the forward accepts and keeps the connection', async () => {
    const { ctx } = setup();
    const port = await listen();
    await createVm({ name: 'web', ports: [{ host: port, guest: 80 }] }, ctx);
    const r = await waitForVmReady('web', { strategies: ready.port(80, { settleMs: 20 }) }, ctx);
    expect(r.probes).toBe(1);
  });

  it('a forward whose connection is closed at once is not ready', async () => {
    const { ctx } = setup();
    const port = await listen((sock) => sock.destroy());
    await createVm({ name: 'web', ports: [{ host: port, guest: 80 }] }, ctx);
    const error = await rejection(
      waitForVmReady('web', { strategies: ready.port(80, { settleMs: 200 }), timeoutMs: 100 }, ctx),
    );
    expect(error.code).toBe('TIMEOUT');
    expect(error.details?.lastProbe).toMatch(/closed the connection at once|ECONNRESET/);
  });

  it('a refused connection is not ready and says so', async () => {
    const { ctx } = setup();
    const port = await closedPort();
    await createVm({ name: 'web', ports: [{ host: port, guest: 80 }] }, ctx);
    const error = await rejection(waitForVmReady('web', { strategies: ready.port(80), timeoutMs: 100 }, ctx));
    expect(error.code).toBe('TIMEOUT');
    expect(error.details?.lastProbe).toBe(`127.0.0.1:${port} (guest port 80): ECONNREFUSED`);
  });

  it('a VM without a forward for the port is a VALIDATION error at once', async () => {
    const { backend, ctx } = setup();
    await createVm({ name: 'web', ports: [{ host: 18080, guest: 8080 }] }, ctx);
    const error = await rejection(waitForVmReady('web', { strategies: ready.port(80) }, ctx));
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toContain('no TCP port forward for guest port 80');
    expect(error.issues?.[0]?.reason).toContain('18080->8080/tcp');
    expect(backend.calls.filter((c) => c.startsWith('probe'))).toEqual([]);
  });
});

describe('ready.all and waitForVmReady', () => {
  it('checks in order and stops at the first that is not ready', async () => {
    const { backend, ctx } = setup();
    await createVm({ name: 'web' }, ctx);
    const error = await rejection(
      waitForVmReady(
        'web',
        { strategies: ready.all(ready.command(['false']), ready.command(['true', 'never'])), timeoutMs: 100 },
        ctx,
      ),
    );
    expect(error.code).toBe('TIMEOUT');
    expect(backend.calls).not.toContain('exec web true never');
  });

  it('runs the probes option (and the spec readiness) as commands after the strategies', async () => {
    const { backend, ctx } = setup();
    await createVm({ name: 'web', readiness: [{ argv: ['true', 'spec'] }] }, ctx);
    await waitForVmReady('web', {}, ctx);
    expect(backend.calls.slice(-2)).toEqual(['probe web', 'exec web true spec']);
    await waitForVmReady('web', { strategies: [ready.command(['true', 'a'])], probes: [{ argv: ['true', 'b'] }] }, ctx);
    expect(backend.calls.slice(-2)).toEqual(['exec web true a', 'exec web true b']);
  });

  it('a VM that stops while waiting fails at once with the last probe', async () => {
    const { backend, ctx } = setup();
    await createVm({ name: 'web' }, ctx);
    backend.vms.get('web')!.info = { ...backend.vms.get('web')!.info, state: 'stopped', reason: 'crashed' };
    const error = await rejection(waitForVmReady('web', { strategies: ready.command(['false']) }, ctx));
    expect(error.code).toBe('COMMAND_FAILED');
    expect(error.details?.lastProbe).toBe('probe ["false"] exited 1: failed');
    expect(error.message).toBe('VM web stopped while waiting for it to be ready (crashed)');
  });

  it('stops with the reason of an aborted signal', async () => {
    const { clock, ctx } = setup();
    await createVm({ name: 'web' }, ctx);
    const controller = new AbortController();
    const why = new Error('the caller gave up');
    let checks = 0;
    const strategy = {
      description: 'never',
      async check() {
        if (++checks === 3) controller.abort(why);
        return { ready: false, detail: 'not yet' };
      },
    };
    await expect(waitForVmReady('web', { strategies: strategy, signal: controller.signal }, ctx)).rejects.toBe(why);
    expect(checks).toBe(3);
    expect(clock.sleeps).toEqual([20, 30]);
  });

  it('rejects something that is not a strategy', async () => {
    const { ctx } = setup();
    await createVm({ name: 'web' }, ctx);
    const error = await rejection(waitForVmReady('web', { strategies: [{} as never] }, ctx));
    expect(error.code).toBe('VALIDATION');
  });
});
