/**
 * Level A, pure half: the provider's check and diff decide what `pulumi preview` shows and
 * whether a VM is replaced, updated in place, or left alone.
 */
import { describe, expect, it } from 'vitest';
import {
  UNKNOWN,
  checkVm,
  checkVmCommand,
  checkVmFile,
  diffVm,
  diffVmCommand,
  diffVmFile,
  fileUpdateRewrites,
  commandUpdateReruns,
  ownerConflict,
  unknownPaths,
  vmInstanceDrift,
  vmSpecOf,
  OWNER_LABEL,
} from '../../src/provider/logic.js';

const providerKeys = { __provider: 'exports.handler = () => ({})', providerVersion: '0.1.0' };

/** What a successful create stores: the checked inputs plus computed outputs. */
function storedVm(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const checked = checkVm({ ...providerKeys, name: 'web', image: 'tiny', ...overrides });
  expect(checked.failures).toEqual([]);
  return { ...checked.inputs, backend: 'qemu', accel: 'tcg', state: 'running', ip4: '10.0.2.15', fingerprint: 'abc' };
}

function checkedVm(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const checked = checkVm({ ...providerKeys, name: 'web', image: 'tiny', ...overrides });
  expect(checked.failures).toEqual([]);
  return checked.inputs;
}

describe('checkVm', () => {
  it('rejects a hostile name with a failure on property name', () => {
    const r = checkVm({ ...providerKeys, name: '../../etc; rm -rf /' });
    expect(r.failures.map((f) => f.property)).toEqual(['name']);
    expect(r.failures[0]?.reason).toMatch(/a-z/);
  });

  it('rejects memory 0 on property memory, and nested paths keep their index', () => {
    const r = checkVm({ ...providerKeys, name: 'web', memory: 0, ports: [{ host: 70000, guest: 22 }] });
    expect(r.failures.map((f) => f.property).sort()).toEqual(['memory', 'ports.0.host']);
  });

  it('rejects unknown keys instead of ignoring a typo', () => {
    const r = checkVm({ ...providerKeys, name: 'web', memroy: 512 });
    expect(r.failures).toHaveLength(1);
  });

  it('lets the unknown sentinel through anywhere (preview)', () => {
    expect(checkVm({ ...providerKeys, name: UNKNOWN, memory: UNKNOWN }).failures).toEqual([]);
    expect(checkVm({ ...providerKeys, name: 'web', ports: UNKNOWN }).failures).toEqual([]);
    expect(checkVm({ ...providerKeys, name: 'web', ports: [{ host: UNKNOWN, guest: 22 }] }).failures).toEqual([]);
    expect(checkVm({ ...providerKeys, name: 'web', labels: { a: UNKNOWN } }).failures).toEqual([]);
  });

  it('still reports real failures next to unknown values', () => {
    const r = checkVm({ ...providerKeys, name: UNKNOWN, memory: 1 });
    expect(r.failures.map((f) => f.property)).toEqual(['memory']);
  });

  it('normalises known inputs (defaults, aliases) and keeps the provider keys', () => {
    const r = checkVm({ ...providerKeys, name: 'web', arch: 'amd64', ports: [{ host: 2222, guest: 22 }] });
    expect(r.inputs).toMatchObject({
      name: 'web',
      arch: 'x86_64',
      memory: 256,
      cpus: 1,
      ports: [{ host: 2222, guest: 22, protocol: 'tcp', bind: '127.0.0.1' }],
      providerVersion: '0.1.0',
      __provider: providerKeys.__provider,
    });
    expect(JSON.stringify(r.inputs)).not.toContain('undefined');
  });
});

describe('unknownPaths', () => {
  it('finds nested unknowns with dotted paths', () => {
    expect(unknownPaths({ a: UNKNOWN, b: [1, { c: UNKNOWN }], d: 'x' })).toEqual(['a', 'b.1.c']);
  });
});

describe('diffVm', () => {
  it('reports no change for identical inputs, whatever the key order', () => {
    const olds = storedVm({ labels: { a: '1', b: '2' } });
    const news = checkedVm({ labels: { b: '2', a: '1' } });
    expect(diffVm(olds, news)).toMatchObject({ changes: false, replaces: [], updates: [] });
  });

  it('updates memory, cpus and ports in place', () => {
    const d = diffVm(storedVm(), checkedVm({ memory: 512, cpus: 2, ports: [{ host: 8080, guest: 80 }] }));
    expect(d).toMatchObject({ changes: true, replaces: [] });
    expect(d.updates.sort()).toEqual(['cpus', 'memory', 'ports']);
  });

  it.each([
    ['image', '/images/other.qcow2'],
    ['arch', 'aarch64'],
    ['userData', '#cloud-config\n'],
    ['user', 'alice'],
    ['disks', [{ name: 'data', size: '1G' }]],
    ['kernel', '/boot/vmlinuz'],
  ])('replaces (delete first) when %s changes', (key, value) => {
    const d = diffVm(storedVm(), checkedVm({ [key]: value }));
    expect(d.replaces).toEqual([key]);
    expect(d.deleteBeforeReplace).toBe(true);
  });

  it('a new name replaces creating first, unless the two VMs would forward the same host port', () => {
    expect(diffVm(storedVm(), checkedVm({ name: 'web2' }))).toMatchObject({
      replaces: ['name'],
      deleteBeforeReplace: false,
    });
    const port = [{ host: 18080, guest: 80 }];
    const d = diffVm(storedVm({ ports: port }), checkedVm({ name: 'web2', ports: port }));
    expect(d).toMatchObject({ replaces: ['name'], deleteBeforeReplace: true });
    // Not known yet (preview): the same name may come back, so delete first.
    expect(diffVm(storedVm(), checkVm({ ...providerKeys, name: UNKNOWN }).inputs).deleteBeforeReplace).toBe(true);
  });

  it('running (default true) against the observed state: a stopped VM is started by the next up', () => {
    expect(diffVm({ ...storedVm(), state: 'stopped' }, checkedVm()).updates).toEqual(['running']);
    expect(diffVm({ ...storedVm(), state: 'stopped' }, checkedVm({ running: false })).updates).toEqual(['running']);
    const keptStopped = { ...storedVm({ running: false }), state: 'stopped' };
    expect(diffVm(keptStopped, checkedVm({ running: false })).changes).toBe(false);
    expect(diffVm(storedVm(), checkedVm()).changes).toBe(false);
  });

  it('the owner and adopt are metadata; ownerConflict allows the same owner, no owner, or adopt', () => {
    expect(diffVm(storedVm({ owner: 'p/dev/a' }), checkedVm({ owner: 'p/dev/b' })).updates).toEqual(['owner']);
    const labels = { [OWNER_LABEL]: 'p/dev/a' };
    expect(ownerConflict(labels, { owner: 'p/dev/b' })).toBe('p/dev/a');
    expect(ownerConflict(labels, { owner: 'p/dev/b', adopt: true })).toBeUndefined();
    expect(ownerConflict(labels, { owner: 'p/dev/a' })).toBeUndefined();
    expect(ownerConflict({}, { owner: 'p/dev/b' })).toBeUndefined();
    expect(vmSpecOf(checkedVm({ owner: 'p/dev/a', labels: { x: 'y' } })).labels).toEqual({ x: 'y', ...labels });
  });

  it('stores labels, timeouts, readiness and the provider version without touching the VM', () => {
    const d = diffVm(
      storedVm(),
      checkedVm({ labels: { team: 'x' }, readiness: [{ argv: ['true'] }], providerVersion: '0.2.0' }),
    );
    expect(d.replaces).toEqual([]);
    expect(d.updates.sort()).toEqual(['labels', 'providerVersion', 'readiness']);
  });

  it('treats backend and accel "auto" as matching what they became', () => {
    const olds = storedVm();
    expect(olds.backend).toBe('qemu');
    expect(diffVm(olds, checkedVm({ backend: 'auto', accel: 'auto' })).changes).toBe(false);
    expect(diffVm(olds, checkedVm({ backend: 'orbstack' })).replaces).toEqual(['backend']);
  });

  it('counts an unknown new value as a change', () => {
    expect(diffVm(storedVm(), { ...checkedVm(), image: UNKNOWN }).replaces).toEqual(['image']);
    expect(diffVm(storedVm(), { ...checkedVm(), memory: UNKNOWN }).updates).toEqual(['memory']);
  });
});

describe('VmCommand check and diff', () => {
  const base = { ...providerKeys, vm: 'web', create: ['echo', 'hi'] };

  it('accepts argv or a shell script, and rejects an empty argv and a relative cwd', () => {
    expect(checkVmCommand(base).failures).toEqual([]);
    expect(checkVmCommand({ ...base, create: 'echo hi | wc -c' }).failures).toEqual([]);
    const r = checkVmCommand({ ...base, create: [], cwd: 'tmp' });
    expect(r.failures.map((f) => f.property).sort()).toEqual(['create', 'cwd']);
    expect(checkVmCommand({ ...base, vm: UNKNOWN, env: { A: UNKNOWN } }).failures).toEqual([]);
  });

  it('replaces on vm or triggers, re-runs on command changes, stores the rest', () => {
    const olds = { ...checkVmCommand(base).inputs, stdout: 'hi\n', stderr: '', exitCode: 0 };
    const same = checkVmCommand(base).inputs;
    expect(diffVmCommand(olds, same).changes).toBe(false);
    expect(diffVmCommand(olds, checkVmCommand({ ...base, triggers: [1] }).inputs).replaces).toEqual(['triggers']);
    expect(diffVmCommand(olds, checkVmCommand({ ...base, vm: 'db' }).inputs).replaces).toEqual(['vm']);
    const d = diffVmCommand(olds, checkVmCommand({ ...base, create: ['echo', 'bye'] }).inputs);
    expect(d).toMatchObject({ changes: true, replaces: [], updates: ['create'] });
  });
});

describe('VmFile check and diff', () => {
  const base = { ...providerKeys, vm: 'web', path: '/etc/motd', content: 'hello\n' };

  it('needs exactly one of content and source, and an absolute path', () => {
    expect(checkVmFile(base).failures).toEqual([]);
    expect(checkVmFile({ ...base, source: './motd' }).failures.map((f) => f.property)).toEqual(['content']);
    expect(checkVmFile({ ...base, path: 'etc/motd' }).failures.map((f) => f.property)).toEqual(['path']);
    expect(checkVmFile({ ...base, mode: 0o10000 }).failures.map((f) => f.property)).toEqual(['mode']);
  });

  it('replaces on another path; rewrites in place on content, a changed source file or a lost boot; updates on mode', () => {
    const olds = { ...checkVmFile(base).inputs, sha256: 'old' };
    expect(diffVmFile(olds, checkVmFile(base).inputs).changes).toBe(false);
    expect(diffVmFile(olds, checkVmFile({ ...base, content: 'bye\n' }).inputs)).toMatchObject({
      replaces: [],
      updates: ['content'],
    });
    expect(fileUpdateRewrites(diffVmFile(olds, checkVmFile(base).inputs, undefined, 'rebooted').updates)).toBe(true);
    expect(fileUpdateRewrites(diffVmFile(olds, checkVmFile({ ...base, mode: 0o600 }).inputs).updates)).toBe(false);
    expect(diffVmFile(olds, checkVmFile({ ...base, path: '/etc/issue' }).inputs).replaces).toEqual(['path']);
    expect(diffVmFile(olds, checkVmFile({ ...base, mode: 0o600 }).inputs)).toMatchObject({
      replaces: [],
      updates: ['mode'],
    });
    const src = { ...providerKeys, vm: 'web', path: '/etc/motd', source: './motd' };
    const srcOlds = { ...checkVmFile(src).inputs, sha256: 'aaa' };
    expect(diffVmFile(srcOlds, checkVmFile(src).inputs, 'aaa').changes).toBe(false);
    expect(diffVmFile(srcOlds, checkVmFile(src).inputs, 'bbb')).toMatchObject({ replaces: [], updates: ['source'] });
  });

  it('check with an unknown content still applies the defaults of the known inputs', () => {
    expect(checkVmFile({ ...base, content: UNKNOWN })).toEqual({
      failures: [],
      inputs: { ...providerKeys, vm: 'web', path: '/etc/motd', content: UNKNOWN, mode: 0o644, timeoutMs: 60_000 },
    });
  });
});

describe('vmInstanceDrift', () => {
  const recorded = { vmCreatedAt: 'c1', vmBootedAt: 'b1' };
  it('tells a gone VM, another instance and another boot apart', () => {
    expect(vmInstanceDrift(recorded, undefined)).toBe('gone');
    expect(vmInstanceDrift(recorded, { createdAt: 'c2', startedAt: 'b9' })).toBe('recreated');
    expect(vmInstanceDrift(recorded, { createdAt: 'c1', startedAt: 'b2' })).toBe('rebooted');
    expect(vmInstanceDrift(recorded, { createdAt: 'c1', startedAt: undefined })).toBe('rebooted');
    expect(vmInstanceDrift(recorded, { createdAt: 'c1', startedAt: 'b1' })).toBeUndefined();
  });
  it('does not compare what was never recorded (state from before)', () => {
    expect(vmInstanceDrift({}, { createdAt: 'c2', startedAt: 'b2' })).toBeUndefined();
  });
  it('a new boot re-runs a command; deleteBeforeReplace is the input', () => {
    const cmd = { ...providerKeys, vm: 'web', create: ['true'] };
    const olds = checkVmCommand(cmd).inputs;
    expect(commandUpdateReruns(diffVmCommand(olds, olds, 'rebooted').updates)).toBe(true);
    expect(diffVmCommand(olds, olds).changes).toBe(false);
    const news = checkVmCommand({ ...cmd, triggers: [1], deleteBeforeReplace: true }).inputs;
    expect(diffVmCommand(olds, news)).toMatchObject({ replaces: ['triggers'], deleteBeforeReplace: true });
  });
});
