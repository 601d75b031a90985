import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { resolveBackend, realClock, type OperationContext } from '../../src/context.js';
import { isLocalVmError } from '../../src/errors.js';
import { createRecordingRunner } from '../../src/runner.js';

// tests/fixtures holds an executable named orbctl (the simulator): a PATH with it "has orbctl".
const withOrbctl = fileURLToPath(new URL('../fixtures', import.meta.url));

function ctx(platform: NodeJS.Platform, path: string): OperationContext {
  const config = { ...loadConfig({ HOME: '/nonexistent', PATH: path }), platform };
  return { config, runner: createRecordingRunner(), clock: realClock };
}

describe('backend selection', () => {
  it('auto picks OrbStack on macOS when orbctl is on PATH, and says so', async () => {
    const { backend, reason } = await resolveBackend('auto', ctx('darwin', withOrbctl));
    expect(backend.name).toBe('orbstack');
    expect(reason).toContain('orbctl');
  });

  it('auto picks QEMU on macOS without orbctl, and on Linux even with orbctl', async () => {
    expect((await resolveBackend('auto', ctx('darwin', '/nonexistent'))).backend.name).toBe('qemu');
    const linux = await resolveBackend('auto', ctx('linux', withOrbctl));
    expect(linux.backend.name).toBe('qemu');
    expect(linux.reason).toContain('linux');
  });

  it('an explicit backend overrides auto; orbstack without orbctl is TOOL_NOT_FOUND', async () => {
    expect((await resolveBackend('qemu', ctx('darwin', withOrbctl))).backend.name).toBe('qemu');
    expect((await resolveBackend('orbstack', ctx('linux', withOrbctl))).backend.name).toBe('orbstack');
    const error = await resolveBackend('orbstack', ctx('darwin', '/nonexistent')).catch((e: unknown) => e);
    expect(isLocalVmError(error, 'TOOL_NOT_FOUND')).toBe(true);
  });
});
