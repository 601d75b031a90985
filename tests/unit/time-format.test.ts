/** Durations in messages are whole (issue 10, defect 9: `no reply in 7364.4730389999895ms`). */
import { describe, expect, it } from 'vitest';
import { ready, waitForVmReady } from '../../src/index.js';
import { formatDuration as cliDuration, formatCreated } from '../../src/cli/format.js';
import { createVm } from '../../src/operations/vm.js';
import { formatDuration, formatMs } from '../../src/time/format.js';
import { FakeBackend, fakeContext } from '../fixtures/fakeBackend.js';
import { rejection } from '../fixtures/rejection.js';

describe('duration formatting', () => {
  it('prints whole milliseconds, or whole seconds from 10 s or when whole', () => {
    expect(formatMs(7364.4730389999895)).toBe('7364 ms');
    expect(
      [0.4, 50, 250.5, 999.9, 1000, 1500, 7364.47, 9999.4, 12_345.6, 120_000].map((ms) => formatDuration(ms)),
    ).toEqual(['0 ms', '50 ms', '251 ms', '1 s', '1 s', '1500 ms', '7364 ms', '9999 ms', '12 s', '120 s']);
    expect(cliDuration(12_345.6)).toBe('12 s');
  });
});

describe('timeout messages have no decimal point', () => {
  it('a readiness timeout under a second, or of part-seconds, says whole ms (not "0 s" or "2 s")', async () => {
    for (const timeoutMs of [50, 1500]) {
      const backend = new FakeBackend();
      const ctx = fakeContext(backend);
      await createVm({ name: 'web' }, ctx);
      const error = await rejection(waitForVmReady('web', { strategies: ready.command(['false']), timeoutMs }, ctx));
      expect(error.code).toBe('TIMEOUT');
      const firstLine = error.message.split('\n')[0] ?? '';
      expect(firstLine).toMatch(new RegExp(`^VM web was not ready after ${timeoutMs} ms `));
      expect(firstLine).not.toMatch(/\d\.\d/);
    }
  });

  it("create's ready line too", async () => {
    const vm = { name: 'web', backend: 'qemu', state: 'running', image: 'tiny', arch: 'x86_64', cpus: 1, memory: 256 };
    expect(formatCreated({ ...vm, ports: [], labels: {} } as never, false, 12_345.678)).not.toMatch(/\d\.\d/);
  });
});
