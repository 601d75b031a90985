/**
 * `fresh: 'test'` fixtures without QEMU: naming, the order a session is torn down in
 * (clones before their template), the sweep and the reaper deleting leftover templates, and
 * "find or create" making a template once when workers ask at the same time. The fake
 * backend holds templates the way the QEMU one does: deleting one with clones is CONFLICT.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { LocalVmError } from '../../src/errors.js';
import { createRecordingRunner } from '../../src/runner.js';
import { parseVmSpec, vmNameSchema, type VmSpec } from '../../src/schema.js';
import type { TemplateCapable, TemplateInfo } from '../../src/backends/qemu/template/ops.js';
import { findOrCreateTemplate } from '../../src/vitest/fresh.js';
import { createVmFixture, freshCloneName, freshTemplateName, sweepLeftovers } from '../../src/vitest/index.js';
import { runReaper } from '../../src/vitest/reaper.js';
import { deletionOrder, newSession, sessionFile, updateSession, withVm } from '../../src/vitest/session.js';
import { FakeBackend, fakeClock } from '../fixtures/fakeBackend.js';
import { testTempDir } from '../fixtures/tempDir.js';
import { codeOfSync } from '../fixtures/rejection.js';

const deadPid = () => spawnSync('true').pid ?? 999_999;

/** FakeBackend with templates; `clones` maps a template to the VMs cloned from it. */
class TemplateFake extends FakeBackend implements TemplateCapable {
  readonly templates = new Map<string, VmSpec>();
  readonly clones = new Map<string, string[]>();
  private describe(name: string): TemplateInfo {
    const spec = this.templates.get(name);
    if (!spec) throw new LocalVmError('NOT_FOUND', `no template named ${name}`);
    const clones = (this.clones.get(name) ?? []).filter((c) => this.vms.has(c));
    return { name, spec, clones, memory: 256, image: 'tiny' } as unknown as TemplateInfo;
  }
  async templateCreate(input: { name: string; spec: VmSpec; setup: string[][] }) {
    this.calls.push(`template create ${input.name}`);
    // A build takes a while: long enough for a second worker to ask in the meantime.
    await new Promise((r) => setTimeout(r, 30));
    if (this.templates.has(input.name)) throw new LocalVmError('ALREADY_EXISTS', `${input.name} exists`);
    this.templates.set(input.name, input.spec);
    return this.describe(input.name);
  }
  async templateList() {
    return [...this.templates.keys()].map((n) => this.describe(n));
  }
  async templateInfo(name: string) {
    return this.describe(name);
  }
  async templateDelete(name: string) {
    this.calls.push(`template delete ${name}`);
    if (!this.templates.has(name)) return { deleted: false };
    if (this.describe(name).clones.length) throw new LocalVmError('CONFLICT', `${name} has clones`);
    this.templates.delete(name);
    return { deleted: true };
  }
}

function setup() {
  const dir = testTempDir('localvm-fresh-');
  const backend = new TemplateFake();
  const ctx = {
    config: loadConfig({ HOME: dir, LOCALVM_HOME: dir, PATH: '' }),
    runner: createRecordingRunner(),
    clock: fakeClock(),
    backends: { qemu: backend },
  };
  return { dir, backend, ctx };
}

describe("fresh: 'test' naming", () => {
  it('names templates and clones within the VM name rules, even with the longest prefix', () => {
    const prefix = 'a'.repeat(40);
    // The largest pid, and a start time a year of uptime at 100 ticks a second.
    const id = 's' + (4_194_304).toString(36) + '-' + (100 * 86_400 * 366).toString(36);
    for (const name of [
      freshTemplateName(prefix, 'f'.repeat(10), { id }),
      freshTemplateName(prefix, 'f'.repeat(10), { reuse: true }),
      freshCloneName(prefix, id, '16', 9999),
    ]) {
      expect(vmNameSchema.safeParse(name).success, name).toBe(true);
    }
    expect(freshTemplateName('pytest-test-', '0123456789', { id: 's1' })).toBe('pytest-test-s1-t012345');
    expect(freshTemplateName('pytest-test-', '0123456789', { reuse: true })).toBe('pytest-test-reuse-0123456789-t');
    expect(freshCloneName('pytest-test-', 's1', '2', 3)).toBe('pytest-test-s1-w2-3');
  });

  it('tears a session down clones first, templates last', () => {
    const order = deletionOrder([{ name: 't', kind: 'template' as const }, { name: 'a' }, { name: 'b' }]);
    expect(order.map((e) => e.name)).toEqual(['a', 'b', 't']);
  });

  it("refuses a fresh mode other than 'worker' or 'test'", () => {
    expect(codeOfSync(() => createVmFixture({ fresh: 'file' as 'test' }))).toBe('VALIDATION');
  });
});

describe("fresh: 'test' templates", () => {
  it('makes a template once when two workers ask for it at the same time', async () => {
    const { backend, ctx } = setup();
    const made = await Promise.all([
      findOrCreateTemplate('pytest-test-reuse-abc-t', { image: 'tiny' }, false, ctx),
      findOrCreateTemplate('pytest-test-reuse-abc-t', { image: 'tiny' }, false, ctx),
    ]);
    expect(made.sort()).toEqual([false, true]);
    expect(backend.calls.filter((c) => c.startsWith('template create'))).toEqual([
      'template create pytest-test-reuse-abc-t',
    ]);
  });

  it('records a session template before it is made', async () => {
    const { dir, backend, ctx } = setup();
    let recorded: string[] | undefined;
    const create = backend.templateCreate.bind(backend);
    backend.templateCreate = async (input) => {
      const { readdirSync, readFileSync } = await import('node:fs');
      const files = readdirSync(join(dir, 'sessions')).filter((f) => f.endsWith('.json'));
      recorded = files.flatMap((f) =>
        (
          JSON.parse(readFileSync(join(dir, 'sessions', f), 'utf8')) as { vms: { name: string; kind?: string }[] }
        ).vms.map((v) => `${v.kind} ${v.name}`),
      );
      return create(input);
    };
    // The reaper this starts watches the vitest runner (alive), and exits when the file goes.
    ctx.runner.spawnDetached = async () => 0;
    await findOrCreateTemplate('pytest-test-s1-tabc', {}, true, ctx);
    expect(recorded).toEqual(['template pytest-test-s1-tabc']);
  });

  it('the sweep deletes templates of dead sessions after their clones, and leaves reused and live ones', async () => {
    const { dir, backend, ctx } = setup();
    for (const t of ['pytest-test-sold-tabc', 'pytest-test-reuse-abc-t', 'pytest-test-slive-tabc', 'other-t']) {
      backend.templates.set(t, parseVmSpec({ name: t }));
    }
    await backend.create(parseVmSpec({ name: 'pytest-test-sold-w1-1' }));
    backend.clones.set('pytest-test-sold-tabc', ['pytest-test-sold-w1-1']);
    await updateSession(dir, 'slive', () =>
      withVm(newSession('slive', process.pid, undefined), {
        name: 'pytest-test-slive-tabc',
        pid: process.pid,
        kind: 'template',
      }),
    );
    expect(await sweepLeftovers('pytest-test-', ctx)).toEqual(['pytest-test-sold-w1-1', 'pytest-test-sold-tabc']);
    expect([...backend.templates.keys()].sort()).toEqual([
      'other-t',
      'pytest-test-reuse-abc-t',
      'pytest-test-slive-tabc',
    ]);
  });

  it('the reaper of a dead runner deletes its clone, then its template, then exits', async () => {
    const { dir, backend, ctx } = setup();
    backend.templates.set('p-s1-tabc', parseVmSpec({ name: 'p-s1-tabc' }));
    await backend.create(parseVmSpec({ name: 'p-s1-w1-1' }));
    backend.clones.set('p-s1-tabc', ['p-s1-w1-1']);
    const record = {
      ...newSession('s1', deadPid(), undefined),
      // The template first, as a worker records it: the reaper still deletes the clone before it.
      vms: [
        { name: 'p-s1-tabc', pid: deadPid(), kind: 'template' as const },
        { name: 'p-s1-w1-1', pid: deadPid() },
      ],
    };
    mkdirSync(join(dir, 'sessions'));
    writeFileSync(sessionFile(dir, 's1'), JSON.stringify(record));
    const why = await runReaper(sessionFile(dir, 's1'), { ctx, intervalMs: 5 });
    expect(why).toContain('reaped p-s1-w1-1, p-s1-tabc');
    expect(backend.vms.size).toBe(0);
    expect(backend.templates.size).toBe(0);
    expect(existsSync(sessionFile(dir, 's1'))).toBe(false);
  });

  it('the reaper keeps a template while a clone outside its session holds it, and retries', async () => {
    const { dir, backend, ctx } = setup();
    backend.templates.set('p-s1-tabc', parseVmSpec({ name: 'p-s1-tabc' }));
    await backend.create(parseVmSpec({ name: 'somebody-else' }));
    backend.clones.set('p-s1-tabc', ['somebody-else']);
    const record = {
      ...newSession('s1', deadPid(), undefined),
      vms: [{ name: 'p-s1-tabc', pid: deadPid(), kind: 'template' as const }],
    };
    mkdirSync(join(dir, 'sessions'));
    writeFileSync(sessionFile(dir, 's1'), JSON.stringify(record));
    const reaping = runReaper(sessionFile(dir, 's1'), { ctx, intervalMs: 5 });
    await new Promise((r) => setTimeout(r, 60));
    expect(backend.templates.has('p-s1-tabc')).toBe(true);
    expect(existsSync(sessionFile(dir, 's1'))).toBe(true);
    await backend.delete('somebody-else');
    expect(await reaping).toContain('p-s1-tabc');
    expect(backend.templates.size).toBe(0);
  });
});
