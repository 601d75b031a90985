import { describe, expect, it } from 'vitest';
import type { ExecOptions } from '../../src/backend.js';
import { Connector } from '../../src/connector.js';
import { isLocalVmError, type ValidationIssue } from '../../src/errors.js';
import { parseVmSpec } from '../../src/schema.js';
import { FakeBackend } from '../fixtures/fakeBackend.js';

async function setup(): Promise<{ fake: FakeBackend; vm: Connector; seen: (ExecOptions | undefined)[] }> {
  const fake = new FakeBackend();
  await fake.create(parseVmSpec({ name: 'vm' }));
  fake.calls.length = 0;
  const seen: (ExecOptions | undefined)[] = [];
  const exec = fake.exec.bind(fake);
  fake.exec = (name, argv, options) => (seen.push(options), exec(name, argv, options));
  return { fake, vm: new Connector('vm', fake), seen };
}

async function rejection(p: Promise<unknown>): Promise<string[]> {
  const error = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isLocalVmError(error, 'VALIDATION'), String(error)).toBe(true);
  return (error as { issues: ValidationIssue[] }).issues.map((i) => i.property);
}

describe('Connector input validation (before anything reaches the backend)', () => {
  it.each([
    [['env'], { env: { 'A=B': 'c' } }, 'env.A=B'],
    [['env'], { env: { '-i': 'x' } }, 'env.-i'],
    [['id'], { user: '-c' }, 'user'],
    [['sleep', '1'], { timeoutMs: -1 }, 'timeoutMs'],
    [['pwd'], { cwd: 'tmp' }, 'cwd'],
    ['ls', {}, 'argv'],
    [[], {}, 'argv'],
    [['ls', 'a\0b'], {}, 'argv.1'],
  ])('exec(%j, %j) is VALIDATION at %s', async (argv, options, property) => {
    const { fake, vm } = await setup();
    expect(await rejection(vm.exec(argv as string[], options))).toEqual([property]);
    expect(fake.calls).toEqual([]);
  });

  it('shell validates its script and options the same way', async () => {
    const { fake, vm } = await setup();
    expect(await rejection(vm.shell(42 as unknown as string))).toEqual(['script']);
    expect(await rejection(vm.shell('id', { user: '-c' }))).toEqual(['user']);
    expect(fake.calls).toEqual([]);
  });

  it('passes valid argv and options through', async () => {
    const { fake, vm, seen } = await setup();
    const options = { env: { A: '1' }, cwd: '/srv', user: 'dev', timeoutMs: 1_000, stdin: 'x' };
    expect((await vm.exec(['echo', 'hi'], options)).stdout).toBe('hi');
    await vm.shell('echo hi');
    expect(fake.calls).toEqual(['exec vm echo hi', 'exec vm /bin/sh -c echo hi']);
    expect(seen).toEqual([options, {}]);
  });
});
