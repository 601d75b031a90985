/** `create --ready-timeout` and the error of a create whose VM is kept (issue 10, defect 8). */
import { describe, expect, it } from 'vitest';
import { keptError } from '../../src/cli/commands/create.js';
import { exitCodeFor } from '../../src/cli/exitCodes.js';
import { formatError } from '../../src/cli/format.js';
import { parseDurationArg } from '../../src/cli/parse.js';
import { LocalVmError } from '../../src/errors.js';

describe('parseDurationArg', () => {
  it('reads milliseconds, seconds and minutes into whole milliseconds', () => {
    expect(
      ['500', '500ms', '30s', '1.1s', '0.05s', '2m', '1.5m'].map((v) => parseDurationArg('ready-timeout', v)),
    ).toEqual([500, 500, 30_000, 1100, 50, 120_000, 90_000]);
  });
  it('refuses what is not a duration of 1 ms to an hour, naming the flag', () => {
    for (const bad of ['', 'soon', '-5s', '1.5ms', '0', '0.0001s', '2h', '61m', '1e3', ' 5 s']) {
      let error: unknown;
      try {
        parseDurationArg('ready-timeout', bad);
      } catch (e) {
        error = e;
      }
      expect(error, bad).toBeInstanceOf(LocalVmError);
      expect((error as LocalVmError).code).toBe('VALIDATION');
      expect((error as LocalVmError).issues?.[0]?.property).toBe('ready-timeout');
    }
  });
});

describe('keptError', () => {
  const timeout = new LocalVmError(
    'TIMEOUT',
    'VM web was not ready after 50 ms (2 probes); last probe: x\nconsole tail:\nboot',
    {
      vm: 'web',
      details: { timeoutMs: 50, probes: 2 },
    },
  );

  it('keeps the code (exit 4), says the VM is kept and running, and how to look at it or delete it', () => {
    const e = keptError(timeout, 'web', 'running');
    expect(exitCodeFor(e)).toBe(4);
    expect(e.message.split('\n')[0]).toBe(
      'VM web was not ready after 50 ms (2 probes); last probe: x; web is kept and still running',
    );
    expect(e.message).toContain('console tail:\nboot');
    expect(formatError(e, false)).toContain(
      'hint: see what it is doing with `localvm console web`; remove it with `localvm delete web`',
    );
    expect(e.toJSON()).toMatchObject({
      code: 'TIMEOUT',
      vm: 'web',
      details: { left: 'running', timeoutMs: 50, probes: 2 },
    });
  });

  it('says so when the VM stopped instead', () => {
    const stopped = new LocalVmError('COMMAND_FAILED', 'VM web stopped while waiting for it to be ready (crashed)');
    expect(keptError(stopped, 'web', 'stopped').message).toBe(
      'VM web stopped while waiting for it to be ready (crashed); web is kept (stopped)',
    );
  });
});
