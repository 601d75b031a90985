import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isLocalVmError } from '../../src/errors.js';
import { parseOrbctlInfo, parseOrbctlList, parseQemuImgInfo } from '../../src/parsers.js';

const captured = (name: string): string =>
  readFileSync(new URL(`../fixtures/captured/${name}.stdout`, import.meta.url), 'utf8');

function protocolFailure(fn: () => unknown): { message: string } {
  try {
    fn();
  } catch (e) {
    expect(isLocalVmError(e, 'PROTOCOL')).toBe(true);
    return { message: (e as Error).message };
  }
  throw new Error('expected a PROTOCOL error');
}

describe('parseOrbctlList', () => {
  it('parses running and stopped machines', () => {
    const machines = parseOrbctlList(captured('orbctl-list'));
    expect(machines).toEqual([
      {
        id: '01HQ8Z4N3K7YV2B5X9C6D1E0FG',
        name: 'lvtest-web',
        state: 'running',
        image: { distro: 'ubuntu', version: 'noble', arch: 'arm64' },
        config: { isolated: false, isolate_network: false, default_username: 'dev' },
      },
      {
        id: '01HQ8Z7R2M4WT6A8S3J5K9P1QH',
        name: 'lvtest-db',
        state: 'stopped',
        image: { distro: 'debian', version: 'bookworm', arch: 'amd64' },
        config: { isolated: true, isolate_network: true, default_username: 'postgres' },
      },
    ]);
  });

  it('treats [], null and empty output as no machines', () => {
    expect(parseOrbctlList(captured('orbctl-list-empty'))).toEqual([]);
    expect(parseOrbctlList('null\n')).toEqual([]);
    expect(parseOrbctlList('  \n')).toEqual([]);
  });

  it('tolerates fields added by newer versions and a missing config', () => {
    const [m] = parseOrbctlList(
      JSON.stringify([
        {
          id: 'x',
          name: 'a',
          state: 'running',
          image: { distro: 'alpine', version: 'edge', arch: 'arm64', variant: 'v' },
          extra: 1,
        },
      ]),
    );
    expect(m).toEqual({
      id: 'x',
      name: 'a',
      state: 'running',
      image: { distro: 'alpine', version: 'edge', arch: 'arm64' },
      config: {},
    });
  });

  it.each([
    ['the table format', 'NAME   STATE    DISTRO  VERSION  ARCH\nweb    running  ubuntu  noble    arm64\n'],
    ['an object instead of an array', '{"name":"web"}'],
    ['a record without state', '[{"id":"x","name":"web","image":{"distro":"u","version":"n","arch":"a"}}]'],
    ['a record without name', '[{"id":"x","state":"running"}]'],
    ['an image that is not an object', '[{"id":"x","name":"web","state":"running","image":"ubuntu:noble"}]'],
    ['a non-string state', '[{"id":"x","name":"web","state":1,"image":{"distro":"u","version":"n","arch":"a"}}]'],
    ['truncated JSON', '[{"id":"x","name":"web"'],
  ])('throws PROTOCOL on %s, quoting the input', (_name, stdout) => {
    const { message } = protocolFailure(() => parseOrbctlList(stdout));
    expect(message).toContain(stdout.replace(/\s+/g, ' ').trim().slice(0, 20));
  });

  it('tolerates records without the fields it does not use (image, image parts, id)', () => {
    const machines = parseOrbctlList(
      JSON.stringify([
        { id: 'x', name: 'a', state: 'stopped' },
        { name: 'b', state: 'running', image: { distro: 'alpine' } },
      ]),
    );
    expect(machines).toEqual([
      { id: 'x', name: 'a', state: 'stopped', image: { distro: 'unknown', version: '', arch: 'unknown' }, config: {} },
      { id: '', name: 'b', state: 'running', image: { distro: 'alpine', version: '', arch: 'unknown' }, config: {} },
    ]);
  });

  it('keeps the quoted snippet short', () => {
    const { message } = protocolFailure(() => parseOrbctlList(`not json ${'x'.repeat(10_000)}`));
    expect(message.length).toBeLessThan(400);
  });
});

describe('parseOrbctlInfo', () => {
  it('parses the record wrapper with ip4 and disk_size', () => {
    expect(parseOrbctlInfo(captured('orbctl-info-running'))).toEqual({
      record: {
        id: '01HQ8Z4N3K7YV2B5X9C6D1E0FG',
        name: 'lvtest-web',
        state: 'running',
        image: { distro: 'ubuntu', version: 'noble', arch: 'arm64' },
        config: { isolated: false, isolate_network: false, default_username: 'dev' },
      },
      ip4: '198.19.249.36',
      diskSize: 847974400,
    });
  });

  it('leaves ip4 out for a stopped machine', () => {
    const info = parseOrbctlInfo(captured('orbctl-info-stopped'));
    expect(info.record.state).toBe('stopped');
    expect(info.record.config.isolated).toBe(true);
    expect(info.diskSize).toBe(1210056704);
    expect('ip4' in info).toBe(false);
  });

  it('treats an empty or null ip4 as absent', () => {
    const record = JSON.parse(captured('orbctl-info-bare')) as unknown;
    expect('ip4' in parseOrbctlInfo(JSON.stringify({ record, ip4: '' }))).toBe(false);
    expect('ip4' in parseOrbctlInfo(JSON.stringify({ record, ip4: null }))).toBe(false);
  });

  it('accepts the bare record printed by some versions', () => {
    const info = parseOrbctlInfo(captured('orbctl-info-bare'));
    expect(info).toEqual({
      record: {
        id: '01HQ8Z4N3K7YV2B5X9C6D1E0FG',
        name: 'lvtest-web',
        state: 'running',
        image: { distro: 'ubuntu', version: 'noble', arch: 'arm64' },
        config: { isolated: false, isolate_network: false, default_username: 'dev' },
      },
    });
  });

  it('accepts a record with neither image nor config (the shape another OrbStack tool tests with)', () => {
    expect(parseOrbctlInfo(captured('orbctl-info-no-image'))).toEqual({
      record: {
        id: '01HQ8ZB4T7N2XK5W9M3R6C1D8E',
        name: 'lvtest-bare',
        state: 'stopped',
        image: { distro: 'unknown', version: '', arch: 'unknown' },
        config: {},
      },
    });
    const bare = JSON.stringify({ name: 'lvtest-bare', state: 'running', ip4: '198.19.249.2' });
    expect(parseOrbctlInfo(bare)).toMatchObject({ record: { image: { distro: 'unknown' } }, ip4: '198.19.249.2' });
  });

  it('agrees with list on the same machine', () => {
    const [listed] = parseOrbctlList(captured('orbctl-list'));
    expect(parseOrbctlInfo(captured('orbctl-info-running')).record).toEqual(listed);
  });

  it.each([
    ['an array', '[]'],
    ['null', 'null'],
    ['a record wrapper holding garbage', '{"record":{"name":"x"},"ip4":"1.2.3.4"}'],
    ['a record with a non-object image', '{"record":{"name":"x","state":"running","image":["ubuntu"]}}'],
    [
      'a negative disk size',
      '{"record":{"id":"x","name":"a","state":"s","image":{"distro":"d","version":"v","arch":"a"}},"disk_size":-1}',
    ],
    ['an error message', 'machine not found: lvtest-x'],
    ['empty output', ''],
  ])('throws PROTOCOL on %s', (_name, stdout) => {
    protocolFailure(() => parseOrbctlInfo(stdout));
  });
});

describe('parseQemuImgInfo (captured from qemu-img 7.2)', () => {
  it('parses a plain qcow2', () => {
    expect(parseQemuImgInfo(captured('qemu-img-info-plain'))).toEqual({
      filename: 'base.qcow2',
      format: 'qcow2',
      virtualSize: 1073741824,
      actualSize: 200704,
      snapshots: [],
    });
  });

  it('parses a raw image', () => {
    const info = parseQemuImgInfo(captured('qemu-img-info-raw'));
    expect(info).toMatchObject({ filename: 'raw.img', format: 'raw', virtualSize: 16 * 1024 * 1024, snapshots: [] });
    expect(info.backingFile).toBeUndefined();
  });

  it('parses an overlay with an absolute backing file', () => {
    const info = parseQemuImgInfo(captured('qemu-img-info-backing'));
    expect(info.filename).toBe('overlay.qcow2');
    expect(info.virtualSize).toBe(1073741824);
    expect(info.backingFile).toMatch(/^\/tmp\/.+\/base\.qcow2$/);
    expect(info.fullBackingFile).toBe(info.backingFile);
    expect(info.backingFormat).toBe('qcow2');
  });

  it('keeps a relative backing file as recorded', () => {
    const info = parseQemuImgInfo(captured('qemu-img-info-relative-backing'));
    expect(info).toMatchObject({ backingFile: 'base.qcow2', backingFormat: 'qcow2', virtualSize: 2 * 1024 ** 3 });
  });

  it('lists disk-only snapshots made by qemu-img snapshot -c', () => {
    const info = parseQemuImgInfo(captured('qemu-img-info-snapshots'));
    expect(info.virtualSize).toBe(536870912);
    expect(info.snapshots).toEqual([
      { id: '1', name: 'clean', vmStateSize: 0, dateSec: 1795324044, clockNsec: 0 },
      { id: '2', name: 'second', vmStateSize: 0, dateSec: 1795324044, clockNsec: 0 },
    ]);
  });

  it('reports VM state size and guest clock of a savevm snapshot', () => {
    const [snap] = parseQemuImgInfo(captured('qemu-img-info-vmstate')).snapshots;
    expect(snap).toEqual({ id: '1', name: 'booted', vmStateSize: 777340, dateSec: 1795324053, clockNsec: 1674215085 });
  });

  it('tolerates absent fields it does not use: filename, virtual-size, a snapshot id', () => {
    const info = parseQemuImgInfo(
      JSON.stringify({ format: 'qcow2', snapshots: [{ name: 's', 'vm-state-size': 0, 'date-sec': 1 }] }),
    );
    expect(info).toEqual({
      filename: '',
      format: 'qcow2',
      snapshots: [{ id: '', name: 's', vmStateSize: 0, dateSec: 1 }],
    });
  });

  it('returns the top image of a --backing-chain array', () => {
    const chain = `[${captured('qemu-img-info-backing')},${captured('qemu-img-info-plain')}]`;
    expect(parseQemuImgInfo(chain).filename).toBe('overlay.qcow2');
  });

  it.each([
    ['the human format', 'image: base.qcow2\nfile format: qcow2\nvirtual size: 1 GiB (1073741824 bytes)\n'],
    ['a missing format', '{"filename":"a","virtual-size":1}'],
    ['a string size', '{"filename":"a","format":"qcow2","virtual-size":"1G"}'],
    [
      'a snapshot without name',
      '{"filename":"a","format":"qcow2","virtual-size":1,"snapshots":[{"id":"1","vm-state-size":0,"date-sec":1}]}',
    ],
    [
      'a snapshot without date-sec',
      '{"filename":"a","format":"qcow2","virtual-size":1,"snapshots":[{"id":"1","name":"s","vm-state-size":0}]}',
    ],
    ['an empty array', '[]'],
    ['a lock error on stdout', 'qemu-img: Could not open \'a.qcow2\': Failed to get shared "write" lock'],
  ])('throws PROTOCOL on %s', (_name, stdout) => {
    const { message } = protocolFailure(() => parseQemuImgInfo(stdout));
    expect(message).toContain('qemu-img info');
  });
});
