import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { OperationContext } from '../../src/context.js';
import { LocalVmError } from '../../src/errors.js';
import {
  cleanupVms,
  createVm,
  createVmWithRetry,
  deleteVm,
  listVms,
  updateVm,
  vmInfo,
  waitForVmReady,
} from '../../src/operations/vm.js';
import { connect } from '../../src/connector.js';
import { createRecordingRunner } from '../../src/runner.js';
import { FakeBackend, LockingFakeBackend, fakeClock } from '../fixtures/fakeBackend.js';
import { rejection } from '../fixtures/rejection.js';

function setup(backend = new FakeBackend()) {
  const clock = fakeClock();
  const ctx: OperationContext = {
    config: loadConfig({ HOME: '/nonexistent', PATH: '' }),
    runner: createRecordingRunner(),
    clock,
    backends: { qemu: backend },
  };
  return { backend, clock, ctx };
}

const fast = { minTimeoutMs: 1, maxTimeoutMs: 2 };

describe('createVm', () => {
  it('rejects a hostile spec with VALIDATION before any backend call', async () => {
    const { backend, ctx } = setup();
    for (const name of ['$(reboot)', 'a;rm -rf /', '../etc', '-rf', 'x'.repeat(64), '']) {
      const error = await rejection(createVm({ name }, ctx));
      expect(error.code).toBe('VALIDATION');
      expect(error.issues?.[0]?.property).toBe('name');
    }
    expect((await rejection(createVm({ name: 'ok', memory: 0 }, ctx))).issues?.[0]?.property).toBe('memory');
    expect(
      (await rejection(createVm({ name: 'ok', ports: [{ host: 70000, guest: 22 }] }, ctx))).issues?.[0]?.property,
    ).toBe('ports.0.host');
    expect(backend.calls).toEqual([]);
  });

  it('creates through the resolved backend with defaults applied', async () => {
    const { backend, ctx } = setup();
    const info = await createVm({ name: 'web' }, ctx);
    expect(info).toMatchObject({ name: 'web', state: 'running', memory: 256, cpus: 1, image: 'tiny' });
    expect(backend.calls).toEqual(['create web']);
  });
});

describe('createVmWithRetry', () => {
  it('retries a transient failure and removes the half-created VM before the next attempt', async () => {
    const { backend, ctx } = setup();
    backend.leaveHalfCreated = true;
    backend.createFailures = [new LocalVmError('TRANSIENT', 'missing IP address')];
    const retries: number[] = [];
    const result = await createVmWithRetry({ name: 'web' }, { ...fast, onRetry: (_e, n) => retries.push(n) }, ctx);
    expect(result).toMatchObject({ attempts: 2, adopted: false });
    expect(retries).toEqual([1]);
    expect(backend.calls).toEqual(['create web', 'delete web', 'create web']);
  });

  it('tries a permanent failure exactly once and leaves nothing behind', async () => {
    const { backend, ctx } = setup();
    backend.leaveHalfCreated = true;
    backend.createFailures = [new LocalVmError('NOT_FOUND', 'no image /x.qcow2')];
    const error = await rejection(createVmWithRetry({ name: 'web' }, fast, ctx));
    expect(error.code).toBe('NOT_FOUND');
    expect(backend.calls.filter((c) => c.startsWith('create'))).toHaveLength(1);
    expect(backend.vms.has('web')).toBe(false);
  });

  it('gives up after the configured retries', async () => {
    const { backend, ctx } = setup();
    backend.createFailures = Array.from({ length: 5 }, () => new LocalVmError('TRANSIENT', 'flaky'));
    const error = await rejection(createVmWithRetry({ name: 'web' }, { ...fast, retries: 2 }, ctx));
    expect(error.code).toBe('TRANSIENT');
    expect(backend.calls.filter((c) => c.startsWith('create'))).toHaveLength(3);
  });

  it('adopts an existing VM with the same spec, starting it if stopped', async () => {
    const { backend, ctx } = setup();
    await createVm({ name: 'web', memory: 512 }, ctx);
    backend.vms.get('web')!.info.state = 'stopped';
    const result = await createVmWithRetry({ name: 'web', memory: 512, labels: { a: 'b' } }, fast, ctx);
    expect(result).toMatchObject({ adopted: true, attempts: 1 });
    expect(result.info.state).toBe('running');
    expect(backend.calls).toEqual(['create web', 'start web']);
  });

  it('refuses an existing VM with a different spec as CONFLICT, once, without touching it', async () => {
    const { backend, ctx } = setup();
    await createVm({ name: 'web', memory: 512 }, ctx);
    const error = await rejection(createVmWithRetry({ name: 'web', memory: 1024 }, fast, ctx));
    expect(error.code).toBe('CONFLICT');
    expect(backend.calls).toEqual(['create web']);
    expect(backend.vms.get('web')?.info.memory).toBe(512);
  });

  it('replaces a VM left half-created by an earlier crash', async () => {
    const { backend, ctx } = setup();
    backend.leaveHalfCreated = true;
    backend.createFailures = [new LocalVmError('COMMAND_FAILED', 'qemu died')];
    await rejection(createVm({ name: 'web' }, ctx));
    expect(backend.vms.get('web')?.info.reason).toBe('create-failed');
    const result = await createVmWithRetry({ name: 'web' }, fast, ctx);
    expect(result.adopted).toBe(false);
    expect(backend.calls.slice(-2)).toEqual(['delete web', 'create web']);
  });
});

describe('createVmWithRetry on a backend that decides under its lock (createOrAdopt)', () => {
  const locking = () => setup(new LockingFakeBackend());

  it('leaves every decision to the backend: no look, no delete of its own', async () => {
    const { backend, ctx } = locking();
    const first = await createVmWithRetry({ name: 'web', memory: 512 }, fast, ctx);
    expect(first).toMatchObject({ adopted: false, attempts: 1 });
    backend.vms.get('web')!.info.state = 'stopped';
    const second = await createVmWithRetry({ name: 'web', memory: 512 }, fast, ctx);
    expect(second).toMatchObject({ adopted: true, attempts: 1, info: { state: 'running' } });
    expect(backend.calls).toEqual(['createOrAdopt web', 'create web', 'createOrAdopt web', 'start web']);
  });

  it('passes a matcher on the spec fingerprint, and a CONFLICT is final', async () => {
    const { backend, ctx } = locking();
    await createVmWithRetry({ name: 'web', memory: 512 }, fast, ctx);
    const error = await rejection(createVmWithRetry({ name: 'web', memory: 1024 }, fast, ctx));
    expect(error.code).toBe('CONFLICT');
    expect(backend.calls.filter((c) => c.startsWith('createOrAdopt'))).toHaveLength(2);
    expect(backend.vms.get('web')?.info.memory).toBe(512);
  });

  it('retries a transient failure through the backend, which cleaned up under its lock', async () => {
    const { backend, ctx } = locking();
    backend.leaveHalfCreated = true;
    backend.createFailures = [new LocalVmError('TRANSIENT', 'port busy')];
    const result = await createVmWithRetry({ name: 'web' }, fast, ctx);
    expect(result).toMatchObject({ adopted: false, attempts: 2 });
    expect(backend.calls).toEqual(['createOrAdopt web', 'create web', 'delete web', 'createOrAdopt web', 'create web']);
  });

  it('tries a permanent failure once', async () => {
    const { backend, ctx } = locking();
    backend.createFailures = [new LocalVmError('NOT_FOUND', 'no image')];
    expect((await rejection(createVmWithRetry({ name: 'web' }, fast, ctx))).code).toBe('NOT_FOUND');
    expect(backend.calls.filter((c) => c.startsWith('createOrAdopt'))).toHaveLength(1);
    expect(backend.vms.has('web')).toBe(false);
  });
});

describe('waitForVmReady', () => {
  it('polls with a growing interval up to the cap and reports probes and duration', async () => {
    const { backend, clock, ctx } = setup();
    backend.bootProbes = 6;
    await createVm({ name: 'web' }, ctx);
    const result = await waitForVmReady('web', { initialIntervalMs: 20, maxIntervalMs: 60 }, ctx);
    expect(result.probes).toBe(7);
    expect(clock.sleeps).toEqual([20, 30, 45, 60, 60, 60]);
    expect(result.durationMs).toBe(275);
  });

  it('runs user probes after the agent answers and waits until they pass', async () => {
    const { backend, ctx } = setup();
    await createVm({ name: 'web' }, ctx);
    const result = await waitForVmReady('web', { probes: [{ argv: ['true', 'x'] }] }, ctx);
    expect(result.probes).toBe(2);
    expect(backend.calls).toContain('exec web true x');
  });

  it('times out with the last probe result and the console tail', async () => {
    const { backend, ctx } = setup();
    await createVm({ name: 'web' }, ctx);
    const error = await rejection(waitForVmReady('web', { timeoutMs: 1000, probes: [{ argv: ['false'] }] }, ctx));
    expect(error.code).toBe('TIMEOUT');
    expect(error.details?.lastProbe).toMatch(/exited 1/);
    expect(error.details?.consoleTail).toBe('fake console: booting');
    expect(error.message).toContain('fake console: booting');
    expect(backend.vms.has('web')).toBe(true);
  });

  it('fails at once when the VM stops while waiting', async () => {
    const { backend, ctx } = setup();
    await createVm({ name: 'web' }, ctx);
    backend.vms.get('web')!.info = { ...backend.vms.get('web')!.info, state: 'stopped', reason: 'crashed' };
    const error = await rejection(waitForVmReady('web', { timeoutMs: 60_000 }, ctx));
    expect(error.code).toBe('COMMAND_FAILED');
    expect(error.message).toContain('crashed');
  });

  it('rejects bad options and unknown VMs', async () => {
    const { ctx } = setup();
    expect((await rejection(waitForVmReady('web', { timeoutMs: -1 }, ctx))).code).toBe('VALIDATION');
    expect((await rejection(waitForVmReady('nope', {}, ctx))).code).toBe('NOT_FOUND');
  });
});

describe('delete, update, list, cleanup', () => {
  it('deleteVm is idempotent', async () => {
    const { ctx } = setup();
    await createVm({ name: 'web' }, ctx);
    expect(await deleteVm('web', ctx)).toEqual({ deleted: true });
    expect(await deleteVm('web', ctx)).toEqual({ deleted: false });
    expect((await rejection(vmInfo('web', ctx))).code).toBe('NOT_FOUND');
  });

  it('updateVm applies cpus and memory', async () => {
    const { ctx } = setup();
    await createVm({ name: 'web' }, ctx);
    const info = await updateVm({ name: 'web', memory: 512, cpus: 2 }, ctx);
    expect(info).toMatchObject({ memory: 512, cpus: 2 });
  });

  it('cleanupVms deletes the templates with the prefix after the VMs, and keeps one a clone outside it uses', async () => {
    const backend = new FakeBackend();
    const templates = new Map([
      ['pytest-test-t1', false],
      ['pytest-test-t2', true],
      ['prod-base', false],
    ]);
    const order: string[] = [];
    const withTemplates = Object.assign(backend, {
      templateList: async () => [...templates.keys()].map((name) => ({ name })),
      templateDelete: async (name: string) => {
        if (templates.get(name)) throw new LocalVmError('CONFLICT', `${name} has clones`);
        order.push(`template ${name}`);
        return { deleted: templates.delete(name) };
      },
    });
    const origDelete = backend.delete.bind(backend);
    backend.delete = async (name: string) => {
      order.push(`vm ${name}`);
      return origDelete(name);
    };
    const ctx: OperationContext = { ...setup().ctx, backends: { qemu: withTemplates } };
    await createVm({ name: 'pytest-test-a' }, ctx);
    const dry = await cleanupVms({ prefix: 'pytest-test-', dryRun: true }, ctx);
    expect(dry.templates).toEqual({ matched: ['pytest-test-t1', 'pytest-test-t2'], deleted: [], kept: [] });
    const done = await cleanupVms({ prefix: 'pytest-test-' }, ctx);
    expect(done.templates).toEqual({
      matched: ['pytest-test-t1', 'pytest-test-t2'],
      deleted: ['pytest-test-t1'],
      kept: ['pytest-test-t2'],
    });
    expect(order).toEqual(['vm pytest-test-a', 'template pytest-test-t1']);
    expect([...templates.keys()]).toEqual(['pytest-test-t2', 'prod-base']);
  });

  it('cleanupVms deletes exactly the VMs with the prefix', async () => {
    const { ctx } = setup();
    for (const name of ['pytest-test-a', 'pytest-test-b', 'pytest-other', 'prod-db']) await createVm({ name }, ctx);
    const dry = await cleanupVms({ prefix: 'pytest-test-', dryRun: true }, ctx);
    expect(dry).toMatchObject({ matched: ['pytest-test-a', 'pytest-test-b'], deleted: [] });
    expect(await listVms(ctx)).toHaveLength(4);
    const done = await cleanupVms({ prefix: 'pytest-test-' }, ctx);
    expect(done.deleted).toEqual(['pytest-test-a', 'pytest-test-b']);
    expect((await listVms(ctx)).map((v) => v.name)).toEqual(['prod-db', 'pytest-other']);
    expect((await rejection(cleanupVms({ prefix: '' }, ctx))).code).toBe('VALIDATION');
  });

  it('a connector validates guest paths and argv before reaching the backend', async () => {
    const { backend, ctx } = setup();
    await createVm({ name: 'web' }, ctx);
    const vm = await connect('web', ctx);
    expect((await rejection(vm.putFile('relative/path', 'x'))).code).toBe('VALIDATION');
    expect((await rejection(vm.exec([]))).code).toBe('VALIDATION');
    await vm.putFile('/tmp/x', 'hello');
    expect(new TextDecoder().decode(await vm.getFile('/tmp/x'))).toBe('hello');
    expect((await vm.shell('echo hi')).stdout).toBe('-c echo hi');
    expect(backend.calls).toContain('exec web /bin/sh -c echo hi');
  });
});

describe('createVmWithRetry and a signal', () => {
  it('starts no new attempt once the signal aborted, and rejects with its reason', async () => {
    const { backend, ctx } = setup();
    backend.createFailures = [new LocalVmError('TRANSIENT', 'port busy')];
    const controller = new AbortController();
    const why = new LocalVmError('TIMEOUT', 'create of VM web took longer than 10 ms');
    const error = await rejection(
      createVmWithRetry(
        { name: 'web' },
        { ...fast, signal: controller.signal, onRetry: () => controller.abort(why) },
        ctx,
      ),
    );
    expect(error).toBe(why);
    expect(backend.calls.filter((c) => c.startsWith('create '))).toHaveLength(1);
  });

  it('an attempt that succeeds while the signal aborts stands: the VM is not lost behind a TIMEOUT', async () => {
    const { backend, ctx } = setup();
    const controller = new AbortController();
    const create = backend.create.bind(backend);
    backend.create = async (spec) => {
      const info = await create(spec);
      controller.abort(new LocalVmError('TIMEOUT', 'too late'));
      return info;
    };
    const result = await createVmWithRetry({ name: 'web' }, { ...fast, signal: controller.signal }, ctx);
    expect(result).toMatchObject({ adopted: false, attempts: 1 });
  });
});
