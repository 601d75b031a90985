/**
 * Hostile input at the public boundary against a real guest (issue 10, defect 5): each is a
 * VALIDATION error naming the field, raised before anything reaches the guest or the disk.
 * Uses the suite's shared worker VM (localvm/vitest's fixture), like connector.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { isLocalVmError, type ValidationIssue } from '../../src/errors.js';
import { createVm, deleteVm } from '../../src/operations/vm.js';
import { vmTest as test } from '../../src/vitest/index.js';
import { missingTools } from '../fixtures/tools.js';

const skip = missingTools('qemu-system-x86_64', 'qemu-img');

async function validationProperties(p: Promise<unknown>): Promise<string[]> {
  const error = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isLocalVmError(error, 'VALIDATION'), String(error)).toBe(true);
  return (error as { issues: ValidationIssue[] }).issues.map((i) => i.property);
}

describe.skipIf(skip)('hostile input (real QEMU)', () => {
  test('exec env names are validated; values with "=" still arrive whole', async ({ vmName }) => {
    const vm = await connect(vmName);
    expect(await validationProperties(vm.exec(['env'], { env: { 'A=B': 'c' } }))).toEqual(['env.A=B']);
    expect(await validationProperties(vm.exec(['env'], { env: { '-i': 'x' } }))).toEqual(['env.-i']);
    const r = await vm.exec(['env'], { env: { A: 'B=c' } });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.split('\n')).toContain('A=B=c');
  });

  test('exec user, timeout, cwd and argv are validated', async ({ vmName }) => {
    const vm = await connect(vmName);
    expect(await validationProperties(vm.exec(['id'], { user: '-c' }))).toEqual(['user']);
    expect(await validationProperties(vm.exec(['sleep', '5'], { timeoutMs: -1 }))).toEqual(['timeoutMs']);
    expect(await validationProperties(vm.exec(['pwd'], { cwd: 'tmp' }))).toEqual(['cwd']);
    expect(await validationProperties(vm.exec('ls' as unknown as string[]))).toEqual(['argv']);
  });

  test('a spec with 20,000 labels is refused before a VM directory is made', async () => {
    const name = `hostile-${randomBytes(3).toString('hex')}`;
    const labels = Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, 'v'.repeat(256)]));
    try {
      expect(await validationProperties(createVm({ name, backend: 'qemu', labels }))).toEqual(['labels']);
      expect(existsSync(join(loadConfig().stateDir, 'vms', name))).toBe(false);
    } finally {
      // Only if validation failed to stop it: no VM may outlive the test.
      await deleteVm(name);
    }
  });
});
