/**
 * `createTemplate({ from })` on real QEMU (TCG): a running tiny guest (its file system is in
 * RAM) is frozen as it is. What its guest wrote must be in every clone, the source must keep
 * running as the template's clone with its name, labels and files, and the ways it refuses
 * (a stopped VM, a clone, a taken name, a failing setup command) leave the source untouched.
 */
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { realClock, type OperationContext } from '../../src/context.js';
import { createTemplate, deleteTemplate, listTemplates, templateInfo } from '../../src/operations/template.js';
import { createVm, deleteVm, listVms, stopVm, vmInfo, waitForVmReady } from '../../src/operations/vm.js';
import { createExecaRunner } from '../../src/runner.js';
import { rejection } from '../fixtures/rejection.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';

const skip = (await missingQemuOrTiny()) !== undefined;
const SRC = 'tfv-src';
const T = 'tfv-t';

describe.skipIf(skip)('templates from a running VM (real QEMU)', () => {
  let home: string;
  let ctx: OperationContext;
  const sh = async (vm: string, script: string) => (await connect(vm, ctx)).shell(script);

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'lvm-tfv-'));
    ctx = { config: loadConfig({ ...process.env, LOCALVM_HOME: home }), runner: createExecaRunner(), clock: realClock };
    await createVm({ name: SRC, memory: 128, labels: { team: 'a' } }, ctx);
    await waitForVmReady(SRC, {}, ctx);
    await sh(SRC, 'echo written-in-source > /tmp/from-source');
  });

  afterAll(async () => {
    for (const v of await listVms(ctx).catch(() => [])) await deleteVm(v.name, ctx).catch(() => undefined);
    for (const t of await listTemplates(ctx).catch(() => [])) await deleteTemplate(t.name, ctx).catch(() => undefined);
    await rm(home, { recursive: true, force: true });
  });

  it('refuses a failing setup command, both spec and from, and a missing VM; the source keeps running untouched', async () => {
    const bad = await rejection(createTemplate({ name: T, from: SRC, setup: [['/bin/false']] }, ctx));
    expect(bad.code).toBe('COMMAND_FAILED');
    expect(await listTemplates(ctx)).toEqual([]);
    expect(await stat(join(home, 'templates', T)).catch(() => undefined)).toBeUndefined();
    const info = await vmInfo(SRC, ctx);
    expect(info.state).toBe('running');
    expect((await sh(SRC, 'cat /tmp/from-source')).stdout).toBe('written-in-source\n');
    const both = await rejection(createTemplate({ name: T, from: SRC, spec: { memory: 128 } }, ctx));
    expect(both.code).toBe('VALIDATION');
    expect((await rejection(createTemplate({ name: T, from: 'tfv-none' }, ctx))).code).toBe('NOT_FOUND');
  });

  it('resumes the source untouched when the QEMU taking in its memory dies, leaving no template', async () => {
    // SIGKILL the receiving QEMU (its -name is the template's) as soon as it appears: the
    // move fails before or during the migration, and either way the source must run on.
    let killed = false;
    const hunt = (async () => {
      for (let i = 0; i < 2000 && !killed; i++) {
        for (const pid of await readdir('/proc').catch(() => [])) {
          if (!/^\d+$/.test(pid)) continue;
          const argv = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
          if (argv.includes('\0-name\0tfv-dies\0') && argv.includes('\0-incoming\0')) {
            process.kill(Number(pid), 'SIGKILL');
            killed = true;
          }
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const e = await rejection(createTemplate({ name: 'tfv-dies', from: SRC }, ctx));
    killed = true;
    await hunt;
    expect(['COMMAND_FAILED', 'TIMEOUT', 'TRANSIENT']).toContain(e.code);
    expect(await stat(join(home, 'templates', 'tfv-dies')).catch(() => undefined)).toBeUndefined();
    expect((await vmInfo(SRC, ctx)).state).toBe('running');
    expect((await sh(SRC, 'cat /tmp/from-source')).stdout).toBe('written-in-source\n');
  });

  it('freezes the running VM: a clone has what its guest wrote, and the source continues as a clone', async () => {
    const t = await createTemplate({ name: T, from: SRC, setup: [['/bin/sh', '-c', 'echo setup > /tmp/setup']] }, ctx);
    expect(t.from).toBe(SRC);
    expect(t.memory).toBe(128);
    // A VM launched without the identity port: its clones are personalised through the agent.
    expect(t.identity).toBe('agent');
    expect((await stat(join(t.dir, 'ram'))).size).toBe(128 * 1024 * 1024);
    expect(await stat(join(t.dir, 'build')).catch(() => undefined)).toBeUndefined();

    await createVm({ name: 'tfv-clone', template: T }, ctx);
    await waitForVmReady('tfv-clone', {}, ctx);
    const inClone = await sh('tfv-clone', 'cat /tmp/from-source /tmp/setup; hostname');
    expect(inClone.stdout).toBe('written-in-source\nsetup\ntfv-clone\n');

    // The source: same name and labels, running, its guest state kept, now a clone of T.
    const src = await vmInfo(SRC, ctx);
    expect(src.state).toBe('running');
    expect(src.labels).toEqual({ team: 'a' });
    expect((await sh(SRC, 'cat /tmp/from-source; hostname')).stdout).toBe(`written-in-source\n${SRC}\n`);
    const record = JSON.parse(await readFile(join(home, 'vms', SRC, 'vm.json'), 'utf8'));
    expect(record.template).toMatchObject({ name: T, role: 'clone', ramId: 'pc.ram' });
    expect((await templateInfo(T, ctx)).clones).toEqual(['tfv-clone', SRC]);

    // Two restores of one frozen RNG state still differ.
    const random = async (vm: string) => (await sh(vm, 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"')).stdout;
    expect(await random(SRC)).not.toBe(await random('tfv-clone'));
  });

  it('refuses to freeze a clone, a stopped VM, or into a taken name', async () => {
    const clone = await rejection(createTemplate({ name: 'tfv-t2', from: 'tfv-clone' }, ctx));
    expect(clone.code).toBe('CONFLICT');
    expect(clone.message).toContain(`clone of template ${T}`);
    await createVm({ name: 'tfv-stopped', memory: 128 }, ctx);
    await waitForVmReady('tfv-stopped', {}, ctx);
    expect((await rejection(createTemplate({ name: T, from: 'tfv-stopped' }, ctx))).code).toBe('ALREADY_EXISTS');
    expect((await vmInfo('tfv-stopped', ctx)).state).toBe('running');
    await stopVm('tfv-stopped', { force: true }, ctx);
    const stopped = await rejection(createTemplate({ name: 'tfv-t2', from: 'tfv-stopped' }, ctx));
    expect(stopped.code).toBe('CONFLICT');
    expect(await listTemplates(ctx)).toHaveLength(1);
  });

  it('keeps the template while the former source uses it, and deletes it after', async () => {
    expect((await rejection(deleteTemplate(T, ctx))).code).toBe('CONFLICT');
    for (const vm of [SRC, 'tfv-clone']) await deleteVm(vm, ctx);
    expect(await deleteTemplate(T, ctx)).toEqual({ deleted: true });
  });
});
