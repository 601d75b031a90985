import { afterAll, describe, expect, it } from 'vitest';
import type { Backend } from '../../src/backend.js';
import { loadConfig } from '../../src/config.js';
import { availableBackends, resolveBackend, realClock, type OperationContext } from '../../src/context.js';
import { isLocalVmError } from '../../src/errors.js';
import { backendChoices, backendDriver, registerBackend } from '../../src/backends/registry.js';
import { createRecordingRunner } from '../../src/runner.js';
import { parseVmSpec } from '../../src/schema.js';
import { FakeBackend } from '../fixtures/fakeBackend.js';

function ctx(platform: NodeJS.Platform): OperationContext {
  const config = { ...loadConfig({ HOME: '/nonexistent', PATH: '/nonexistent' }), platform };
  return { config, runner: createRecordingRunner(), clock: realClock };
}

describe('backend registry', () => {
  const fake: Backend = Object.assign(new FakeBackend(), { name: 'zeta' });
  registerBackend({
    name: 'zeta',
    summary: 'a test backend',
    capabilities: [],
    availability: (config) =>
      config.platform === 'freebsd' ? { available: true, reason: 'freebsd host' } : { available: false, reason: 'no' },
    autoRank: () => 50,
    acceptsImage: (image) => image.startsWith('zeta:'),
    create: async () => fake,
  });
  afterAll(() => {
    // Leave the registry as the other tests expect it: unregister by replacing with an unavailable driver.
    registerBackend({ ...backendDriver('zeta')!, availability: () => ({ available: false, reason: 'gone' }) });
  });

  it('the built-in backends register themselves, and the schema takes every registered name', () => {
    expect(backendChoices()).toEqual(expect.arrayContaining(['qemu', 'orbstack', 'zeta', 'auto']));
    expect(parseVmSpec({ name: 'a', backend: 'zeta' }).backend).toBe('zeta');
    const error = (() => {
      try {
        parseVmSpec({ name: 'a', backend: 'vmware' });
      } catch (e) {
        return e;
      }
    })();
    expect(isLocalVmError(error, 'VALIDATION')).toBe(true);
    expect((error as { issues: { property: string; reason: string }[] }).issues[0]).toMatchObject({
      property: 'backend',
      reason: expect.stringContaining('zeta'),
    });
  });

  it('auto picks the highest-ranked available backend that accepts the image, embedded images first', async () => {
    const bsd = ctx('freebsd');
    expect((await resolveBackend('auto', bsd, 'zeta:1')).backend).toBe(fake);
    // zeta does not accept a disk image path: the next one does.
    expect((await resolveBackend('auto', bsd, '/images/disk.qcow2')).backend.name).toBe('qemu');
    // `tiny` is embedded in the qemu backend, whatever ranks higher.
    const tiny = await resolveBackend('auto', bsd, 'tiny');
    expect(tiny.backend.name).toBe('qemu');
    expect(tiny.reason).toContain('embedded');
    // Unavailable on linux: never picked by auto, refused when asked for, absent from listings.
    expect((await resolveBackend('auto', ctx('linux'), 'zeta:1')).backend.name).toBe('qemu');
    const refused = await resolveBackend('zeta', ctx('linux')).catch((e: unknown) => e);
    expect(isLocalVmError(refused, 'TOOL_NOT_FOUND')).toBe(true);
    expect((await availableBackends(ctx('linux'))).map((b) => b.name)).not.toContain('zeta');
    expect(await availableBackends(bsd)).toContain(fake);
  });
});
