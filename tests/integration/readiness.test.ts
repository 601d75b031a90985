/**
 * Readiness strategies on real QEMU: `ready.port` through a real port forward to a real
 * listener in the tiny guest. QEMU's user-mode network accepts on the host side whether
 * or not anything listens in the guest (see src/operations/readyPort.ts), so this is the
 * test that shows the strategy tells the cases apart.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { realClock, type OperationContext } from '../../src/context.js';
import { ready } from '../../src/index.js';
import { createVm, deleteVm, listVms, waitForVmReady } from '../../src/operations/vm.js';
import { createExecaRunner } from '../../src/runner.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';
import { rejection } from '../fixtures/rejection.js';

const skip = (await missingQemuOrTiny()) !== undefined;
const VM = 'pytest-test-ready-a';

/** A host port free right now (bound, then released). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

describe.skipIf(skip)('readiness strategies on real QEMU', () => {
  let home: string;
  let ctx: OperationContext;
  let hostPort: number;

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'lvm-ready-'));
    ctx = { config: loadConfig({ ...process.env, LOCALVM_HOME: home }), runner: createExecaRunner(), clock: realClock };
    hostPort = await freePort();
    await createVm({ name: VM, image: 'tiny', memory: 128, ports: [{ host: hostPort, guest: 80 }] }, ctx);
    await waitForVmReady(VM, {}, ctx);
  });

  afterAll(async () => {
    for (const v of await listVms(ctx).catch(() => [])) await deleteVm(v.name, ctx);
    await rm(home, { recursive: true, force: true });
  });

  it('ready.port is not ready while nothing listens in the guest', async () => {
    // Long enough for a probe to finish on a loaded machine: the verdict must come from inside the guest.
    const error = await rejection(waitForVmReady(VM, { strategies: ready.port(80), timeoutMs: 8_000 }, ctx));
    expect(error.code).toBe('TIMEOUT');
    expect(error.details?.lastProbe).toMatch(/^(nothing listens on guest port 80|guest port 80 listens, but)/);
  });

  it('through the forward alone, a guest that is up and does not listen resets the connection', async () => {
    // Once the guest network is up (a strategy too), QEMU forwards the guest's reset.
    const networkUp = ready.command(['/bin/sh', '-c', 'grep -q eth0 /proc/net/route']);
    await waitForVmReady(VM, { strategies: networkUp, timeoutMs: 30_000 }, ctx);
    const error = await rejection(
      waitForVmReady(VM, { strategies: ready.port(80, { inGuest: false }), timeoutMs: 2_000 }, ctx),
    );
    expect(error.code).toBe('TIMEOUT');
    expect(error.details?.lastProbe).toMatch(
      new RegExp(`^127\\.0\\.0\\.1:${hostPort} \\(guest port 80\\)(: ECONNRESET| closed the connection at once)`),
    );
  });

  it('ready.port is ready once a listener runs in the guest', async () => {
    const guest = await connect(VM, ctx);
    // busybox httpd daemonizes, so the agent's exec returns while it listens on.
    const started = await guest.exec(['busybox', 'httpd', '-p', '80', '-h', '/tmp']);
    expect(started.exitCode).toBe(0);
    const t0 = performance.now();
    const r = await waitForVmReady(
      VM,
      { strategies: ready.all(ready.agent(), ready.port(80)), timeoutMs: 30_000 },
      ctx,
    );
    console.log(`[readiness] agent + port 80 ready in ${Math.round(performance.now() - t0)} ms, ${r.probes} probes`);
    expect(r.info.state).toBe('running');
  });

  it('ready.port of a guest port without a forward is a VALIDATION error at once', async () => {
    const error = await rejection(waitForVmReady(VM, { strategies: ready.port(81), timeoutMs: 30_000 }, ctx));
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toContain('guest port 81');
  });
});
