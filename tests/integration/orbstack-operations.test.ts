/**
 * The operations layer on the OrbStack backend, against the orbctl simulator run as a real
 * process: retries of transient faults, a single try for permanent errors, adoption of a
 * machine a hung create left behind, readiness timeouts, and prefix cleanup.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createOrbstackBackend } from '../../src/backends/orbstack/index.js';
import { loadConfig } from '../../src/config.js';
import { realClock, type OperationContext } from '../../src/context.js';

import { cleanupVms, createVmWithRetry, listVms, waitForVmReady } from '../../src/operations/vm.js';
import { createExecaRunner } from '../../src/runner.js';
import {
  callsOf,
  clearFaults,
  injectFaults,
  makeSimState,
  removeSimState,
  simEnv,
  withEnv,
} from '../fixtures/orbctl-sim/faults.js';
import { rejection } from '../fixtures/rejection.js';

const PREFIX = 'pytest-test-orbops-';
let stateDir: string;
let ctx: OperationContext;

const fast = { minTimeoutMs: 10, maxTimeoutMs: 50 };

beforeAll(async () => {
  stateDir = await makeSimState();
  const env = simEnv(stateDir, { speed: 0 });
  const config = loadConfig({ HOME: stateDir, PATH: env.PATH, LOCALVM_HOME: `${stateDir}/localvm` });
  const runner = withEnv(createExecaRunner(), env);
  ctx = { config, runner, clock: realClock, backends: { orbstack: createOrbstackBackend({ config, runner }) } };
});

beforeEach(async () => {
  await clearFaults(stateDir);
});

afterAll(async () => {
  await removeSimState(stateDir);
});

describe('createVmWithRetry on OrbStack', () => {
  it('retries transient "missing IP address" failures and then succeeds: N+1 creates', async () => {
    await injectFaults(stateDir, { failCreates: 2 });
    const retried: string[] = [];
    const name = `${PREFIX}flaky`;
    const result = await createVmWithRetry(
      { name, backend: 'orbstack', image: 'ubuntu:noble' },
      { ...fast, onRetry: (e) => retried.push(e.message) },
      ctx,
    );
    expect(result).toMatchObject({ attempts: 3, adopted: false });
    expect(result.info.state).toBe('running');
    expect(retried).toHaveLength(2);
    expect(retried[0]).toContain('missing IP address');
    expect((await callsOf(stateDir, 'create')).filter((c) => c.argv.includes(name))).toHaveLength(3);
  });

  it('tries a permanent error (unknown distro) exactly once', async () => {
    const name = `${PREFIX}baddistro`;
    const error = await rejection(createVmWithRetry({ name, backend: 'orbstack', image: 'nosuchdistro:1' }, fast, ctx));
    expect(error.code).toBe('VALIDATION');
    expect((await callsOf(stateDir, 'create')).filter((c) => c.argv.includes(name))).toHaveLength(1);
    expect((await listVms(ctx)).map((v) => v.name)).not.toContain(name);
  });

  it('adopts the machine a hung create left behind instead of creating another', async () => {
    await injectFaults(stateDir, { hangCreates: 1, hangMs: 60_000 });
    const name = `${PREFIX}hung`;
    const result = await createVmWithRetry(
      { name, backend: 'orbstack', image: 'ubuntu:noble', timeouts: { createMs: 1_500 } },
      fast,
      ctx,
    );
    expect(result).toMatchObject({ adopted: true, attempts: 1 });
    expect(result.info.state).toBe('running');
    expect((await callsOf(stateDir, 'create')).filter((c) => c.argv.includes(name))).toHaveLength(1);
  });

  it('a machine that never gets an IP times out naming the last state seen', async () => {
    const name = `${PREFIX}noip`;
    await injectFaults(stateDir, { noIp: [name] });
    await createVmWithRetry({ name, backend: 'orbstack', image: 'ubuntu:noble' }, fast, ctx);
    const error = await rejection(waitForVmReady(name, { timeoutMs: 2_000 }, ctx));
    expect(error.code).toBe('TIMEOUT');
    expect(String(error.details?.lastProbe)).toContain('running');
    expect(error.message).toContain('last probe');
  });

  it('waitForVmReady passes once the machine runs, has an IP and answers `true`', async () => {
    const name = `${PREFIX}ready`;
    await createVmWithRetry({ name, backend: 'orbstack', image: 'debian:bookworm' }, fast, ctx);
    const ready = await waitForVmReady(name, { timeoutMs: 20_000, probes: [{ argv: ['true'] }] }, ctx);
    expect(ready.info.ip4).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(ready.probes).toBeGreaterThanOrEqual(2);
  });
});

describe('cleanupVms on OrbStack', () => {
  it('deletes exactly the machines with the prefix', async () => {
    await createVmWithRetry({ name: 'keep-me-orb', backend: 'orbstack', image: 'alpine' }, fast, ctx);
    await createVmWithRetry({ name: `${PREFIX}sweep`, backend: 'orbstack', image: 'alpine' }, fast, ctx);
    const result = await cleanupVms({ prefix: PREFIX }, ctx);
    expect(result.deleted).toContain(`${PREFIX}sweep`);
    expect(result.deleted.every((n) => n.startsWith(PREFIX))).toBe(true);
    const left = (await listVms(ctx)).map((v) => v.name);
    expect(left).toEqual(['keep-me-orb']);
  });
});
