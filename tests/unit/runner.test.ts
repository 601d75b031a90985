import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createExecaRunner } from '../../src/runner.js';
import { deadline } from '../../src/time/deadline.js';
import { rejection } from '../fixtures/rejection.js';

// Real processes: the runner is the one place that launches them, and what is tested here
// is that an abort reaches the process, which no fake can show.
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'localvm-runner-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('execa runner', () => {
  it('kills the process when the signal aborts and rejects with the abort reason', async () => {
    const pidFile = join(dir, 'pid');
    const d = deadline(300, { what: 'sleep in the test' });
    const started = performance.now();
    const error = await rejection(
      createExecaRunner().run(
        { file: '/bin/sh', args: ['-c', 'echo $$ > "$1"; exec sleep 30', 'sh', pidFile] },
        { signal: d.signal },
      ),
    );
    expect(error.code).toBe('TIMEOUT');
    expect(error.message).toBe('sleep in the test took longer than 300 ms');
    expect(performance.now() - started).toBeLessThan(5_000);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    expect(alive(pid)).toBe(false);
  });

  it('an already-aborted signal runs nothing', async () => {
    const controller = new AbortController();
    controller.abort(new Error('no'));
    const pidFile = join(dir, 'pid');
    await expect(
      createExecaRunner().run(
        { file: '/bin/sh', args: ['-c', 'echo $$ > "$1"', 'sh', pidFile] },
        { signal: controller.signal },
      ),
    ).rejects.toThrow('no');
    expect(() => readFileSync(pidFile)).toThrow();
  });

  it('timeoutMs still resolves with timedOut, the process killed', async () => {
    const r = await createExecaRunner().run({ file: 'sleep', args: ['30'] }, { timeoutMs: 100 });
    expect(r).toMatchObject({ timedOut: true, exitCode: -1 });
    expect(r.durationMs).toBeLessThan(5_000);
  });
});
