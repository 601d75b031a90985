import { describe, expect, it } from 'vitest';
import {
  ERROR_CODES,
  isLocalVmError,
  isTransient,
  LocalVmError,
  tail,
  TRANSIENT_CODES,
  validationError,
  type ErrorCode,
} from '../../src/errors.js';

describe('isLocalVmError', () => {
  it('recognises an error thrown by a second copy of the module', async () => {
    // A cache-busting query loads src/errors.ts again: a distinct class, as when the Pulumi
    // host and the user's program each load their own copy of the package.
    const copyUrl = new URL('../../src/errors.ts?copy', import.meta.url).href;
    const copy = (await import(/* @vite-ignore */ copyUrl)) as typeof import('../../src/errors.js');
    expect(copy.LocalVmError).not.toBe(LocalVmError);

    const foreign = new copy.LocalVmError('NOT_FOUND', 'no such vm', { vm: 'x' });
    expect(foreign instanceof LocalVmError).toBe(false);
    expect(isLocalVmError(foreign)).toBe(true);
    expect(isLocalVmError(foreign, 'NOT_FOUND')).toBe(true);
    expect(isLocalVmError(foreign, 'CONFLICT')).toBe(false);
    expect(copy.isLocalVmError(new LocalVmError('TIMEOUT', 't'))).toBe(true);
    expect(isTransient(new copy.LocalVmError('TRANSIENT', 'again'))).toBe(true);
  });

  it('recognises any object carrying the global brand', () => {
    const branded = { code: 'CONFLICT', message: 'm', [Symbol.for('localvm.LocalVmError')]: true };
    expect(isLocalVmError(branded, 'CONFLICT')).toBe(true);
  });

  it.each([
    ['a plain Error', new Error('x')],
    ['an Error with a code', Object.assign(new Error('x'), { code: 'VALIDATION' })],
    ['a look-alike object', { name: 'LocalVmError', code: 'VALIDATION', message: 'x' }],
    ['a local symbol of the same name', { code: 'VALIDATION', [Symbol('localvm.LocalVmError')]: true }],
    ['a brand that is not true', { code: 'VALIDATION', [Symbol.for('localvm.LocalVmError')]: 1 }],
    ['null', null],
    ['a string', 'LocalVmError'],
    ['undefined', undefined],
  ])('rejects %s', (_what, value) => {
    expect(isLocalVmError(value)).toBe(false);
  });

  it('keeps the brand off enumerable properties and JSON', () => {
    const e = new LocalVmError('INTERNAL', 'bug');
    expect(Object.keys(e)).not.toContain(Symbol.for('localvm.LocalVmError'));
    expect(JSON.stringify(e)).not.toContain('localvm.LocalVmError');
  });
});

describe('transient classification', () => {
  it.each(ERROR_CODES.map((code) => [code, code === 'TRANSIENT' || code === 'TIMEOUT'] as [ErrorCode, boolean]))(
    '%s is transient: %s',
    (code, expected) => {
      const e = new LocalVmError(code, 'm');
      expect(e.transient).toBe(expected);
      expect(isTransient(e)).toBe(expected);
      expect(TRANSIENT_CODES.has(code)).toBe(expected);
    },
  );

  it('lets the thrower override the classification both ways', () => {
    expect(isTransient(new LocalVmError('COMMAND_FAILED', 'machine did not start in 30s', { transient: true }))).toBe(
      true,
    );
    expect(isTransient(new LocalVmError('TIMEOUT', 'gave up for good', { transient: false }))).toBe(false);
  });

  it('never calls foreign errors transient', () => {
    expect(isTransient(Object.assign(new Error('ETIMEDOUT'), { transient: true }))).toBe(false);
    expect(isTransient(undefined)).toBe(false);
  });
});

describe('LocalVmError', () => {
  it('carries code, fields and cause', () => {
    const cause = new Error('root');
    const e = new LocalVmError('COMMAND_FAILED', 'qemu-img failed', {
      cause,
      hint: 'check the path',
      vm: 'vm1',
      command: { file: 'qemu-img', args: ['info', '/x'], exitCode: 1, stderrTail: 'no such file' },
    });
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('LocalVmError');
    expect(e.cause).toBe(cause);
    expect(e.stack).toContain('qemu-img failed');
    expect(e).toMatchObject({ code: 'COMMAND_FAILED', hint: 'check the path', vm: 'vm1' });
  });

  it('toJSON includes only the fields that are set', () => {
    expect(new LocalVmError('NOT_FOUND', 'gone').toJSON()).toEqual({ code: 'NOT_FOUND', message: 'gone' });
    const full = new LocalVmError('COMMAND_FAILED', 'failed', {
      hint: 'h',
      vm: 'v',
      issues: [{ property: 'a', reason: 'b' }],
      command: { file: 'f', args: ['a'], exitCode: 2 },
      details: { console: 'tail' },
      cause: new Error('not serialised'),
    });
    expect(full.toJSON()).toEqual({
      code: 'COMMAND_FAILED',
      message: 'failed',
      hint: 'h',
      vm: 'v',
      issues: [{ property: 'a', reason: 'b' }],
      command: { file: 'f', args: ['a'], exitCode: 2 },
      details: { console: 'tail' },
    });
    expect(JSON.parse(JSON.stringify(full))).toEqual(full.toJSON());
  });
});

describe('validationError', () => {
  it('lists every issue with its property, and marks the root', () => {
    const e = validationError(
      [
        { property: 'ports.0.host', reason: 'must be 1-65535' },
        { property: '', reason: 'unknown key' },
      ],
      'VM spec',
    );
    expect(e.code).toBe('VALIDATION');
    expect(e.transient).toBe(false);
    expect(e.issues).toHaveLength(2);
    expect(e.message).toBe('invalid VM spec: ports.0.host: must be 1-65535; (root): unknown key');
  });
});

describe('tail', () => {
  it('keeps the last lines and drops trailing whitespace', () => {
    const text = Array.from({ length: 30 }, (_, i) => `line ${i}`).join('\n') + '\n\n';
    expect(tail(text, 3)).toBe('line 27\nline 28\nline 29');
  });

  it('caps the characters', () => {
    expect(tail('x'.repeat(10_000), 20, 100)).toHaveLength(100);
  });

  it('returns an empty string for nothing', () => {
    expect(tail(undefined)).toBe('');
    expect(tail('')).toBe('');
  });
});
