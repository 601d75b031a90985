/**
 * Templates on real QEMU (TCG): one template is frozen from a tiny guest, and clones are
 * restored from it through createVm. Clones must each be their own machine (hostname,
 * random output, clock), refuse to restore on a changed QEMU or a damaged state file
 * without leaving anything behind, and keep the template from being deleted under them.
 */
import { readFile, rm, truncate, writeFile, mkdtemp, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { realClock, type OperationContext } from '../../src/context.js';
import { createTemplate, deleteTemplate, listTemplates, templateInfo } from '../../src/operations/template.js';
import {
  createVm,
  deleteVm,
  findVm,
  listVms,
  startVm,
  stopVm,
  vmInfo,
  waitForVmReady,
} from '../../src/operations/vm.js';
import { createExecaRunner } from '../../src/runner.js';
import { rejection } from '../fixtures/rejection.js';
import { createQemuBackend } from '../../src/backends/qemu/backend.js';
import { macFor } from '../../src/backends/qemu/template/restore.js';
import { parseVmSpec } from '../../src/schema.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';

const skip = (await missingQemuOrTiny()) !== undefined;
const T = 'tpl-base';

describe.skipIf(skip)('templates (real QEMU)', () => {
  let home: string;
  let ctx: OperationContext;
  let tplDir: string;
  const measured: Record<string, number> = {};
  const sh = async (vm: string, script: string) => (await connect(vm, ctx)).shell(script);
  const cmdline = async (vm: string) =>
    (await readFile(`/proc/${(await vmInfo(vm, ctx)).pid}/cmdline`, 'utf8')).split('\0');

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'lvm-tpl-'));
    ctx = { config: loadConfig({ ...process.env, LOCALVM_HOME: home }), runner: createExecaRunner(), clock: realClock };
    const started = performance.now();
    const t = await createTemplate(
      { name: T, spec: { memory: 128 }, setup: [['/bin/sh', '-c', 'echo set-up > /tmp/marker']] },
      ctx,
    );
    measured.templateCreateMs = Math.round(performance.now() - started);
    tplDir = t.dir;
  });

  afterAll(async () => {
    for (const v of await listVms(ctx).catch(() => [])) await deleteVm(v.name, ctx).catch(() => undefined);
    await rm(home, { recursive: true, force: true });
    console.log(`[template] ${JSON.stringify(measured)}`);
  });

  it('records what a restore depends on and keeps no build VM', async () => {
    const record = JSON.parse(await readFile(join(tplDir, 'template.json'), 'utf8'));
    expect(record.deps).toMatchObject({ machine: 'pc', accel: expect.any(String), memory: 128, cpus: 1 });
    expect(record.deps.qemuVersion).toMatch(/^QEMU emulator version \d/);
    expect(record.deps.layout).toMatch(/^[0-9a-f]{64}$/);
    expect((await stat(join(tplDir, 'ram'))).size).toBe(128 * 1024 * 1024);
    expect(record.stateBytes).toBeGreaterThan(0);
    expect(await stat(join(tplDir, 'build')).catch(() => undefined)).toBeUndefined();
    expect(await listVms(ctx)).toEqual([]);
  });

  it('restores two clones, each its own machine: hostname, random output, clock', async () => {
    const seen: { host: string; random: string; skew: number }[] = [];
    for (const name of ['clone-a', 'clone-b']) {
      const started = performance.now();
      await createVm({ name, template: T, labels: { role: 'clone' } }, ctx);
      const ready = await waitForVmReady(name, {}, ctx);
      measured[`${name}ReadyMs`] = Math.round(performance.now() - started);
      expect(ready.info.state).toBe('running');
      const r = await sh(
        name,
        'hostname; head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; date +%s; cat /tmp/marker',
      );
      const [host = '', random = '', clock = '', marker] = r.stdout.trim().split('\n');
      seen.push({ host, random, skew: Math.abs(Number(clock) - Date.now() / 1000) });
      // The setup command ran before the freeze, so its file is in every clone.
      expect(marker).toBe('set-up');
    }
    expect(seen.map((s) => s.host)).toEqual(['clone-a', 'clone-b']);
    expect(seen[0]?.random).toMatch(/^[0-9a-f]{64}$/);
    expect(seen[0]?.random).not.toBe(seen[1]?.random);
    for (const s of seen) expect(s.skew).toBeLessThan(2);
    const [a, b] = [await cmdline('clone-a'), await cmdline('clone-b')];
    expect(a.join(' ')).toContain(`mem-path=${join(tplDir, 'ram')},share=off`);
    expect(a).toContain('defer');
    const guid = (args: string[]) => args.find((x) => x.startsWith('vmgenid,'));
    expect(guid(a)).toBeDefined();
    expect(guid(a)).not.toBe(guid(b));
    // The guest bound its vmgenid driver to the device: it is told of each new generation id.
    expect((await sh('clone-a', 'ls /sys/bus/acpi/drivers/vmgenid/')).stdout).toContain('QEMUVGID');
    const macs = await Promise.all(['clone-a', 'clone-b'].map((n) => sh(n, 'cat /sys/class/net/eth0/address')));
    expect(macs.map((m) => m.stdout.trim())).toEqual([macFor('clone-a'), macFor('clone-b')]);
    // All of it came through the helper parked in the template, which is gone afterwards.
    const info = await templateInfo(T, ctx);
    expect(info.identity).toBe('helper');
    // CI installs a C compiler and the static C library (scripts/setup.sh): there the
    // static program is what parks; the shell helper has its own test below.
    if (process.env.CI) expect(info.helper).toBe('program');
    expect((await sh('clone-a', 'ls /run /tmp | grep -c localvm-identity || true')).stdout.trim()).toBe('0');
    expect((await vmInfo('clone-a', ctx)).labels).toEqual({ role: 'clone' });
  });

  it('with the program ruled out the shell helper parks, and its clones are their own machines too', async () => {
    // As on a host with no C compiler (the unit tests cover that decision).
    process.env.LOCALVM_IDENTITY_HELPER = 'shell';
    try {
      await createTemplate({ name: 'tpl-shell', spec: { memory: 128 } }, ctx);
    } finally {
      delete process.env.LOCALVM_IDENTITY_HELPER;
    }
    expect(await templateInfo('tpl-shell', ctx)).toMatchObject({ identity: 'helper', helper: 'shell' });
    await createVm({ name: 'clone-sh', template: 'tpl-shell' }, ctx);
    await waitForVmReady('clone-sh', {}, ctx);
    const r = await sh(
      'clone-sh',
      'hostname; cat /sys/class/net/eth0/address; date +%s; ls /run | grep -c localvm-identity || true',
    );
    const [host, mac, clock, left] = r.stdout.trim().split('\n');
    expect([host, mac, left]).toEqual(['clone-sh', macFor('clone-sh'), '0']);
    expect(Math.abs(Number(clock) - Date.now() / 1000)).toBeLessThan(2);
    await deleteVm('clone-sh', ctx);
    await deleteTemplate('tpl-shell', ctx);
  });

  it('lists the template with its clones and refuses to delete it under them', async () => {
    const [listed] = await listTemplates(ctx);
    expect(listed).toMatchObject({ name: T, memory: 128, clones: ['clone-a', 'clone-b'] });
    expect(listed?.sizeBytes).toBeGreaterThan(0);
    const e = await rejection(deleteTemplate(T, ctx));
    expect(e.code).toBe('CONFLICT');
    expect(e.details?.clones).toEqual(['clone-a', 'clone-b']);
    expect((await templateInfo(T, ctx)).name).toBe(T);
  });

  it('a stopped clone cold-boots on start, with its disks and record', async () => {
    await stopVm('clone-b', {}, ctx);
    expect((await vmInfo('clone-b', ctx)).state).toBe('stopped');
    await startVm('clone-b', ctx);
    await waitForVmReady('clone-b', {}, ctx);
    const args = await cmdline('clone-b');
    expect(args).not.toContain('-incoming');
    expect((await sh('clone-b', 'echo up')).stdout).toBe('up\n');
  });

  it('refuses a memory other than the template’s, and an unknown template', async () => {
    const e = await rejection(createVm({ name: 'clone-m', template: T, memory: 256 }, ctx));
    expect(e.code).toBe('VALIDATION');
    expect(e.issues?.[0]?.property).toBe('memory');
    expect((await rejection(createVm({ name: 'clone-u', template: 'no-such' }, ctx))).code).toBe('NOT_FOUND');
    expect(await findVm('clone-m', ctx)).toBeUndefined();
  });

  it('refuses a template made by another QEMU version with a CONFLICT naming it, leaving nothing', async () => {
    const file = join(tplDir, 'template.json');
    const original = await readFile(file, 'utf8');
    const edited = JSON.parse(original);
    edited.deps.qemuVersion = 'QEMU emulator version 6.2.0';
    await writeFile(file, JSON.stringify(edited));
    try {
      const e = await rejection(createVm({ name: 'clone-v', template: T }, ctx));
      expect(e.code).toBe('CONFLICT');
      expect(e.details?.changes).toEqual([
        { field: 'qemuVersion', recorded: 'QEMU emulator version 6.2.0', now: expect.stringMatching(/^QEMU/) },
      ]);
      expect(e.hint).toContain(`localvm template create ${T}`);
      expect(await findVm('clone-v', ctx)).toBeUndefined();
    } finally {
      await writeFile(file, original);
    }
  });

  it('refuses a truncated state file before anything is made, and a damaged one that QEMU rejects leaves nothing', async () => {
    const state = join(tplDir, 'state');
    const file = join(tplDir, 'template.json');
    const [original, originalRecord] = [await readFile(state), await readFile(file, 'utf8')];
    try {
      await truncate(state, 4096);
      const e = await rejection(createVm({ name: 'clone-t', template: T }, ctx));
      expect(e.code).toBe('CONFLICT');
      expect(e.message).toContain('truncated');
      expect(await findVm('clone-t', ctx)).toBeUndefined();

      // Now the record agrees with the damage, so the plan passes and QEMU itself refuses the stream.
      const record = JSON.parse(originalRecord);
      record.stateBytes = 4096;
      record.stateSha256 = (await import('node:crypto'))
        .createHash('sha256')
        .update(await readFile(state))
        .digest('hex');
      await writeFile(file, JSON.stringify(record));
      const q = await rejection(createVm({ name: 'clone-t', template: T }, ctx));
      expect(q.code).toBe('COMMAND_FAILED');
      expect(q.details?.template).toBe(T);
      expect(await findVm('clone-t', ctx)).toBeUndefined();
      expect((await listVms(ctx)).map((v) => v.name)).toEqual(['clone-a', 'clone-b']);
    } finally {
      await writeFile(state, original);
      await writeFile(file, originalRecord);
    }
  });

  it('a held clone resumed by the process that restored it uses the parked helper; by another, the agent', async () => {
    // Two backends are two hosts with their own identity ports, as two processes would be.
    const [restorer, other] = [0, 1].map(() => createQemuBackend({ config: ctx.config, runner: ctx.runner }));
    for (const [name, resumer] of [
      ['held-same', restorer],
      ['held-other', other],
    ] as const) {
      await restorer?.createHeld({ ...parseVmSpec({ name, template: T }), template: T });
      await resumer?.resume(name);
      const r = await sh(name, 'hostname; date +%s');
      const [host, clock] = r.stdout.trim().split('\n');
      expect(host).toBe(name);
      expect(Math.abs(Number(clock) - Date.now() / 1000)).toBeLessThan(2);
      // A resumed pool clone keeps its template's MAC either way (see hold.ts).
      expect((await sh(name, 'cat /sys/class/net/eth0/address')).stdout.trim()).not.toBe(macFor(name));
      await restorer?.delete(name);
    }
  });

  it('deletes the template once its clones are gone', async () => {
    for (const n of ['clone-a', 'clone-b']) await deleteVm(n, ctx);
    expect(await deleteTemplate(T, ctx)).toEqual({ deleted: true });
    expect(await listTemplates(ctx)).toEqual([]);
    expect(await deleteTemplate(T, ctx)).toEqual({ deleted: false });
  });
});
