/**
 * Level A, pure half, for templates: a `Vm` with `template` (a clone) and the `Template`
 * resource. Check decides what `pulumi preview` reports as invalid; diff decides whether a
 * clone or a template is replaced, updated, or left alone.
 */
import { describe, expect, it } from 'vitest';
import {
  UNKNOWN,
  checkTemplate,
  checkVm,
  diffTemplate,
  diffVm,
  templateInputsOf,
  vmSpecOf,
} from '../../src/provider/logic.js';
import { FROM_TEMPLATE } from '../../src/schema.js';

const providerKeys = { __provider: 'exports.handler = () => ({})', providerVersion: '0.1.0' };

/** A clone as a successful create stores it: checked inputs, with the VM's real cpus and memory laid over. */
function storedClone(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const checked = checkVm({ ...providerKeys, name: 'web', template: 'base', ...overrides });
  expect(checked.failures).toEqual([]);
  return { ...checked.inputs, cpus: 1, memory: 128, state: 'running', backend: 'qemu', accel: 'tcg' };
}

describe('Vm with template (a clone)', () => {
  it('checks into inputs that parse back into a clone spec (no image, cpus and memory from the template)', () => {
    const checked = checkVm({ ...providerKeys, name: 'web', template: 'base' });
    expect(checked.failures).toEqual([]);
    expect(checked.inputs).not.toHaveProperty('image');
    const spec = vmSpecOf(checked.inputs);
    expect(spec.template).toBe('base');
    expect(spec.memory).toBe(FROM_TEMPLATE);
    expect(spec.cpus).toBe(FROM_TEMPLATE);
  });

  it('keeps the same shape when another input is unknown (preview)', () => {
    const checked = checkVm({ ...providerKeys, name: 'web', template: 'base', labels: UNKNOWN });
    expect(checked.failures).toEqual([]);
    expect(checked.inputs).not.toHaveProperty('image');
    expect(checked.inputs).not.toHaveProperty('memory');
    const unknownTemplate = checkVm({ ...providerKeys, name: 'web', template: UNKNOWN });
    expect(unknownTemplate.failures).toEqual([]);
    expect(unknownTemplate.inputs).not.toHaveProperty('image');
  });

  it('fails image, kernel and userData given with template, and a bad template name, with property paths', () => {
    const both = checkVm({ ...providerKeys, name: 'web', template: 'base', image: 'tiny', userData: '#x' });
    expect(both.failures.map((f) => f.property).sort()).toEqual(['image', 'userData']);
    expect(both.failures[0]!.reason).toMatch(/template/);
    const kernel = checkVm({ ...providerKeys, name: 'web', template: 'base', kernel: '/boot/vmlinuz' });
    expect(kernel.failures.map((f) => f.property)).toEqual(['kernel']);
    const bad = checkVm({ ...providerKeys, name: 'web', template: '../etc' });
    expect(bad.failures.map((f) => f.property)).toEqual(['template']);
  });

  it('diffs a stored clone against the same inputs as no change (its real memory is not a change)', () => {
    const news = checkVm({ ...providerKeys, name: 'web', template: 'base' }).inputs;
    expect(diffVm(storedClone(), news)).toMatchObject({ changes: false, replaces: [], updates: [] });
  });

  it('replaces, deleting first, when the template changes or becomes unknown (the Template is replaced)', () => {
    const other = checkVm({ ...providerKeys, name: 'web', template: 'other' }).inputs;
    expect(diffVm(storedClone(), other)).toMatchObject({ replaces: ['template'], deleteBeforeReplace: true });
    const unknown = checkVm({ ...providerKeys, name: 'web', template: UNKNOWN }).inputs;
    expect(diffVm(storedClone(), unknown).replaces).toEqual(['template']);
    // A booted VM that becomes a clone is another machine too.
    const booted = { ...checkVm({ ...providerKeys, name: 'web', image: 'tiny' }).inputs, state: 'running' };
    expect(diffVm(booted, checkVm({ ...providerKeys, name: 'web', template: 'base' }).inputs).replaces).toContain(
      'template',
    );
  });

  it('updates a clone whose memory is set to a value other than what it runs with', () => {
    const news = checkVm({ ...providerKeys, name: 'web', template: 'base', memory: 256 }).inputs;
    expect(diffVm(storedClone(), news).updates).toEqual(['memory']);
  });
});

/** A Template as a successful create stores it. */
function storedTemplate(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const checked = checkTemplate({ ...providerKeys, name: 'base', spec: { memory: 128 }, ...overrides });
  expect(checked.failures).toEqual([]);
  return { ...checked.inputs, sizeBytes: 1, qemuVersion: 'QEMU emulator version 7.2.0', memory: 128, createdAt: 't' };
}

describe('Template', () => {
  it('checks name, spec and setup with property paths', () => {
    const r = checkTemplate({
      ...providerKeys,
      name: 'Bad/Name',
      spec: { memory: 1, ports: [{ host: 99999, guest: 22 }], bogus: true, template: 'x', name: 'y' },
      setup: [[], ['true']],
    });
    expect(r.failures.map((f) => f.property).sort()).toEqual([
      'name',
      'setup.0',
      'spec',
      'spec.memory',
      'spec.name',
      'spec.ports.0.host',
      'spec.template',
    ]);
    expect(r.failures.find((f) => f.property === 'spec.template')!.reason).toMatch(/not from another template/);
  });

  it('accepts a minimal template, with setup defaulting to none, and keeps the provider keys', () => {
    const r = checkTemplate({ ...providerKeys, name: 'base' });
    expect(r.failures).toEqual([]);
    expect(r.inputs).toEqual({ ...providerKeys, name: 'base', spec: {}, setup: [] });
    expect(templateInputsOf(r.inputs)).toEqual({ name: 'base', spec: {}, setup: [] });
  });

  it('lets unknowns through (preview) and fills the known defaults', () => {
    const r = checkTemplate({ ...providerKeys, name: UNKNOWN, spec: { memory: UNKNOWN, image: 'tiny' } });
    expect(r.failures).toEqual([]);
    expect(r.inputs).toMatchObject({ name: UNKNOWN, spec: { memory: UNKNOWN, image: 'tiny' }, setup: [] });
  });

  it('replaces on any change of name, spec or setup, deleting first when the name stays', () => {
    const olds = storedTemplate();
    const check = (o: Record<string, unknown>) =>
      checkTemplate({ ...providerKeys, name: 'base', spec: { memory: 128 }, ...o }).inputs;
    expect(diffTemplate(olds, check({}))).toMatchObject({ changes: false, replaces: [] });
    expect(diffTemplate(olds, check({ spec: { memory: 256 } }))).toMatchObject({
      changes: true,
      replaces: ['spec'],
      deleteBeforeReplace: true,
    });
    expect(diffTemplate(olds, check({ setup: [['true']] })).replaces).toEqual(['setup']);
    expect(diffTemplate(olds, check({ spec: { memory: UNKNOWN } })).replaces).toEqual(['spec']);
    // Under another name the new template can be built next to the old one.
    expect(diffTemplate(olds, check({ name: 'base2' }))).toMatchObject({
      replaces: ['name'],
      deleteBeforeReplace: false,
    });
    expect(diffTemplate(olds, check({ name: UNKNOWN })).deleteBeforeReplace).toBe(true);
  });

  it('treats a new provider version as an in-place update, not a rebuild of the template and its clones', () => {
    const news = checkTemplate({ ...providerKeys, providerVersion: '0.2.0', name: 'base', spec: { memory: 128 } });
    expect(diffTemplate(storedTemplate(), news.inputs)).toMatchObject({
      changes: true,
      replaces: [],
      updates: ['providerVersion'],
    });
  });
});
