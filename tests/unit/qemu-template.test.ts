/**
 * The pure parts of templates: the launch with RAM in a file, `-incoming defer` and a VM
 * generation id; the device-layout signature (per-VM parts normalised, devices not); the
 * compatibility diff and its CONFLICT; the clone spec rules in the schema; per-VM MACs.
 */
import { describe, expect, it } from 'vitest';
import { buildQemuCommand, type QemuLaunch } from '../../src/backends/qemu/cmdline.js';
import { launchFor } from '../../src/backends/qemu/layout.js';
import { compatibilityDiff, depsOf, incompatible, layoutSignature } from '../../src/backends/qemu/template/compat.js';
import { hasIpv4Address } from '../../src/backends/qemu/template/create.js';
import { macFor } from '../../src/backends/qemu/template/restore.js';
import { parseSetupArg } from '../../src/cli/commands/template.js';
import { FROM_TEMPLATE, parseVmSpec, specFingerprint } from '../../src/schema.js';
import { qemuLaunch } from '../fixtures/qemuLaunch.js';
import { rejection } from '../fixtures/rejection.js';

const GUID = '6f0c8a58-3c39-4b0e-9a8a-0d1f2c3b4a5e';

const launch = (overrides: Partial<QemuLaunch> = {}): QemuLaunch => qemuLaunch(overrides);

const source = (o: Partial<QemuLaunch> = {}) =>
  launch({ memoryFile: { path: '/t/base/ram', share: true }, vmgenid: GUID, ...o });

const valueOf = (args: string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);

describe('buildQemuCommand: templates', () => {
  it.each([
    ['template source', source(), 'on', false],
    ['clone', source({ memoryFile: { path: '/t/base/ram', share: false }, incoming: true }), 'off', true],
  ])('%s: RAM in the file (share=%s), the machine bound to it, incoming=%s', (_what, l, share, incoming) => {
    const { args } = buildQemuCommand(l);
    expect(valueOf(args, '-machine')).toEqual(['pc,memory-backend=ram0']);
    expect(valueOf(args, '-object')).toEqual([
      `memory-backend-file,id=ram0,size=256M,mem-path=/t/base/ram,share=${share}`,
    ]);
    // -m stays and equals the backend's size (QEMU refuses a mismatch).
    expect(valueOf(args, '-m')).toEqual(['256']);
    expect(valueOf(args, '-device')).toContain(`vmgenid,id=vmgenid0,guid=${GUID}`);
    expect(valueOf(args, '-incoming')).toEqual(incoming ? ['defer'] : []);
    // -incoming comes before -daemonize, so the guard sees one of each.
    expect(args.indexOf('-daemonize')).toBeGreaterThan(-1);
  });

  it('a VM that is not a template keeps its command line exactly', () => {
    const { args } = buildQemuCommand(launch());
    expect(args).not.toContain('-machine');
    expect(args).not.toContain('-object');
    expect(args).not.toContain('-incoming');
    expect(args.some((a) => a.startsWith('vmgenid'))).toBe(false);
  });

  it('aarch64 names the virt machine once, with the backend', () => {
    const { args } = buildQemuCommand(source({ arch: 'aarch64' }));
    expect(valueOf(args, '-machine')).toEqual(['virt,memory-backend=ram0']);
  });

  it.each([
    ['a comma in the RAM path', source({ memoryFile: { path: '/t/a,b/ram', share: true } }), 'memoryFile.path'],
    ['a guid that is not a UUID', source({ vmgenid: 'x,guid=1' }), 'vmgenid'],
  ])('refuses %s', (_what, l, property) => {
    try {
      buildQemuCommand(l);
      expect.unreachable();
    } catch (error) {
      expect((error as { code: string; issues: { property: string }[] }).code).toBe('VALIDATION');
      expect((error as { issues: { property: string }[] }).issues[0]?.property).toBe(property);
    }
  });
});

describe('layoutSignature', () => {
  const clone = source({
    name: 'other',
    ports: [{ host: 2222, guest: 22, protocol: 'tcp', bind: '127.0.0.1' }],
    isolated: true,
    boot: { kind: 'kernel', kernel: '/elsewhere/vmlinux', initrd: '/elsewhere/initrd', append: 'console=ttyS0' },
    paths: {
      dir: '/x/other',
      qmpSocket: '/x/other/q',
      qgaSocket: '/x/other/g',
      consoleLog: '/x/other/c',
      pidFile: '/x/other/p',
    },
    memoryFile: { path: '/t/base/ram', share: false },
    vmgenid: '00000000-0000-4000-8000-000000000001',
    incoming: true,
  });

  it('ignores what is per VM: names, paths, ports, RAM sharing, generation id, -incoming', () => {
    expect(layoutSignature(clone)).toBe(layoutSignature(source()));
  });

  it.each([
    ['memory', { memory: 512 }],
    ['cpus', { cpus: 2 }],
    ['an extra disk', { disks: [{ id: 'disk-a', path: '/s/vm1/a.qcow2', format: 'qcow2' as const }] }],
    ['the kernel command line', { boot: { kind: 'kernel' as const, kernel: '/k', initrd: '/i', append: 'quiet' } }],
    ['no vmgenid device', { vmgenid: undefined }],
    ['the accelerator', { accel: 'kvm' as const }],
  ])('changes with %s', (_what, o) => {
    expect(layoutSignature(source(o))).not.toBe(layoutSignature(source()));
  });
});

describe('compatibilityDiff', () => {
  const recorded = depsOf(source(), 'QEMU emulator version 7.2.22', 'img1');

  it('is empty for the same QEMU, layout and boot files', () => {
    expect(compatibilityDiff(recorded, depsOf(source({ name: 'c1' }), 'QEMU emulator version 7.2.22', 'img1'))).toEqual(
      [],
    );
  });

  it('names each change, and the CONFLICT says what changed and how to rebuild', () => {
    const now = depsOf(source({ memory: 512 }), 'QEMU emulator version 8.0.0', 'img1');
    const changes = compatibilityDiff(recorded, now);
    expect(changes.map((c) => c.field).sort()).toEqual(['layout', 'memory', 'qemuVersion']);
    expect(changes.find((c) => c.field === 'qemuVersion')).toEqual({
      field: 'qemuVersion',
      recorded: 'QEMU emulator version 7.2.22',
      now: 'QEMU emulator version 8.0.0',
    });
    const e = incompatible('base', 'c1', changes);
    expect(e.code).toBe('CONFLICT');
    expect(e.message).toContain(
      'QEMU version: template has QEMU emulator version 7.2.22, now QEMU emulator version 8.0.0',
    );
    expect(e.hint).toContain('localvm template create base');
  });

  it('an older record without a field counts as changed', () => {
    const { cpu: _cpu, ...old } = recorded;
    expect(compatibilityDiff(old as typeof recorded, recorded).map((c) => c.field)).toEqual(['cpu']);
  });
});

describe('clone specs', () => {
  it('leave memory and cpus to the template when not given', () => {
    const spec = parseVmSpec({ name: 'c1', template: 'base' });
    expect(spec.memory).toBe(FROM_TEMPLATE);
    expect(spec.cpus).toBe(FROM_TEMPLATE);
    // Specs without a template keep their defaults and their fingerprints.
    const plain = parseVmSpec({ name: 'vm' });
    expect([plain.memory, plain.cpus, plain.image]).toEqual([256, 1, 'tiny']);
  });

  it.each(['image', 'kernel'])('refuse %s with a template (VALIDATION)', async (key) => {
    const e = await rejection(
      Promise.resolve().then(() => parseVmSpec({ name: 'c1', template: 'base', [key]: '/x/y' })),
    );
    expect(e.code).toBe('VALIDATION');
    expect(e.issues?.map((i) => i.property)).toContain(key);
  });

  it('refuse a template name with path characters', async () => {
    const e = await rejection(Promise.resolve().then(() => parseVmSpec({ name: 'c1', template: '../etc' })));
    expect(e.issues?.[0]?.property).toBe('template');
  });

  it('fingerprint the template, so a clone of another template is not adopted', () => {
    const a = specFingerprint(parseVmSpec({ name: 'c1', template: 'a' }));
    expect(a).not.toBe(specFingerprint(parseVmSpec({ name: 'c1', template: 'b' })));
  });
});

describe('macFor', () => {
  it('is a locally administered unicast MAC, stable per name and different between names', () => {
    expect(macFor('c1')).toMatch(/^02(:[0-9a-f]{2}){5}$/);
    expect(macFor('c1')).toBe(macFor('c1'));
    expect(macFor('c1')).not.toBe(macFor('c2'));
  });
});

describe('parseSetupArg (CLI --setup)', () => {
  it.each([
    ['["sh","-c","echo a b"]', ['sh', '-c', 'echo a b']],
    ['apk  add curl', ['apk', 'add', 'curl']],
  ])('%s', (value, argv) => {
    expect(parseSetupArg(value)).toEqual(argv);
  });

  it.each(['[1]', '[]', '[not json', '   '])('refuses %j with VALIDATION', (value) => {
    expect(() => parseSetupArg(value)).toThrow(expect.objectContaining({ code: 'VALIDATION' }));
  });
});

describe('launchFor a clone', () => {
  const inputs = (memory: number) => ({
    name: 'c1',
    spec: parseVmSpec({ name: 'c1', memory }),
    arch: 'x86_64' as const,
    boot: { kind: 'kernel' as const, kernel: '/k', initrd: '/i' },
    disks: [],
    paths: {
      dir: '/s/c1',
      record: '/s/c1/vm.json',
      pidFile: '/s/c1/qemu.pid',
      consoleLog: '/s/c1/console.log',
      overlay: '/s/c1/overlay.qcow2',
      qmpSocket: '/s/c1/qmp.sock',
      qgaSocket: '/s/c1/qga.sock',
    },
    template: { name: 'base', role: 'clone' as const, ramFile: '/t/base/ram', memory: 256, vmgenid: GUID },
  });

  it('maps the RAM file privately, waits for state only when restoring, and boots cold otherwise', () => {
    const restoring = launchFor(inputs(256), 'tcg', undefined, { incoming: true });
    expect(restoring).toMatchObject({
      memoryFile: { path: '/t/base/ram', share: false },
      vmgenid: GUID,
      incoming: true,
    });
    expect(launchFor(inputs(256), 'tcg', undefined).incoming).toBeUndefined();
  });

  it('refuses a memory other than the RAM file’s (QEMU would grow the template’s file)', () => {
    expect(() => launchFor(inputs(512), 'tcg', undefined)).toThrow(expect.objectContaining({ code: 'VALIDATION' }));
  });
});

describe('the template build waits for the network (guest-network-get-interfaces replies)', () => {
  const lo = { name: 'lo', 'ip-addresses': [{ 'ip-address-type': 'ipv4', 'ip-address': '127.0.0.1', prefix: 8 }] };
  it('is settled once a non-loopback interface has an IPv4 address', () => {
    const eth = {
      name: 'eth0',
      'ip-addresses': [{ 'ip-address-type': 'ipv4', 'ip-address': '10.0.2.15', prefix: 24 }],
    };
    expect(hasIpv4Address([lo, eth])).toBe(true);
  });
  it.each([
    ['only loopback', [lo]],
    ['an interface without addresses yet', [lo, { name: 'eth0', 'hardware-address': '52:54:00:12:34:56' }]],
    ['only IPv6 (link-local before DHCP)', [lo, { name: 'eth0', 'ip-addresses': [{ 'ip-address-type': 'ipv6' }] }]],
    ['not a list', { error: 'x' }],
    ['null entries', [null]],
  ])('is not settled with %s', (_what, reply) => {
    expect(hasIpv4Address(reply)).toBe(false);
  });
});
