import { describe, expect, it } from 'vitest';
import { classifyOrbctlFailure, orbctlRunFailure } from '../../src/backends/orbstack/classify.js';
import type { ErrorCode } from '../../src/errors.js';
import type { RunResult } from '../../src/runner.js';

function result(stderr: string, o: Partial<RunResult> = {}): RunResult {
  return {
    file: 'orbctl',
    args: ['create', 'ubuntu', 'm1'],
    exitCode: 1,
    stdout: '',
    stderr,
    timedOut: false,
    durationMs: 10,
    ...o,
  };
}

const TABLE: Array<[string, string, ErrorCode, boolean]> = [
  [
    'missing IP address',
    "[-32098] create 'm1': setup: machine didn't start in 30s (missing IP address)\n",
    'TRANSIENT',
    true,
  ],
  ['did not start, other wording', "create 'm1': machine did not start in 60s\n", 'TRANSIENT', true],
  [
    'daemon down',
    'OrbStack is not running: dial unix /Users/a/.orbstack/run/vmcontrol.sock: connect: connection refused\n',
    'TRANSIENT',
    true,
  ],
  ['agent not running', 'agent not running\n', 'TRANSIENT', true],
  [
    'image download refused',
    "[-32098] create 'm1': make rootfs: fetch index: dial tcp 45.45.148.8:443: connect: connection refused\n",
    'TRANSIENT',
    true,
  ],
  ['already exists', "[-32098] create 'm1': machine already exists: 'm1'\n", 'ALREADY_EXISTS', false],
  ['already exists, setup wording', "create 'm1': setup: machine already exists\n", 'ALREADY_EXISTS', false],
  ['machine not found', 'machine not found: m1\n', 'NOT_FOUND', false],
  ['does not exist', "machine 'm1' does not exist\n", 'NOT_FOUND', false],
  ['unknown distro', 'unknown distro: nosuch\n', 'VALIDATION', false],
  ['unknown version', "unknown version '99' for distro 'ubuntu'\n", 'VALIDATION', false],
  ['invalid machine name', "invalid machine name: 'a b'\n", 'VALIDATION', false],
  ['invalid arch', 'invalid arch: sparc\n', 'VALIDATION', false],
  // Generic words alone never make an error retriable.
  [
    'generic "machine" + "setup"',
    "[-32098] create 'm1': setup: machine setup failed: exit status 2\n",
    'COMMAND_FAILED',
    false,
  ],
  ['unknown flag', 'unknown flag: --cpus\n', 'COMMAND_FAILED', false],
  ['empty stderr', '', 'COMMAND_FAILED', false],
];

describe('classifyOrbctlFailure', () => {
  it.each(TABLE)('%s', (_label, stderr, code, transient) => {
    const error = classifyOrbctlFailure(result(stderr));
    expect(error.code).toBe(code);
    expect(error.transient).toBe(transient);
    expect(error.command?.args).toEqual(['create', 'ubuntu', 'm1']);
    expect(error.command?.exitCode).toBe(1);
    if (stderr) expect(error.message).toContain(stderr.trim().split('\n')[0]);
  });

  it('a timeout is TIMEOUT and transient whatever stderr says', () => {
    const error = classifyOrbctlFailure(result('machine already exists', { timedOut: true, exitCode: -1 }));
    expect(error.code).toBe('TIMEOUT');
    expect(error.transient).toBe(true);
  });

  it('reads the message from stdout too (some versions print errors there)', () => {
    expect(classifyOrbctlFailure(result('', { stdout: 'machine not found: m1\n' })).code).toBe('NOT_FOUND');
  });
});

describe('orbctlRunFailure', () => {
  const run = (stderr: string, exitCode = 1) =>
    result(stderr, { args: ['run', '-m', 'm1', 'sh', '-c', 'x'], exitCode });

  it.each<[string, string, number, ErrorCode | undefined]>([
    ['success', '', 0, undefined],
    ['guest command failed', 'boom\n', 1, undefined],
    ['guest "not found"', 'sh: 1: foo: not found\n', 127, undefined],
    ['guest mentions connection refused', 'curl: (7) Failed to connect: Connection refused\n', 7, undefined],
    ['another machine not found', 'machine not found: other\n', 1, undefined],
    ['this machine not found', 'machine not found: m1\n', 1, 'NOT_FOUND'],
    [
      'daemon down',
      'OrbStack is not running: dial unix x/vmcontrol.sock: connect: connection refused\n',
      1,
      'TRANSIENT',
    ],
  ])('%s', (_label, stderr, exitCode, code) => {
    expect(orbctlRunFailure(run(stderr, exitCode), 'm1')?.code).toBe(code);
  });

  it('a timeout is TIMEOUT', () => {
    expect(orbctlRunFailure(result('', { timedOut: true, exitCode: -1 }), 'm1')?.code).toBe('TIMEOUT');
  });
});
