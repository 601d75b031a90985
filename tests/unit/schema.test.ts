import { describe, expect, it } from 'vitest';
import { isLocalVmError, type ValidationIssue } from '../../src/errors.js';
import {
  parseExec,
  parseExecOptions,
  parseShell,
  parseSize,
  parseVmName,
  parseVmSpec,
  specFingerprint,
  vmSpecSchema,
  type VmSpecInput,
} from '../../src/schema.js';

/** The issues of the VALIDATION error `fn` throws (fails the test if it throws anything else). */
function issuesOf(fn: () => unknown): ValidationIssue[] {
  try {
    fn();
  } catch (e) {
    expect(isLocalVmError(e, 'VALIDATION')).toBe(true);
    return (e as { issues: ValidationIssue[] }).issues;
  }
  throw new Error('expected a VALIDATION error');
}

const properties = (fn: () => unknown): string[] => issuesOf(fn).map((i) => i.property);

describe('parseVmSpec', () => {
  it('applies every default to a minimal spec', () => {
    expect(parseVmSpec({ name: 'web-1' })).toEqual({
      name: 'web-1',
      backend: 'auto',
      image: 'tiny',
      accel: 'auto',
      cpus: 1,
      memory: 256,
      disks: [],
      ports: [],
      isolated: false,
      labels: {},
      readiness: [],
      timeouts: { createMs: 120_000, readyMs: 120_000, stopMs: 15_000, execMs: 60_000 },
    });
  });

  it('normalises a full spec: arch aliases, sizes, port defaults', () => {
    const spec = parseVmSpec({
      name: 'db',
      backend: 'qemu',
      image: '/images/debian.qcow2',
      arch: 'arm64',
      accel: 'tcg',
      cpus: 2,
      memory: 1024,
      diskSize: '10G',
      disks: [{ name: 'data', size: '512M' }],
      user: 'dev',
      ports: [{ host: 5432, guest: 5432 }],
      isolated: true,
      labels: { 'team/owner': 'db' },
      readiness: [{ argv: ['pg_isready'] }],
      timeouts: { readyMs: 5_000 },
    } satisfies VmSpecInput);
    expect(spec.arch).toBe('aarch64');
    expect(spec.diskSize).toBe(10 * 1024 ** 3);
    expect(spec.disks).toEqual([{ name: 'data', size: 512 * 1024 ** 2 }]);
    expect(spec.ports).toEqual([{ host: 5432, guest: 5432, protocol: 'tcp', bind: '127.0.0.1' }]);
    expect(spec.timeouts).toEqual({ createMs: 120_000, readyMs: 5_000, stopMs: 15_000, execMs: 60_000 });
  });

  it.each([
    ['command substitution', '$(reboot)'],
    ['command separator', 'a;rm -rf /'],
    ['path traversal', '../etc'],
    ['a flag', '-rf'],
    ['64 characters', 'a'.repeat(64)],
    ['unicode', 'vм'],
    ['empty', ''],
    ['upper case', 'A'],
    ['a space', 'a b'],
    ['a slash', 'a/b'],
    ['a number', 42],
  ])('rejects a name with %s', (_what, name) => {
    expect(properties(() => parseVmSpec({ name }))).toEqual(['name']);
    expect(properties(() => parseVmName(name))).toEqual(['']);
  });

  it('accepts names at the limits', () => {
    expect(parseVmName('a'.repeat(63))).toHaveLength(63);
    expect(parseVmName('0')).toBe('0');
    expect(parseVmName('a-')).toBe('a-');
  });

  it.each([
    [{ memory: 0 }, 'memory'],
    [{ memory: 63 }, 'memory'],
    [{ memory: 262145 }, 'memory'],
    [{ memory: 256.5 }, 'memory'],
    [{ cpus: 0 }, 'cpus'],
    [{ cpus: 65 }, 'cpus'],
    [{ ports: [{ host: 70000, guest: 22 }] }, 'ports.0.host'],
    [{ ports: [{ host: 0, guest: 22 }] }, 'ports.0.host'],
    [{ ports: [{ host: 2222, guest: 0 }] }, 'ports.0.guest'],
    [{ ports: [{ host: 2222, guest: 22, bind: 'localhost' }] }, 'ports.0.bind'],
    [{ ports: [{ host: 2222, guest: 22, bind: '::1' }] }, 'ports.0.bind'],
    [{ ports: [{ host: 2222, guest: 22, bind: '127.0.0.1,restrict=off' }] }, 'ports.0.bind'],
    [{ ports: [{ host: 2222, guest: 22, protocol: 'sctp' }] }, 'ports.0.protocol'],
    [
      {
        ports: [
          { host: 8080, guest: 80 },
          { host: 2222, guest: 22 },
          { host: 8080, guest: 8080 },
        ],
      },
      'ports.2.host',
    ],
    [{ diskSize: 'abc' }, 'diskSize'],
    [{ diskSize: 0 }, 'diskSize'],
    [{ disks: [{ name: 'Data', size: '1G' }] }, 'disks.0.name'],
    [
      {
        disks: [
          { name: 'd', size: '1G' },
          { name: 'd', size: '2G' },
        ],
      },
      'disks.1.name',
    ],
    [{ image: '-drive' }, 'image'],
    [{ image: '/a,b.qcow2' }, 'image'],
    [{ kernel: 'vmlinux' }, 'kernel'],
    [{ initrd: '/boot/initrd' }, 'initrd'],
    [{ arch: 'riscv64' }, 'arch'],
    [{ accel: 'whpx' }, 'accel'],
    [{ user: 'Root' }, 'user'],
    [{ unknownKey: 1 }, ''],
  ])('rejects %j at %s', (patch, property) => {
    expect(properties(() => parseVmSpec({ name: 'vm', ...patch }))).toContain(property);
  });

  it('caps labels like Kubernetes does: at most 64, keys of 1-63 characters, values up to 256', () => {
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']));
    expect(properties(() => parseVmSpec({ name: 'vm', labels: many }))).toEqual(['labels']);
    const most = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, 'v'.repeat(256)]));
    expect(Object.keys(parseVmSpec({ name: 'vm', labels: most }).labels)).toHaveLength(64);
    expect(properties(() => parseVmSpec({ name: 'vm', labels: { ['k'.repeat(64)]: 'v' } }))).toEqual([
      `labels.${'k'.repeat(64)}`,
    ]);
    expect(properties(() => parseVmSpec({ name: 'vm', labels: { k: 'v'.repeat(257) } }))).toEqual(['labels.k']);
  });

  it('says why a label key is refused (not just "invalid key")', () => {
    const [issue] = issuesOf(() => parseVmSpec({ name: 'vm', labels: { 'a b': 'c' } }));
    expect(issue).toEqual({ property: 'labels.a b', reason: expect.stringContaining('label keys') });
  });

  it('allows the same host port on different protocols', () => {
    const spec = parseVmSpec({
      name: 'dns',
      ports: [
        { host: 5353, guest: 53, protocol: 'tcp' },
        { host: 5353, guest: 53, protocol: 'udp' },
      ],
    });
    expect(spec.ports).toHaveLength(2);
  });

  it('lists every problem at once', () => {
    const props = properties(() => parseVmSpec({ name: 'BAD', memory: 1, cpus: 0 }));
    expect(props).toEqual(expect.arrayContaining(['name', 'memory', 'cpus']));
  });

  it('exposes the schema for callers that want safeParse', () => {
    expect(vmSpecSchema.safeParse({ name: 'ok' }).success).toBe(true);
    expect(vmSpecSchema.safeParse({ name: 'no!' }).success).toBe(false);
  });
});

describe('parseSize', () => {
  it.each([
    ['10G', 10 * 1024 ** 3],
    ['512M', 512 * 1024 ** 2],
    ['512m', 512 * 1024 ** 2],
    ['1GiB', 1024 ** 3],
    ['4K', 4096],
    ['2T', 2 * 1024 ** 4],
    ['1048576', 1048576],
    [' 8 G ', 8 * 1024 ** 3],
    [1048576, 1048576],
  ])('%j is %d bytes', (input, bytes) => {
    expect(parseSize(input)).toBe(bytes);
  });

  it.each([['abc'], [''], ['0'], ['-1G'], ['1.5G'], ['10X'], [0], [-5], [1.5], [Number.MAX_SAFE_INTEGER + 2]])(
    'rejects %j',
    (input) => {
      expect(parseSize(input)).toBeUndefined();
    },
  );
});

describe('specFingerprint', () => {
  const base = parseVmSpec({ name: 'vm', ports: [{ host: 1, guest: 2 }] });

  it('ignores labels, timeouts and port order', () => {
    const twoPorts = (ports: VmSpecInput['ports']) => parseVmSpec({ name: 'vm', ports });
    expect(specFingerprint(parseVmSpec({ name: 'vm', ports: [{ host: 1, guest: 2 }], labels: { a: 'b' } }))).toBe(
      specFingerprint(base),
    );
    expect(
      specFingerprint(
        twoPorts([
          { host: 1, guest: 2 },
          { host: 3, guest: 4 },
        ]),
      ),
    ).toBe(
      specFingerprint(
        twoPorts([
          { host: 3, guest: 4 },
          { host: 1, guest: 2 },
        ]),
      ),
    );
  });

  it('changes when the machine changes', () => {
    expect(specFingerprint(parseVmSpec({ name: 'vm', ports: [{ host: 1, guest: 2 }], memory: 512 }))).not.toBe(
      specFingerprint(base),
    );
    expect(specFingerprint(parseVmSpec({ name: 'vm', ports: [{ host: 1, guest: 2 }], userData: 'x' }))).not.toBe(
      specFingerprint(base),
    );
  });
});

describe('parseExecOptions', () => {
  it('passes valid options through unchanged', () => {
    const stdin = new Uint8Array([0, 1, 2]);
    const options = { env: { A: '1', _b2: '' }, cwd: '/srv', user: 'www-data', timeoutMs: 5_000, stdin };
    expect(parseExecOptions(options)).toEqual(options);
    expect(parseExecOptions(options).stdin).toBe(stdin);
    expect(parseExecOptions(undefined)).toEqual({});
    expect(parseExecOptions({ stdin: 'text', user: 'root', timeoutMs: 86_400_000 })).toEqual({
      stdin: 'text',
      user: 'root',
      timeoutMs: 86_400_000,
    });
  });

  it.each([
    // `env A=B=c` would set A to "B=c"; `env -i` would clear the environment.
    [{ env: { 'A=B': 'c' } }, 'env.A=B'],
    [{ env: { '-i': 'x' } }, 'env.-i'],
    [{ env: { '1A': 'x' } }, 'env.1A'],
    [{ env: { '': 'x' } }, 'env.'],
    [{ env: { 'A B': 'x' } }, 'env.A B'],
    [{ env: { A: 'x\0y' } }, 'env.A'],
    [{ env: { A: 1 } }, 'env.A'],
    [{ env: ['A=1'] }, 'env'],
    // `su -c ...` would take the user as an option.
    [{ user: '-c' }, 'user'],
    [{ user: '' }, 'user'],
    [{ user: 'a b' }, 'user'],
    [{ user: 'root;reboot' }, 'user'],
    [{ user: 'x'.repeat(33) }, 'user'],
    [{ user: 0 }, 'user'],
    [{ timeoutMs: -1 }, 'timeoutMs'],
    [{ timeoutMs: 0 }, 'timeoutMs'],
    [{ timeoutMs: 1.5 }, 'timeoutMs'],
    [{ timeoutMs: Number.NaN }, 'timeoutMs'],
    [{ timeoutMs: Infinity }, 'timeoutMs'],
    [{ timeoutMs: 86_400_001 }, 'timeoutMs'],
    [{ timeoutMs: '1000' }, 'timeoutMs'],
    [{ cwd: 'tmp' }, 'cwd'],
    [{ cwd: '' }, 'cwd'],
    [{ cwd: '/tmp\0' }, 'cwd'],
    [{ stdin: 42 }, 'stdin'],
  ])('rejects %j at %s', (options, property) => {
    expect(properties(() => parseExecOptions(options))).toEqual([property]);
  });

  it('rejects options that are not an object', () => {
    expect(properties(() => parseExecOptions('-i'))).toEqual(['']);
  });
});

describe('parseExec and parseShell', () => {
  it('returns argv and options', () => {
    expect(parseExec(['ls', '-l', ''], { cwd: '/' })).toEqual({ argv: ['ls', '-l', ''], options: { cwd: '/' } });
    expect(parseShell('echo $HOME', undefined)).toEqual({ script: 'echo $HOME', options: {} });
    // `/bin/sh -c ''` runs nothing and exits 0: harmless, and accepted as before.
    expect(parseShell('', {}).script).toBe('');
  });

  it.each([
    // From JavaScript a string would be spread into characters: `exec('ls')` ran a program `l`.
    ['ls', 'argv'],
    [[], 'argv'],
    [[''], 'argv.0'],
    [['ls', 1], 'argv.1'],
    [['ls', 'a\0b'], 'argv.1'],
    [undefined, 'argv'],
  ])('rejects argv %j at %s', (argv, property) => {
    expect(properties(() => parseExec(argv, {}))).toEqual([property]);
  });

  it('lists argv and option problems in one error', () => {
    expect(properties(() => parseExec([], { user: '-c', timeoutMs: -1 })).sort()).toEqual([
      'argv',
      'timeoutMs',
      'user',
    ]);
  });

  it.each([
    [42, 'script'],
    ['echo \0', 'script'],
  ])('rejects script %j at %s', (script, property) => {
    expect(properties(() => parseShell(script, {}))).toEqual([property]);
    expect(properties(() => parseShell('true', { env: { 'A=B': 'c' } }))).toEqual(['env.A=B']);
  });
});

describe('parse once', () => {
  it('a spec parseVmSpec returned is trusted as it is; a copy that only looks parsed is checked again', () => {
    const spec = parseVmSpec({ name: 'once', memory: 256 });
    expect(parseVmSpec(spec)).toBe(spec);
    const forged = { ...spec, memory: -1 };
    expect(() => parseVmSpec(forged)).toThrow(/memory/);
  });
});
