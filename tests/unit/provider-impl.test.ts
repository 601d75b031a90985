/**
 * Level A, I/O half: the provider's create/read/update/delete against the operations API
 * with an in-memory backend injected through the operations context.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { OperationContext } from '../../src/context.js';
import { createRecordingRunner } from '../../src/runner.js';
import * as impl from '../../src/provider/impl.js';
import { sha256 } from '../../src/provider/logic.js';
import type { ExecOptions, ExecResult, PutFileOptions } from '../../src/backend.js';
import { FakeBackend, fakeClock } from '../fixtures/fakeBackend.js';
import { manualClock } from '../fixtures/manualClock.js';

let dir: string;
let fake: FakeBackend;
let ctx: OperationContext;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'localvm-provider-'));
  fake = new FakeBackend();
  // PATH is empty so that no orbctl is found: the fake qemu backend is the only one.
  ctx = {
    config: loadConfig({ LOCALVM_HOME: join(dir, 'state'), HOME: dir, PATH: '' }),
    runner: createRecordingRunner(),
    clock: fakeClock(),
    backends: { qemu: fake },
  };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function createVm(overrides: Record<string, unknown> = {}) {
  const { inputs, failures } = await impl.vmCheck(
    {},
    { name: 'web', image: 'tiny', providerVersion: '0.1.0', ...overrides },
  );
  expect(failures).toEqual([]);
  return { inputs, created: await impl.vmCreate(inputs, ctx) };
}

describe('Vm', () => {
  it('create boots and waits, and returns the name as id with computed outputs', async () => {
    fake.bootProbes = 2;
    const { created } = await createVm({ userData: 'secret' });
    expect(created.id).toBe('web');
    expect(created.outs).toMatchObject({ name: 'web', backend: 'qemu', state: 'running', accel: 'tcg', image: 'tiny' });
    expect(created.outs.fingerprint).toMatch(/^[0-9a-f]{16}$/);
    expect(fake.calls.filter((c) => c === 'probe web').length).toBe(3);
  });

  it('create adopts an identical VM (a retried create after a lost response)', async () => {
    const first = await createVm();
    const again = await impl.vmCreate(first.inputs, ctx);
    expect(again.id).toBe('web');
    expect(fake.calls.filter((c) => c.startsWith('create ')).length).toBe(1);
  });

  it('a readiness failure is a partial create that keeps the id', async () => {
    const { inputs } = await impl.vmCheck({}, { name: 'web', timeouts: { readyMs: 50 } });
    fake.bootProbes = 1_000;
    const error = (await impl.vmCreate(inputs, ctx).catch((e: unknown) => e)) as Record<string, unknown>;
    expect(error.id).toBe('web');
    expect(error.properties).toMatchObject({ name: 'web' });
    expect(String(error.message)).toMatch(/TIMEOUT/);
  });

  it('a create conflict reports the code in the message', async () => {
    await createVm({ memory: 256 });
    const { inputs } = await impl.vmCheck({}, { name: 'web', memory: 512 });
    await expect(impl.vmCreate(inputs, ctx)).rejects.toThrow(/^CONFLICT: /);
  });

  it('read of a missing VM returns no id, so refresh drops it', async () => {
    expect(await impl.vmRead('gone', { name: 'gone' }, ctx)).toEqual({});
  });

  it('read reports a stopped VM and drifted memory', async () => {
    const { created } = await createVm();
    const vm = fake.vms.get('web')!;
    vm.info = { ...vm.info, state: 'stopped', memory: 512 };
    const read = await impl.vmRead('web', created.outs, ctx);
    expect(read.id).toBe('web');
    expect(read.props).toMatchObject({ state: 'stopped', memory: 512 });
  });

  it('update of memory goes through updateVm; a label change is written to the VM without a stop', async () => {
    const { created } = await createVm();
    const { inputs: bigger } = await impl.vmCheck(created.outs, { ...created.outs, memory: 512, state: undefined });
    const diff = await impl.vmDiff('web', created.outs, bigger);
    expect(diff).toMatchObject({ changes: true, replaces: [] });
    const updated = await impl.vmUpdate('web', created.outs, bigger, ctx);
    expect(updated.outs.memory).toBe(512);
    expect(fake.vms.get('web')!.info.memory).toBe(512);
    expect(fake.calls.filter((c) => c === 'update web').length).toBe(1);

    const { inputs: labelled } = await impl.vmCheck(updated.outs, { name: 'web', memory: 512, labels: { a: 'b' } });
    const stops = fake.calls.filter((c) => c === 'stop web').length;
    await impl.vmUpdate('web', updated.outs, labelled, ctx);
    expect(fake.calls.filter((c) => c === 'update web').length).toBe(2);
    expect(fake.vms.get('web')!.info.memory).toBe(512);
    expect(fake.calls.filter((c) => c === 'stop web').length).toBe(stops);
  });

  it('a label change on a stopped VM leaves it stopped when running is false, and starts it by default', async () => {
    const { created } = await createVm();
    const vm = fake.vms.get('web')!;
    vm.info = { ...vm.info, state: 'stopped' };
    const started = await impl.vmUpdate('web', created.outs, (await impl.vmCheck({}, { name: 'web' })).inputs, ctx);
    expect(started.outs.state).toBe('running');
    vm.info = { ...vm.info, state: 'stopped' };
    fake.calls.length = 0;
    const { inputs } = await impl.vmCheck(created.outs, { name: 'web', labels: { a: 'b' }, running: false });
    const updated = await impl.vmUpdate('web', created.outs, inputs, ctx);
    expect(updated.outs).toMatchObject({ state: 'stopped', labels: { a: 'b' } });
    expect(fake.calls).not.toContain('start web');
  });

  it('an update after a partial create waits for readiness again', async () => {
    const { inputs } = await impl.vmCheck({}, { name: 'web', timeouts: { readyMs: 50 } });
    fake.bootProbes = 1_000;
    const partial = (await impl.vmCreate(inputs, ctx).catch((e: unknown) => e)) as {
      properties: Record<string, unknown>;
    };
    expect(partial.properties.state).toBe('starting');
    fake.vms.get('web')!.bootProbes = 0;
    const before = fake.calls.filter((c) => c === 'probe web').length;
    const updated = await impl.vmUpdate('web', partial.properties, inputs, ctx);
    expect(updated.outs.state).toBe('running');
    expect(fake.calls.filter((c) => c === 'probe web').length).toBeGreaterThan(before);
  });

  it('diff says replace (delete first) when the image changes', async () => {
    const { created } = await createVm();
    const { inputs } = await impl.vmCheck(created.outs, { name: 'web', image: '/srv/other.qcow2' });
    expect(await impl.vmDiff('web', created.outs, inputs)).toMatchObject({
      changes: true,
      replaces: ['image'],
      deleteBeforeReplace: true,
    });
  });

  it('delete is idempotent', async () => {
    const { created } = await createVm();
    await impl.vmDelete('web', created.outs, ctx);
    await impl.vmDelete('web', created.outs, ctx);
    expect(fake.vms.has('web')).toBe(false);
  });
});

describe('owners', () => {
  it('a VM owned by another resource is refused with CONFLICT, and adopted with adopt: true', async () => {
    await createVm({ owner: 'p/dev/a' });
    const { inputs } = await impl.vmCheck({}, { name: 'web', image: 'tiny', owner: 'p/dev/b' });
    await expect(impl.vmCreate(inputs, ctx)).rejects.toThrow(/^CONFLICT: VM web exists and is owned by p\/dev\/a/);
    expect(fake.calls.filter((c) => c.startsWith('create ')).length).toBe(1);
    const adopting = await impl.vmCheck({}, { name: 'web', image: 'tiny', owner: 'p/dev/b', adopt: true });
    expect((await impl.vmCreate(adopting.inputs, ctx)).outs.owner).toBe('p/dev/b');
    expect(fake.calls.filter((c) => c === 'update web').length).toBe(1);
    // The first owner's delete leaves the VM to its new owner; the new owner's delete removes it.
    // (The fake's update keeps no labels: set the owner label the QEMU backend would have written.)
    fake.vms.get('web')!.info.labels = { 'pulumi.localvm/owner': 'p/dev/b' };
    const first = await impl.vmCheck({}, { name: 'web', image: 'tiny', owner: 'p/dev/a' });
    await impl.vmDelete('web', first.inputs, ctx);
    expect(fake.vms.has('web')).toBe(true);
    await impl.vmDelete('web', adopting.inputs, ctx);
    expect(fake.vms.has('web')).toBe(false);
  });
});

describe('dependents notice their VM', () => {
  it('a VmFile changed in the guest is dropped by refresh, and its delete leaves the other content', async () => {
    await createVm();
    const { inputs } = await impl.vmFileCheck({}, { vm: 'web', path: '/etc/motd', content: 'mine' });
    const f = await impl.vmFileCreate(inputs, ctx);
    expect((await impl.vmFileRead(f.id, f.outs, ctx)).id).toBe(f.id);
    fake.vms.get('web')!.files.set('/etc/motd', new TextEncoder().encode('theirs'));
    expect(await impl.vmFileRead(f.id, f.outs, ctx)).toEqual({});
    await impl.vmFileDelete(f.id, f.outs, ctx);
    expect(fake.calls).not.toContain('exec web rm -f -- /etc/motd');
  });

  it('a VmCommand is dropped by refresh when its VM is another instance', async () => {
    await createVm();
    fake.vms.get('web')!.info.createdAt = 'c1';
    const { inputs } = await impl.vmCommandCheck({}, { vm: 'web', create: ['true'] });
    const c = await impl.vmCommandCreate(inputs, ctx);
    expect(c.outs.vmCreatedAt).toBe('c1');
    expect((await impl.vmCommandRead(c.id, c.outs, ctx)).id).toBe(c.id);
    fake.vms.get('web')!.info.createdAt = 'c2';
    expect(await impl.vmCommandRead(c.id, c.outs, ctx)).toEqual({});
    expect((await impl.vmCommandDiff(c.id, c.outs, inputs, ctx)).changes).toBe(true);
  });
});

describe('VmCommand', () => {
  it('create runs the argv and returns its output', async () => {
    await createVm();
    const { inputs } = await impl.vmCommandCheck({}, { vm: 'web', create: ['echo', 'hello'] });
    const r = await impl.vmCommandCreate(inputs, ctx);
    expect(r.outs).toMatchObject({ stdout: 'hello', exitCode: 0 });
    expect(fake.calls).toContain('exec web echo hello');
  });

  it('a shell script runs as /bin/sh -c, an explicit argv', async () => {
    await createVm();
    const { inputs } = await impl.vmCommandCheck({}, { vm: 'web', create: 'echo $HOME; ls' });
    await impl.vmCommandCreate(inputs, ctx);
    expect(fake.calls).toContain('exec web /bin/sh -c echo $HOME; ls');
  });

  it('a non-zero exit fails with the stderr tail unless allowFailure', async () => {
    await createVm();
    const { inputs } = await impl.vmCommandCheck({}, { vm: 'web', create: ['false'] });
    await expect(impl.vmCommandCreate(inputs, ctx)).rejects.toThrow(/COMMAND_FAILED.*exited with 1:\nfailed/s);
    const allowed = await impl.vmCommandCheck({}, { vm: 'web', create: ['false'], allowFailure: true });
    expect((await impl.vmCommandCreate(allowed.inputs, ctx)).outs.exitCode).toBe(1);
  });

  it('update runs `update`, else `create`, and only when what runs changed', async () => {
    await createVm();
    const v1 = await impl.vmCommandCheck({}, { vm: 'web', create: ['echo', 'a'], update: ['echo', 'u'] });
    const c = await impl.vmCommandCreate(v1.inputs, ctx);
    const v2 = await impl.vmCommandCheck(c.outs, { vm: 'web', create: ['echo', 'b'], update: ['echo', 'u'] });
    expect((await impl.vmCommandUpdate(c.id, c.outs, v2.inputs, ctx)).outs.stdout).toBe('u');
    const v3 = await impl.vmCommandCheck({}, { vm: 'web', create: ['echo', 'c'] });
    expect((await impl.vmCommandUpdate(c.id, c.outs, v3.inputs, ctx)).outs.stdout).toBe('c');
    const before = fake.calls.length;
    const v4 = await impl.vmCommandCheck(
      {},
      { vm: 'web', create: ['echo', 'a'], update: ['echo', 'u'], allowFailure: true },
    );
    expect((await impl.vmCommandUpdate(c.id, c.outs, v4.inputs, ctx)).outs.stdout).toBe('a');
    expect(fake.calls.length).toBe(before);
  });

  it('delete runs the delete command; a VM already gone is success', async () => {
    await createVm();
    const { inputs } = await impl.vmCommandCheck({}, { vm: 'web', create: ['true'], delete: ['echo', 'bye'] });
    const c = await impl.vmCommandCreate(inputs, ctx);
    await impl.vmCommandDelete(c.id, c.outs, ctx);
    expect(fake.calls).toContain('exec web echo bye');
    await impl.vmDelete('web', {}, ctx);
    await impl.vmCommandDelete(c.id, c.outs, ctx);
  });
});

describe('VmFile', () => {
  it('writes content and reports its sha256; delete removes it with rm -f', async () => {
    await createVm();
    const { inputs } = await impl.vmFileCheck({}, { vm: 'web', path: '/etc/motd', content: 'hi\n', mode: 0o600 });
    const f = await impl.vmFileCreate(inputs, ctx);
    expect(f.outs.sha256).toBe(sha256('hi\n'));
    expect(new TextDecoder().decode(fake.vms.get('web')!.files.get('/etc/motd'))).toBe('hi\n');
    await impl.vmFileDelete(f.id, f.outs, ctx);
    expect(fake.calls).toContain('exec web rm -f -- /etc/motd');
    await impl.vmDelete('web', {}, ctx);
    await impl.vmFileDelete(f.id, f.outs, ctx);
  });

  it('reads a local source at create; a changed source file replaces it', async () => {
    await createVm();
    const source = join(dir, 'motd');
    writeFileSync(source, 'v1');
    const { inputs } = await impl.vmFileCheck({}, { vm: 'web', path: '/etc/motd', source });
    const f = await impl.vmFileCreate(inputs, ctx);
    expect(f.outs.sha256).toBe(sha256('v1'));
    expect((await impl.vmFileDiff(f.id, f.outs, inputs, ctx)).changes).toBe(false);
    writeFileSync(source, 'v2');
    expect(await impl.vmFileDiff(f.id, f.outs, inputs, ctx)).toMatchObject({ changes: true, replaces: [] });
    const updated = await impl.vmFileUpdate(f.id, f.outs, inputs, ctx);
    expect(updated.outs.sha256).toBe(sha256('v2'));
    expect(new TextDecoder().decode(fake.vms.get('web')!.files.get('/etc/motd'))).toBe('v2');
  });
});

describe('deadlines passed down', () => {
  /** A backend whose exec and putFile hang until their signal aborts, recording the reason. */
  class HangingBackend extends FakeBackend {
    aborted: unknown[] = [];
    started = 0;
    private hang(signal: AbortSignal | undefined): Promise<never> {
      this.started++;
      return new Promise<never>((_, reject) =>
        signal?.addEventListener('abort', () => {
          this.aborted.push(signal.reason);
          reject(signal.reason);
        }),
      );
    }
    override exec(_name: string, _argv: string[], options?: ExecOptions): Promise<ExecResult> {
      return this.hang(options?.signal);
    }
    override putFile(_name: string, _path: string, _content: Uint8Array, options?: PutFileOptions): Promise<void> {
      return this.hang(options?.signal);
    }
  }

  async function hangingSetup() {
    const backend = new HangingBackend();
    const clock = manualClock();
    const c: OperationContext = { ...ctx, clock, backends: { qemu: backend } };
    const { inputs } = await impl.vmCheck({}, { name: 'web', image: 'tiny', providerVersion: '0.1.0' });
    await impl.vmCreate(inputs, c);
    return { backend, clock, c };
  }

  const until = async (cond: () => boolean) => {
    while (!cond()) await new Promise((r) => setTimeout(r, 1));
  };

  it('a command that outlasts timeoutMs plus the grace is cancelled, not left running', async () => {
    const { backend, clock, c } = await hangingSetup();
    const { inputs } = await impl.vmCommandCheck({}, { vm: 'web', create: ['sleep', '1000'], timeoutMs: 1_000 });
    const running = impl.vmCommandCreate(inputs, c).then(
      () => new Error('resolved'),
      (e: unknown) => e as Error,
    );
    await until(() => backend.started === 1);
    clock.advance(15_999);
    expect(backend.aborted).toEqual([]);
    clock.advance(1);
    const error = await running;
    expect(error.message).toBe('TIMEOUT: command in VM web took longer than 16000 ms');
    expect(backend.aborted).toHaveLength(1);
  });

  it('a file write that outlasts its timeoutMs is cancelled', async () => {
    const { backend, clock, c } = await hangingSetup();
    const { inputs } = await impl.vmFileCheck({}, { vm: 'web', path: '/etc/motd', content: 'hi', timeoutMs: 500 });
    const writing = impl.vmFileCreate(inputs, c).then(
      () => new Error('resolved'),
      (e: unknown) => e as Error,
    );
    await until(() => backend.started === 1);
    clock.advance(500);
    expect((await writing).message).toBe('TIMEOUT: write of /etc/motd in VM web took longer than 500 ms');
    expect(backend.aborted).toHaveLength(1);
  });
});
