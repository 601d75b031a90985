import { describe, expect, it } from 'vitest';
import { isLocalVmError, LocalVmError } from '../../src/errors.js';
import { EXIT_CODES, exitCodeFor } from '../../src/cli/exitCodes.js';
import {
  buildCreateSpec,
  guestExitCode,
  parseCpArgs,
  parseCpEndpoint,
  parseIntArg,
  parseJsonArgs,
  parseMemoryArg,
  parsePortArg,
} from '../../src/cli/parse.js';
import {
  formatCommand,
  formatError,
  formatTable,
  formatVmTable,
  shellQuote,
  vmToJson,
  errorToJson,
} from '../../src/cli/format.js';
import type { VmInfo } from '../../src/backend.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    if (isLocalVmError(error)) return error.code;
    throw error;
  }
  return undefined;
}

describe('exit codes', () => {
  it('maps each error code to its documented exit code', () => {
    const cases: [ConstructorParameters<typeof LocalVmError>[0], number][] = [
      ['VALIDATION', 2],
      ['NOT_FOUND', 3],
      ['TIMEOUT', 4],
      ['CONFLICT', 5],
      ['ALREADY_EXISTS', 5],
      ['TOOL_NOT_FOUND', 6],
      ['UNSUPPORTED', 7],
      ['HOST_FS', 8],
      ['COMMAND_FAILED', 1],
      ['INTERNAL', 1],
      ['TRANSIENT', 1],
    ];
    for (const [code, exit] of cases) expect(exitCodeFor(new LocalVmError(code, 'x')), code).toBe(exit);
  });
  it('maps foreign errors to the generic failure', () => {
    expect(exitCodeFor(new Error('boom'))).toBe(EXIT_CODES.FAILURE);
    expect(exitCodeFor('string')).toBe(1);
  });
});

describe('argument parsers', () => {
  it('parses ports with optional bind address and protocol', () => {
    expect(parsePortArg('8080:80')).toEqual({ host: 8080, guest: 80, protocol: 'tcp' });
    expect(parsePortArg('127.0.0.2:5353:53/udp')).toEqual({
      host: 5353,
      guest: 53,
      protocol: 'udp',
      bind: '127.0.0.2',
    });
    for (const bad of ['8080', '80:80:80', 'a:b', '8080:80/sctp', '-1:80', '']) {
      expect(
        codeOf(() => parsePortArg(bad)),
        bad,
      ).toBe('VALIDATION');
    }
  });
  it('parses memory as MiB or a size with a unit', () => {
    expect(parseMemoryArg('512')).toBe(512);
    expect(parseMemoryArg('2G')).toBe(2048);
    expect(parseMemoryArg('256M')).toBe(256);
    expect(parseMemoryArg('0')).toBe(0); // the schema rejects 0, with the property name
    for (const bad of ['lots', '1.5G', '-5', '100K'])
      expect(
        codeOf(() => parseMemoryArg(bad)),
        bad,
      ).toBe('VALIDATION');
  });
  it('parses whole numbers only', () => {
    expect(parseIntArg('cpus', '2')).toBe(2);
    for (const bad of ['2.5', '-1', '1e3', 'two', ''])
      expect(
        codeOf(() => parseIntArg('cpus', bad)),
        bad,
      ).toBe('VALIDATION');
  });
  it('builds a create spec from flags, leaving validation to the schema', () => {
    expect(buildCreateSpec('web', { memory: '1G', cpus: '2', port: ['8080:80'], image: 'tiny' }, 'qemu')).toEqual({
      name: 'web',
      backend: 'qemu',
      image: 'tiny',
      memory: 1024,
      cpus: 2,
      ports: [{ host: 8080, guest: 80, protocol: 'tcp' }],
    });
    expect(buildCreateSpec('$(reboot)', {}, undefined)).toEqual({ name: '$(reboot)' });
  });
  it('parses JSON object arguments for qmp', () => {
    expect(parseJsonArgs(undefined)).toBeUndefined();
    expect(parseJsonArgs('{"a":1}')).toEqual({ a: 1 });
    for (const bad of ['[1]', '1', 'null', '{bad'])
      expect(
        codeOf(() => parseJsonArgs(bad)),
        bad,
      ).toBe('VALIDATION');
  });
  it('maps guest exits and signals like a shell', () => {
    expect(guestExitCode({ exitCode: 0 })).toBe(0);
    expect(guestExitCode({ exitCode: 42 })).toBe(42);
    expect(guestExitCode({ exitCode: -1, signal: 9 })).toBe(137);
    expect(guestExitCode({ exitCode: -1 })).toBe(1);
  });
});

describe('cp NAME:/path syntax', () => {
  it('tells guest endpoints from host paths', () => {
    expect(parseCpEndpoint('vm1:/tmp/x')).toEqual({ kind: 'guest', vm: 'vm1', path: '/tmp/x' });
    expect(parseCpEndpoint('/tmp/x')).toEqual({ kind: 'host', path: '/tmp/x' });
    expect(parseCpEndpoint('./vm1:/x')).toEqual({ kind: 'host', path: './vm1:/x' });
    expect(parseCpEndpoint('rel/a:b')).toEqual({ kind: 'host', path: 'rel/a:b' });
    expect(codeOf(() => parseCpEndpoint('vm1:relative'))).toBe('VALIDATION');
    expect(codeOf(() => parseCpEndpoint('Bad_Name:/x'))).toBe('VALIDATION');
  });
  it('plans copies in both directions and refuses host-host and guest-guest', () => {
    expect(parseCpArgs('./a.txt', 'vm1:/tmp/')).toEqual({
      direction: 'in',
      vm: 'vm1',
      hostPath: './a.txt',
      guestPath: '/tmp/a.txt',
    });
    expect(parseCpArgs('vm1:/etc/hostname', 'out.txt')).toEqual({
      direction: 'out',
      vm: 'vm1',
      hostPath: 'out.txt',
      guestPath: '/etc/hostname',
    });
    expect(codeOf(() => parseCpArgs('a', 'b'))).toBe('VALIDATION');
    expect(codeOf(() => parseCpArgs('vm1:/a', 'vm2:/b'))).toBe('VALIDATION');
    expect(codeOf(() => parseCpArgs('vm1:/tmp/', 'x'))).toBe('VALIDATION');
  });
});

const vm = (over: Partial<VmInfo> = {}): VmInfo => ({
  name: 'alpha',
  backend: 'qemu',
  state: 'running',
  ports: [{ host: 8080, guest: 80, protocol: 'tcp', bind: '127.0.0.1' }],
  image: 'tiny',
  arch: 'x86_64',
  cpus: 1,
  memory: 256,
  labels: {},
  ...over,
});

describe('formatting', () => {
  it('renders aligned tables', () => {
    expect(
      formatTable(
        ['A', 'BB'],
        [
          ['xxx', 'y'],
          ['z', 'w'],
        ],
      ),
    ).toBe('A    BB\nxxx  y\nz    w\n');
    const table = formatVmTable([vm(), vm({ name: 'b', state: 'stopped', reason: 'crashed', ports: [] })]);
    expect(table.split('\n')[0]).toMatch(/^NAME\s+STATE\s+BACKEND\s+CPUS\s+MEMORY\s+IMAGE\s+PORTS$/);
    expect(table).toContain('8080->80/tcp');
    expect(table).toContain('stopped (crashed)');
    expect(formatVmTable([])).toBe('no VMs\n');
  });
  it('gives --json a stable shape with nulls for unset fields', () => {
    const json = vmToJson(vm());
    expect(Object.keys(json)).toEqual([
      'name',
      'backend',
      'state',
      'reason',
      'pid',
      'accel',
      'ip4',
      'image',
      'arch',
      'cpus',
      'memory',
      'ports',
      'labels',
      'fingerprint',
      'createdAt',
      'startedAt',
      'uptimeMs',
      'lastError',
      'ssh',
      'transport',
    ]);
    expect(json.pid).toBeNull();
  });
  it('quotes commands for display and as JSON argv', () => {
    expect(shellQuote('plain-arg_1.0')).toBe('plain-arg_1.0');
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
    expect(shellQuote('')).toBe("''");
    expect(formatCommand({ file: 'qemu', args: ['-append', 'a b'] }, false)).toBe("qemu -append 'a b'");
    expect(formatCommand({ file: 'qemu', args: ['-append', 'a b'] }, true)).toBe('["qemu","-append","a b"]');
  });
  it('prints errors with code and hint, stack only when verbose', () => {
    const e = new LocalVmError('NOT_FOUND', 'no VM named x', { hint: 'localvm list' });
    expect(formatError(e, false)).toBe('error [NOT_FOUND]: no VM named x\nhint: localvm list\n');
    expect(formatError(e, true)).toContain('    at ');
    expect(formatError(new Error('oops'), false)).toMatch(/^error \[INTERNAL\]: oops\n/);
    expect(JSON.parse(errorToJson(e))).toEqual({
      error: { code: 'NOT_FOUND', message: 'no VM named x', hint: 'localvm list' },
    });
  });
});

describe('progress', () => {
  it('prints plain start and end lines when not a terminal', async () => {
    const { startProgress } = await import('../../src/cli/progress.js');
    let text = '';
    let t = 0;
    const p = startProgress('waiting for vm', { write: (s) => (text += s) }, false, () => t);
    t = 2500;
    p.done('ready');
    expect(text).toBe('waiting for vm...\nwaiting for vm: ready (2.5 s)\n');
  });
  it('redraws one line with a spinner on a terminal and ends it with a newline', async () => {
    const { startProgress } = await import('../../src/cli/progress.js');
    let text = '';
    const p = startProgress('booting', { write: (s) => (text += s) }, true, () => 0);
    p.fail('TIMEOUT');
    expect(text.startsWith('\r\x1b[2K')).toBe(true);
    expect(text.endsWith('✗ booting: TIMEOUT (0.0 s)\n')).toBe(true);
    expect(text.split('\n')).toHaveLength(2);
  });
});
