import { describe, expect, it } from 'vitest';
import { isLocalVmError, type ValidationIssue } from '../../src/errors.js';
import {
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
