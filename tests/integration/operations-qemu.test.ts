/**
 * The operations layer on real QEMU: retry of a transient launch failure injected through
 * the runner, a permanent one tried once, readiness, and hostile input that must leave
 * nothing on disk and other VMs untouched.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { realClock, type OperationContext } from '../../src/context.js';

import { createVm, createVmWithRetry, deleteVm, listVms, vmInfo, waitForVmReady } from '../../src/operations/vm.js';
import { createExecaRunner, type Command, type CommandRunner, type RunResult } from '../../src/runner.js';
import { missingTools } from '../fixtures/tools.js';
import { rejection } from '../fixtures/rejection.js';

const skip = missingTools('qemu-system-x86_64', 'qemu-img');
const PREFIX = 'pytest-test-ops-';

/** The real runner, except that the next QEMU launches fail with the given stderr lines. */
function faultyRunner(): CommandRunner & { failNextLaunches: string[]; launches: number } {
  const real = createExecaRunner();
  const runner = {
    failNextLaunches: [] as string[],
    launches: 0,
    async run(cmd: Command, options?: Parameters<CommandRunner['run']>[1]): Promise<RunResult> {
      if (cmd.file.startsWith('qemu-system')) {
        runner.launches++;
        const stderr = runner.failNextLaunches.shift();
        if (stderr !== undefined) {
          return { file: cmd.file, args: cmd.args, exitCode: 1, stdout: '', stderr, timedOut: false, durationMs: 5 };
        }
      }
      return real.run(cmd, options);
    },
  };
  return runner;
}

async function tree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
  return entries.filter((e) => !e.startsWith('locks')).sort();
}

describe.skipIf(skip)('operations on real QEMU', () => {
  let home: string;
  let ctx: OperationContext;
  let runner: ReturnType<typeof faultyRunner>;
  const vm = `${PREFIX}a`;

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'lvm-ops-'));
    runner = faultyRunner();
    ctx = { config: loadConfig({ ...process.env, LOCALVM_HOME: home }), runner, clock: realClock };
  });

  afterAll(async () => {
    for (const v of await listVms(ctx).catch(() => [])) await deleteVm(v.name, ctx);
    await rm(home, { recursive: true, force: true });
  });

  it('retries a transient launch failure injected through the runner, then the VM is ready', async () => {
    runner.failNextLaunches = ["qemu-system-x86_64: Could not set up host forwarding rule 'tcp:127.0.0.1:18080-:80'"];
    const retried: string[] = [];
    const result = await createVmWithRetry(
      { name: vm, image: 'tiny', memory: 128 },
      { minTimeoutMs: 10, maxTimeoutMs: 20, onRetry: (e) => retried.push(e.code) },
      ctx,
    );
    expect(result).toMatchObject({ attempts: 2, adopted: false });
    expect(retried).toEqual(['TRANSIENT']);
    expect(runner.launches).toBe(2);
    const ready = await waitForVmReady(vm, { probes: [{ argv: ['test', '-d', '/proc/1'] }] }, ctx);
    expect(ready.probes).toBeGreaterThanOrEqual(2);
    expect(ready.info.state).toBe('running');
    const r = await (await connect(vm, ctx)).shell('echo ready; echo oops >&2; exit 3');
    expect({ code: r.exitCode, out: r.stdout, err: r.stderr }).toEqual({ code: 3, out: 'ready\n', err: 'oops\n' });
  });

  it('adopts the running VM when created again with the same spec; a different spec is CONFLICT', async () => {
    const before = await vmInfo(vm, ctx);
    const again = await createVmWithRetry({ name: vm, image: 'tiny', memory: 128 }, {}, ctx);
    expect(again).toMatchObject({ adopted: true, attempts: 1 });
    expect(again.info.pid).toBe(before.pid);
    expect((await rejection(createVmWithRetry({ name: vm, image: 'tiny', memory: 512 }, {}, ctx))).code).toBe(
      'CONFLICT',
    );
    expect((await vmInfo(vm, ctx)).pid).toBe(before.pid);
  });

  it('tries a permanent launch failure once and leaves nothing behind', async () => {
    const launches = runner.launches;
    runner.failNextLaunches = ["qemu-system-x86_64: -accel tcg,tb-size=64: invalid accelerator 'tcg'"];
    const error = await rejection(
      createVmWithRetry({ name: `${PREFIX}perm`, image: 'tiny' }, { minTimeoutMs: 10 }, ctx),
    );
    expect(error.code).toBe('COMMAND_FAILED');
    expect(error.message).toContain('invalid accelerator');
    expect(runner.launches - launches).toBe(1);
    expect((await listVms(ctx)).map((v) => v.name)).toEqual([vm]);
    expect(await tree(join(home, 'vms'))).not.toContain(`${PREFIX}perm`);
  });

  it('rejects hostile input before anything touches disk, leaving the running VM alone', async () => {
    const before = await tree(home);
    const pid = (await vmInfo(vm, ctx)).pid;
    const launches = runner.launches;
    for (const name of ['$(reboot)', 'a;rm -rf /', '../etc', '-rf', 'x'.repeat(64), 'vм', '']) {
      expect((await rejection(createVm({ name, image: 'tiny' }, ctx))).code).toBe('VALIDATION');
    }
    expect((await rejection(createVm({ name: `${PREFIX}m0`, memory: 0 }, ctx))).issues?.[0]?.property).toBe('memory');
    expect(
      (await rejection(createVm({ name: `${PREFIX}p`, ports: [{ host: 70000, guest: 80 }] }, ctx))).issues?.[0]
        ?.property,
    ).toBe('ports.0.host');
    expect((await rejection(createVm({ name: `${PREFIX}img`, image: '/nonexistent/disk.qcow2' }, ctx))).code).toBe(
      'NOT_FOUND',
    );
    expect(await tree(home)).toEqual(before);
    expect(runner.launches).toBe(launches);
    const after = await vmInfo(vm, ctx);
    expect({ state: after.state, pid: after.pid }).toEqual({ state: 'running', pid });
  });
});
