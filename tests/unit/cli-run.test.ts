/** `localvm run`'s argument parsing and where collected files land on the host. */
import { describe, expect, it } from 'vitest';
import { localTarget, parseCollectArg, parseFileArg } from '../../src/cli/commands/run.js';
import { codeOfSync } from '../fixtures/rejection.js';

describe('localvm run arguments', () => {
  it('splits --file LOCAL:GUEST at the guest path, so a local path may hold ":"', () => {
    expect(parseFileArg('./a:b.py:/job/main.py')).toEqual({ local: './a:b.py', guest: '/job/main.py' });
    expect(codeOfSync(() => parseFileArg('main.py'))).toBe('VALIDATION');
    expect(codeOfSync(() => parseFileArg(':/job/x'))).toBe('VALIDATION');
  });

  it('defaults --collect LOCAL to the last part of the guest path', () => {
    expect(parseCollectArg('/job/out.json')).toEqual({ guest: '/job/out.json', local: 'out.json' });
    expect(parseCollectArg('/job/out/:results')).toEqual({ guest: '/job/out/', local: 'results' });
    expect(codeOfSync(() => parseCollectArg('job/out.json'))).toBe('VALIDATION');
  });

  it('puts a collected directory’s files below LOCAL, and nothing outside it', () => {
    const c = { guest: '/job/out/', local: 'results' };
    expect(localTarget(c, '/job/out/a/b.txt')).toBe('results/a/b.txt');
    expect(localTarget(c, '/etc/passwd')).toBeUndefined();
    expect(localTarget(c, '/job/out/../../x')).toBeUndefined();
    expect(localTarget({ guest: '/job/o.json', local: 'o.json' }, '/job/o.json')).toBe('o.json');
  });
});
