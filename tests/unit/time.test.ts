import { describe, expect, it } from 'vitest';
import { isLocalVmError, LocalVmError } from '../../src/errors.js';
import { deadline, wholeMs, withDeadline } from '../../src/time/deadline.js';
import { poll } from '../../src/time/poll.js';
import { fakeClock } from '../fixtures/fakeBackend.js';
import { manualClock } from '../fixtures/manualClock.js';
import { rejection } from '../fixtures/rejection.js';

describe('deadline', () => {
  it('aborts its signal with a TIMEOUT in whole milliseconds when the clock passes it', () => {
    const clock = manualClock();
    const d = deadline(7364.4730389999895, { what: 'guest-sync', clock });
    expect(d.signal.aborted).toBe(false);
    expect(d.remainingMs()).toBe(7364);
    clock.advance(7363);
    expect(d.signal.aborted).toBe(false);
    expect(d.remainingMs()).toBe(1);
    clock.advance(1);
    expect(d.signal.aborted).toBe(true);
    expect(d.timedOut()).toBe(true);
    expect(d.remainingMs()).toBe(0);
    const reason = d.signal.reason as LocalVmError;
    expect(isLocalVmError(reason, 'TIMEOUT')).toBe(true);
    expect(reason.message).toBe('guest-sync took longer than 7364 ms');
    expect(() => d.check()).toThrow(reason);
    expect(clock.pending()).toBe(0);
  });

  it('expires when asked on a clock without timers', () => {
    const clock = fakeClock();
    const d = deadline(100, { what: 'x', clock });
    expect(d.expired()).toBe(false);
    void clock.sleep(100);
    expect(d.signal.aborted).toBe(false);
    expect(d.expired()).toBe(true);
    expect(d.signal.aborted).toBe(true);
    expect((d.signal.reason as LocalVmError).code).toBe('TIMEOUT');
  });

  it('aborts with the reason of a parent that aborts first, and lets go of it on dispose', () => {
    const clock = manualClock();
    const outer = new AbortController();
    const d = deadline(1_000, { what: 'x', clock, parent: outer.signal });
    const why = new LocalVmError('CONFLICT', 'cancelled by the caller');
    outer.abort(why);
    expect(d.signal.reason).toBe(why);
    expect(d.timedOut()).toBe(false);
    expect(clock.pending()).toBe(0);

    const already = deadline(1_000, { what: 'y', clock, parent: outer.signal });
    expect(already.signal.reason).toBe(why);
  });

  it('dispose stops the timer: the signal never aborts afterwards', async () => {
    const clock = manualClock();
    const result = await withDeadline(50, { what: 'x', clock }, async (d) => {
      expect(clock.pending()).toBe(1);
      return d;
    });
    expect(clock.pending()).toBe(0);
    clock.advance(1_000);
    expect(result.signal.aborted).toBe(false);
  });

  it('a zero budget is expired at once', () => {
    const d = deadline(0, { what: 'x', clock: manualClock() });
    expect(d.timedOut()).toBe(true);
  });

  it('rounds to whole milliseconds', () => {
    expect([wholeMs(7364.4730389999895), wholeMs(0.4), wholeMs(-3)]).toEqual([7364, 0, 0]);
  });
});

describe('poll', () => {
  it('pauses short first, growing by the factor up to the cap, until the attempt gives a value', async () => {
    const clock = manualClock();
    let n = 0;
    const value = await poll(() => (++n < 7 ? undefined : 'ready'), {
      what: 'x',
      timeoutMs: 10_000,
      clock,
      initialMs: 20,
      factor: 1.5,
      maxMs: 60,
    });
    expect(value).toBe('ready');
    expect(clock.sleeps).toEqual([20, 30, 45, 60, 60, 60]);
    expect(clock.now()).toBe(275);
    expect(clock.pending()).toBe(0);
  });

  it('never pauses past the deadline, then throws its TIMEOUT', async () => {
    const clock = manualClock();
    const tries: number[] = [];
    const error = await rejection(
      poll(
        () => {
          tries.push(clock.now());
          return undefined;
        },
        { what: 'the port', timeoutMs: 100, clock, initialMs: 40, factor: 2, maxMs: 1_000 },
      ),
    );
    expect(error.code).toBe('TIMEOUT');
    expect(error.message).toBe('the port took longer than 100 ms');
    expect(clock.sleeps).toEqual([40, 60]);
    expect(tries).toEqual([0, 40]);
  });

  it('throws what onTimeout builds, and what an attempt throws', async () => {
    const clock = manualClock();
    const custom = new LocalVmError('TIMEOUT', 'not ready: last probe saw nothing');
    expect(await rejection(poll(() => undefined, { what: 'x', timeoutMs: 10, clock, onTimeout: () => custom }))).toBe(
      custom,
    );
    const stop = new LocalVmError('COMMAND_FAILED', 'VM stopped');
    const thrown = await rejection(
      poll(
        (n) => {
          if (n === 3) throw stop;
          return undefined;
        },
        { what: 'x', timeoutMs: 10_000, clock },
      ),
    );
    expect(thrown).toBe(stop);
  });

  it('stops at once, with its reason, when the signal aborts during a pause', async () => {
    const clock = manualClock();
    const outer = deadline(25, { what: 'the caller', clock });
    const error = await rejection(
      poll(() => undefined, { what: 'x', timeoutMs: 10_000, clock, signal: outer.signal, initialMs: 10 }),
    );
    expect(error.message).toBe('the caller took longer than 25 ms');
    expect(clock.now()).toBe(25);
  });

  it('works with a caller-owned deadline and a fake clock that ignores signals', async () => {
    const clock = fakeClock();
    const d = deadline(50, { what: 'y', clock });
    const error = await rejection(poll(() => undefined, { what: 'x', deadline: d, initialMs: 20 }));
    expect(error.message).toBe('y took longer than 50 ms');
    expect(clock.sleeps).toEqual([20, 30]);
  });
});
