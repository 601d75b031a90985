import { findIsoTool, seedIsoCommand } from '../../src/backends/qemu/seed.js';
import { describe, expect, it } from 'vitest';
import { assertNoDuplicateFlags, buildQemuCommand, type QemuLaunch } from '../../src/backends/qemu/cmdline.js';
import { createOrbctl, orbctl } from '../../src/backends/orbstack/cmdline.js';
import { createQemuImg, qemuImg } from '../../src/backends/qemu/qemuImg.js';
import { type Command } from '../../src/runner.js';
import { isLocalVmError, type ErrorCode } from '../../src/errors.js';
import { qemuLaunch } from '../fixtures/qemuLaunch.js';

function codeOf(fn: () => unknown): { code: ErrorCode | undefined; property: string | undefined } {
  try {
    fn();
  } catch (e) {
    if (!isLocalVmError(e)) throw e;
    return { code: e.code, property: e.issues?.[0]?.property };
  }
  return { code: undefined, property: undefined };
}

describe('orbctl builders', () => {
  const cases: [string, () => Command, string[]][] = [
    ['create minimal', () => orbctl.create({ image: 'ubuntu', name: 'vm1' }), ['create', 'ubuntu', 'vm1']],
    [
      'create with every option',
      () =>
        orbctl.create({
          image: 'debian:bookworm',
          name: 'vm1',
          arch: 'arm64',
          user: 'dev',
          userDataFile: '/tmp/user-data.yaml',
        }),
      ['create', '-a', 'arm64', '-u', 'dev', '-c', '/tmp/user-data.yaml', 'debian:bookworm', 'vm1'],
    ],
    ['list', () => orbctl.list(), ['list', '-f', 'json']],
    ['list running', () => orbctl.list({ runningOnly: true }), ['list', '-r', '-f', 'json']],
    ['list running false', () => orbctl.list({ runningOnly: false }), ['list', '-f', 'json']],
    ['info', () => orbctl.info('vm1'), ['info', 'vm1', '-f', 'json']],
    ['start', () => orbctl.start('vm1'), ['start', 'vm1']],
    ['stop', () => orbctl.stop('vm1'), ['stop', 'vm1']],
    ['stop forced', () => orbctl.stop('vm1', { force: true }), ['stop', '-f', 'vm1']],
    ['restart', () => orbctl.restart('vm1'), ['restart', 'vm1']],
    ['delete', () => orbctl.delete('vm1'), ['delete', 'vm1']],
    ['delete forced', () => orbctl.delete('vm1', { force: true }), ['delete', '-f', 'vm1']],
    [
      'run',
      () => orbctl.run({ machine: 'vm1', argv: ['sh', '-c', 'echo $HOME; rm -rf /'] }),
      ['run', '-m', 'vm1', 'sh', '-c', 'echo $HOME; rm -rf /'],
    ],
    [
      'run as user in dir',
      () => orbctl.run({ machine: 'vm1', argv: ['ls', '-la'], user: 'root', workdir: '/srv/app' }),
      ['run', '-m', 'vm1', '-u', 'root', '-w', '/srv/app', 'ls', '-la'],
    ],
    ['push', () => orbctl.push({ machine: 'vm1', local: '/tmp/a b' }), ['push', '-m', 'vm1', '/tmp/a b']],
    [
      'push to remote',
      () => orbctl.push({ machine: 'vm1', local: './a', remote: '/root/a' }),
      ['push', '-m', 'vm1', './a', '/root/a'],
    ],
    [
      'pull',
      () => orbctl.pull({ machine: 'vm1', remote: '/etc/os-release' }),
      ['pull', '-m', 'vm1', '/etc/os-release'],
    ],
    [
      'pull to local',
      () => orbctl.pull({ machine: 'vm1', remote: '/etc/os-release', local: '/tmp/x' }),
      ['pull', '-m', 'vm1', '/etc/os-release', '/tmp/x'],
    ],
    ['clone', () => orbctl.clone('base', 'copy'), ['clone', 'base', 'copy']],
    ['config get', () => orbctl.configGet('vm1', 'memory_mib'), ['config', 'get', 'machine.vm1.memory_mib']],
    ['config set number', () => orbctl.configSet('vm1', 'cpu', 2), ['config', 'set', 'machine.vm1.cpu', '2']],
    [
      'config set string',
      () => orbctl.configSet('vm1', 'username', 'dev'),
      ['config', 'set', 'machine.vm1.username', 'dev'],
    ],
    [
      'config set zero',
      () => orbctl.configSet('vm1', 'disk_bytes', 0),
      ['config', 'set', 'machine.vm1.disk_bytes', '0'],
    ],
  ];

  it.each(cases)('%s', (_name, build, args) => {
    expect(build()).toEqual({ file: 'orbctl', args });
  });

  it('returns a fresh args array each call', () => {
    const a = orbctl.list();
    a.args.push('mutated');
    expect(orbctl.list().args).toEqual(['list', '-f', 'json']);
  });

  it('uses the binary given to createOrbctl', () => {
    expect(createOrbctl('/opt/sim/orbctl').info('vm1')).toEqual({
      file: '/opt/sim/orbctl',
      args: ['info', 'vm1', '-f', 'json'],
    });
  });

  const rejected: [string, () => unknown, string][] = [
    ['flag-like name', () => orbctl.delete('-f'), 'name'],
    ['empty name', () => orbctl.start(''), 'name'],
    ['flag-like image', () => orbctl.create({ image: '--help', name: 'vm1' }), 'image'],
    ['bad arch', () => orbctl.create({ image: 'ubuntu', name: 'vm1', arch: 'x86_64' as 'amd64' }), 'arch'],
    ['flag-like machine', () => orbctl.run({ machine: '-u', argv: ['true'] }), 'machine'],
    ['empty argv', () => orbctl.run({ machine: 'vm1', argv: [] }), 'argv'],
    ['flag-like program', () => orbctl.run({ machine: 'vm1', argv: ['-u', 'root'] }), 'argv.0'],
    ['flag-like local', () => orbctl.push({ machine: 'vm1', local: '-rf' }), 'local'],
    ['dotted machine in config key', () => orbctl.configGet('a.b', 'cpu'), 'machine'],
    ['unknown config key', () => orbctl.configGet('vm1', 'disk' as 'cpu'), 'key'],
    ['negative config value', () => orbctl.configSet('vm1', 'cpu', -1), 'value'],
    ['fractional config value', () => orbctl.configSet('vm1', 'memory_mib', 1.5), 'value'],
  ];
  it.each(rejected)('rejects %s', (_name, fn, property) => {
    expect(codeOf(fn)).toEqual({ code: 'VALIDATION', property });
  });
});

function launch(overrides: Partial<QemuLaunch> = {}): QemuLaunch {
  return qemuLaunch(
    {
      boot: {
        kind: 'kernel',
        kernel: '/cache/vmlinux',
        initrd: '/cache/initramfs.gz',
        append: 'console=ttyS0 quiet acpi=noirq panic=-1',
      },
      ...overrides,
    },
    '/run/lv/vm1',
  );
}

const TAIL = [
  '-serial',
  'file:/run/lv/vm1/console.log',
  '-qmp',
  'unix:/run/lv/vm1/qmp.sock,server=on,wait=off',
  '-chardev',
  'socket,path=/run/lv/vm1/qga.sock,server=on,wait=off,id=qga0',
  '-device',
  'virtio-serial-pci',
  '-device',
  'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0',
];
const COMMON = ['-nodefaults', '-no-user-config', '-display', 'none'];
const KERNEL = [
  '-kernel',
  '/cache/vmlinux',
  '-initrd',
  '/cache/initramfs.gz',
  '-append',
  'console=ttyS0 quiet acpi=noirq panic=-1',
];
const NET = ['-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0', '-device', 'virtio-rng-pci'];
const DAEMON = ['-daemonize', '-pidfile', '/run/lv/vm1/qemu.pid'];

describe('buildQemuCommand', () => {
  it('mirrors the working x86_64 TCG command line exactly', () => {
    expect(buildQemuCommand(launch())).toEqual({
      file: 'qemu-system-x86_64',
      args: [
        '-name',
        'vm1',
        '-accel',
        'tcg,tb-size=64',
        '-m',
        '256',
        '-smp',
        '1',
        ...COMMON,
        ...KERNEL,
        ...TAIL,
        ...NET,
        ...DAEMON,
      ],
    });
  });

  const table: [string, Partial<QemuLaunch>, string, string[]][] = [
    [
      'x86_64 kvm',
      { accel: 'kvm', cpus: 2, memory: 1024 },
      'qemu-system-x86_64',
      [
        '-name',
        'vm1',
        '-accel',
        'kvm',
        '-cpu',
        'host',
        '-m',
        '1024',
        '-smp',
        '2',
        ...COMMON,
        ...KERNEL,
        ...TAIL,
        ...NET,
        ...DAEMON,
      ],
    ],
    [
      'x86_64 hvf',
      { accel: 'hvf' },
      'qemu-system-x86_64',
      [
        '-name',
        'vm1',
        '-accel',
        'hvf',
        '-cpu',
        'host',
        '-m',
        '256',
        '-smp',
        '1',
        ...COMMON,
        ...KERNEL,
        ...TAIL,
        ...NET,
        ...DAEMON,
      ],
    ],
    [
      'aarch64 tcg',
      { arch: 'aarch64' },
      'qemu-system-aarch64',
      [
        '-name',
        'vm1',
        '-machine',
        'virt',
        '-accel',
        'tcg,tb-size=64',
        '-cpu',
        'cortex-a57',
        '-m',
        '256',
        '-smp',
        '1',
        ...COMMON,
        ...KERNEL,
        ...TAIL,
        ...NET,
        ...DAEMON,
      ],
    ],
    [
      'aarch64 hvf',
      { arch: 'aarch64', accel: 'hvf' },
      'qemu-system-aarch64',
      [
        '-name',
        'vm1',
        '-machine',
        'virt',
        '-accel',
        'hvf',
        '-cpu',
        'host',
        '-m',
        '256',
        '-smp',
        '1',
        ...COMMON,
        ...KERNEL,
        ...TAIL,
        ...NET,
        ...DAEMON,
      ],
    ],
    [
      'kernel without initrd or append',
      { boot: { kind: 'kernel', kernel: '/k/bzImage' } },
      'qemu-system-x86_64',
      [
        '-name',
        'vm1',
        '-accel',
        'tcg,tb-size=64',
        '-m',
        '256',
        '-smp',
        '1',
        ...COMMON,
        '-kernel',
        '/k/bzImage',
        ...TAIL,
        ...NET,
        ...DAEMON,
      ],
    ],
    [
      'disk boot',
      { boot: { kind: 'disk', image: '/state/vm1/root.qcow2', format: 'qcow2' } },
      'qemu-system-x86_64',
      [
        '-name',
        'vm1',
        '-accel',
        'tcg,tb-size=64',
        '-m',
        '256',
        '-smp',
        '1',
        ...COMMON,
        '-drive',
        'file=/state/vm1/root.qcow2,format=qcow2,if=none,id=root',
        '-device',
        'virtio-blk-pci,drive=root,bootindex=0',
        ...TAIL,
        ...NET,
        ...DAEMON,
      ],
    ],
    [
      'isolated with ports, extra disks, custom binary and extra args',
      {
        isolated: true,
        ports: [
          { host: 2222, guest: 22, protocol: 'tcp', bind: '127.0.0.1' },
          { host: 5353, guest: 53, protocol: 'udp', bind: '0.0.0.0' },
        ],
        disks: [
          { id: 'data', path: '/state/vm1/data.qcow2', format: 'qcow2' },
          { id: 'scratch', path: '/state/vm1/scratch.img', format: 'raw' },
        ],
        qemuBinary: '/opt/qemu/bin/qemu-system-x86_64',
        extraArgs: ['-no-reboot', '-device', 'virtio-balloon-pci'],
      },
      '/opt/qemu/bin/qemu-system-x86_64',
      [
        '-name',
        'vm1',
        '-accel',
        'tcg,tb-size=64',
        '-m',
        '256',
        '-smp',
        '1',
        ...COMMON,
        ...KERNEL,
        ...TAIL,
        '-netdev',
        'user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:0.0.0.0:5353-:53',
        '-device',
        'virtio-net-pci,netdev=n0',
        '-device',
        'virtio-rng-pci',
        '-drive',
        'file=/state/vm1/data.qcow2,format=qcow2,if=none,id=data',
        '-device',
        'virtio-blk-pci,drive=data',
        '-drive',
        'file=/state/vm1/scratch.img,format=raw,if=none,id=scratch',
        '-device',
        'virtio-blk-pci,drive=scratch',
        ...DAEMON,
        '-no-reboot',
        '-device',
        'virtio-balloon-pci',
      ],
    ],
  ];
  it.each(table)('%s', (_name, overrides, file, args) => {
    expect(buildQemuCommand(launch(overrides))).toEqual({ file, args });
  });

  it('defaults the port protocol and bind address when the spec was not parsed', () => {
    const cmd = buildQemuCommand(launch({ ports: [{ host: 8080, guest: 80 } as QemuLaunch['ports'][number]] }));
    expect(cmd.args).toContain('user,id=n0,hostfwd=tcp:127.0.0.1:8080-:80');
  });

  it('keeps commas in the kernel command line (one opaque argv element)', () => {
    const cmd = buildQemuCommand(launch({ boot: { kind: 'kernel', kernel: '/k', append: 'console=ttyS0,115200' } }));
    expect(cmd.args[cmd.args.indexOf('-append') + 1]).toBe('console=ttyS0,115200');
  });

  const paths = launch().paths;
  const rejected: [string, Partial<QemuLaunch>, string][] = [
    ['comma in kernel path', { boot: { kind: 'kernel', kernel: '/k,format=raw' } }, 'boot.kernel'],
    ['comma in initrd path', { boot: { kind: 'kernel', kernel: '/k', initrd: '/i,x' } }, 'boot.initrd'],
    ['comma in disk image', { boot: { kind: 'disk', image: '/a,b.qcow2', format: 'qcow2' } }, 'boot.image'],
    ['unknown disk format', { boot: { kind: 'disk', image: '/a.vmdk', format: 'vmdk' as 'raw' } }, 'boot.format'],
    ['comma in console log', { paths: { ...paths, consoleLog: '/x,y/console.log' } }, 'paths.consoleLog'],
    ['comma in QMP socket', { paths: { ...paths, qmpSocket: '/x/qmp.sock,server=off' } }, 'paths.qmpSocket'],
    ['comma in QGA socket', { paths: { ...paths, qgaSocket: '/x,y/qga.sock' } }, 'paths.qgaSocket'],
    ['comma in pid file', { paths: { ...paths, pidFile: '/x,y/qemu.pid' } }, 'paths.pidFile'],
    [
      'socket path over 107 bytes',
      { paths: { ...paths, qmpSocket: `/${'d'.repeat(110)}/qmp.sock` } },
      'paths.qmpSocket',
    ],
    ['comma in name', { name: 'vm1,debug-threads=on' }, 'name'],
    ['equals in name', { name: 'process=x' }, 'name'],
    ['empty name', { name: '' }, 'name'],
    ['comma in extra disk path', { disks: [{ id: 'd', path: '/d,if=ide', format: 'raw' }] }, 'disks.0.path'],
    ['bad disk id', { disks: [{ id: '0bad', path: '/d', format: 'raw' }] }, 'disks.0.id'],
    ['disk id with comma', { disks: [{ id: 'a,b', path: '/d', format: 'raw' }] }, 'disks.0.id'],
    ['reserved disk id', { disks: [{ id: 'qga0', path: '/d', format: 'raw' }] }, 'disks.0.id'],
    [
      'duplicate disk id',
      {
        disks: [
          { id: 'd', path: '/d1', format: 'raw' },
          { id: 'd', path: '/d2', format: 'raw' },
        ],
      },
      'disks.1.id',
    ],
    ['unresolved accel', { accel: 'auto' as 'tcg' }, 'accel'],
    ['unknown arch', { arch: 'riscv64' as 'x86_64' }, 'arch'],
    ['zero memory', { memory: 0 }, 'memory'],
    ['fractional cpus', { cpus: 1.5 }, 'cpus'],
    ['port out of range', { ports: [{ host: 70000, guest: 22, protocol: 'tcp', bind: '127.0.0.1' }] }, 'ports.0.host'],
    [
      'bind with option injection',
      { ports: [{ host: 1, guest: 2, protocol: 'tcp', bind: '127.0.0.1,restrict=off' }] },
      'ports.0.bind',
    ],
    ['duplicate flag in extra args', { extraArgs: ['-m', '512'] }, 'extraArgs'],
  ];
  it.each(rejected)('rejects %s', (_name, overrides, property) => {
    expect(codeOf(() => buildQemuCommand(launch(overrides)))).toEqual({ code: 'VALIDATION', property });
  });
});

describe('assertNoDuplicateFlags', () => {
  it('accepts the flags that may repeat', () => {
    expect(() =>
      assertNoDuplicateFlags([
        '-device',
        'a',
        '-device',
        'b',
        '-drive',
        'x',
        '-drive',
        'y',
        '-netdev',
        'n',
        '-netdev',
        'm',
        '-chardev',
        'c',
        '-chardev',
        'd',
        '-object',
        'o',
        '-object',
        'p',
        '-blockdev',
        'b1',
        '-blockdev',
        'b2',
      ]),
    ).not.toThrow();
  });

  it.each([['-m'], ['-smp'], ['-accel'], ['-kernel'], ['-daemonize'], ['-nodefaults'], ['-qmp'], ['-serial']])(
    'names %s when it is repeated',
    (flag) => {
      const valueless = flag === '-daemonize' || flag === '-nodefaults';
      const once = valueless ? [flag] : [flag, 'v'];
      let error: unknown;
      try {
        assertNoDuplicateFlags(['-name', 'x', ...once, '-device', 'd', ...once]);
      } catch (e) {
        error = e;
      }
      expect(isLocalVmError(error, 'VALIDATION')).toBe(true);
      expect((error as { details?: { flag?: string } }).details?.flag).toBe(flag);
      expect((error as Error).message).toContain(flag);
    },
  );

  it('treats --flag and -flag as the same flag', () => {
    expect(codeOf(() => assertNoDuplicateFlags(['-m', '256', '--m', '512'])).code).toBe('VALIDATION');
  });

  it('does not mistake an option value starting with "-" for a flag', () => {
    expect(() => assertNoDuplicateFlags(['-append', '-m', '-m', '256'])).not.toThrow();
    expect(() => assertNoDuplicateFlags(['-name', '-daemonize', '-daemonize'])).not.toThrow();
  });

  it('steps over valueless flags so the next flag is still checked', () => {
    expect(codeOf(() => assertNoDuplicateFlags(['-nodefaults', '-m', '1', '-snapshot', '-m', '2'])).code).toBe(
      'VALIDATION',
    );
  });

  it('accepts the builder output for every boot kind', () => {
    expect(() => assertNoDuplicateFlags(buildQemuCommand(launch()).args)).not.toThrow();
    const disk = launch({
      boot: { kind: 'disk', image: '/r.qcow2', format: 'qcow2' },
      disks: [{ id: 'd1', path: '/d1', format: 'raw' }],
    });
    expect(() => assertNoDuplicateFlags(buildQemuCommand(disk).args)).not.toThrow();
  });
});

describe('qemu-img builders', () => {
  const cases: [string, () => Command, string[]][] = [
    [
      'create qcow2',
      () => qemuImg.create({ path: '/s/a.qcow2', size: 1073741824 }),
      ['create', '-f', 'qcow2', '/s/a.qcow2', '1073741824'],
    ],
    [
      'create raw',
      () => qemuImg.create({ path: '/s/a.img', size: 512, format: 'raw' }),
      ['create', '-f', 'raw', '/s/a.img', '512'],
    ],
    [
      'create overlay',
      () => qemuImg.create({ path: '/s/o.qcow2', backing: { path: '/c/base.qcow2', format: 'qcow2' } }),
      ['create', '-f', 'qcow2', '-b', '/c/base.qcow2', '-F', 'qcow2', '/s/o.qcow2'],
    ],
    [
      'create larger overlay',
      () => qemuImg.create({ path: '/s/o.qcow2', size: 10737418240, backing: { path: '/c/base.img', format: 'raw' } }),
      ['create', '-f', 'qcow2', '-b', '/c/base.img', '-F', 'raw', '/s/o.qcow2', '10737418240'],
    ],
    ['info', () => qemuImg.info('/s/a.qcow2'), ['info', '--output=json', '--force-share', '/s/a.qcow2']],
    [
      'snapshot create',
      () => qemuImg.snapshot({ path: '/s/a.qcow2', op: 'create', name: 'clean' }),
      ['snapshot', '-c', 'clean', '/s/a.qcow2'],
    ],
    ['snapshot list', () => qemuImg.snapshot({ path: '/s/a.qcow2', op: 'list' }), ['snapshot', '-l', '/s/a.qcow2']],
    [
      'snapshot apply',
      () => qemuImg.snapshot({ path: '/s/a.qcow2', op: 'apply', name: 'clean' }),
      ['snapshot', '-a', 'clean', '/s/a.qcow2'],
    ],
    [
      'snapshot delete',
      () => qemuImg.snapshot({ path: '/s/a.qcow2', op: 'delete', name: 'clean' }),
      ['snapshot', '-d', 'clean', '/s/a.qcow2'],
    ],
    [
      'convert',
      () => qemuImg.convert({ src: '/a.img', dst: '/b.qcow2', dstFormat: 'qcow2' }),
      ['convert', '-O', 'qcow2', '/a.img', '/b.qcow2'],
    ],
    [
      'convert with source format',
      () => qemuImg.convert({ src: '/a.vmdk', dst: '/b.img', srcFormat: 'vmdk', dstFormat: 'raw' }),
      ['convert', '-f', 'vmdk', '-O', 'raw', '/a.vmdk', '/b.img'],
    ],
    ['commit', () => qemuImg.commit('/s/o.qcow2'), ['commit', '/s/o.qcow2']],
  ];
  it.each(cases)('%s', (_name, build, args) => {
    expect(build()).toEqual({ file: 'qemu-img', args });
  });

  it('uses the binary given to createQemuImg', () => {
    expect(createQemuImg('/opt/qemu-img').commit('/o.qcow2').file).toBe('/opt/qemu-img');
  });

  const rejected: [string, () => unknown, string][] = [
    ['create without size or backing', () => qemuImg.create({ path: '/a.qcow2' }), 'size'],
    ['zero size', () => qemuImg.create({ path: '/a.qcow2', size: 0 }), 'size'],
    ['fractional size', () => qemuImg.create({ path: '/a.qcow2', size: 1.5 }), 'size'],
    ['flag-like path', () => qemuImg.info('-U'), 'path'],
    ['comma in path', () => qemuImg.create({ path: '/a,b.qcow2', size: 1 }), 'path'],
    [
      'comma in backing',
      () => qemuImg.create({ path: '/a', backing: { path: '/b,c', format: 'qcow2' } }),
      'backing.path',
    ],
    ['bad format', () => qemuImg.create({ path: '/a', size: 1, format: 'vdi' as 'raw' }), 'format'],
    ['snapshot without name', () => qemuImg.snapshot({ path: '/a', op: 'create' }), 'name'],
    ['unknown snapshot op', () => qemuImg.snapshot({ path: '/a', op: 'rename' as 'list' }), 'op'],
    ['flag-like convert source', () => qemuImg.convert({ src: '-n', dst: '/b', dstFormat: 'raw' }), 'src'],
  ];
  it.each(rejected)('rejects %s', (_name, fn, property) => {
    expect(codeOf(fn)).toEqual({ code: 'VALIDATION', property });
  });
});

describe('buildQemuCommand: cloud-init seed', () => {
  it('attaches the seed directory as a read-only vvfat disk labelled cidata, before -daemonize', () => {
    const { args } = buildQemuCommand(launch({ seedDir: '/run/lv/vm1/seed' }));
    const at = args.indexOf('-blockdev');
    expect(args.slice(at, at + 4)).toEqual([
      '-blockdev',
      'driver=vvfat,node-name=seed0,dir=/run/lv/vm1/seed,label=cidata,read-only=on',
      '-device',
      'virtio-blk-pci,drive=seed0',
    ]);
    expect(args.slice(at + 4, at + 7)).toEqual(DAEMON);
    expect(buildQemuCommand(launch()).args).not.toContain('-blockdev');
  });

  it('attaches an ISO seed read-only in preference to the directory, and never as a boot candidate', () => {
    const { args } = buildQemuCommand(launch({ seedDir: '/run/lv/vm1/seed', seedImage: '/run/lv/vm1/seed.iso' }));
    const at = args.indexOf('file=/run/lv/vm1/seed.iso,format=raw,if=none,id=seed0,readonly=on');
    expect(args.slice(at - 1, at + 3)).toEqual([
      '-drive',
      'file=/run/lv/vm1/seed.iso,format=raw,if=none,id=seed0,readonly=on',
      '-device',
      'virtio-blk-pci,drive=seed0',
    ]);
    expect(args).not.toContain('-blockdev');
    expect(args.filter((a) => a.includes('bootindex'))).toEqual([]);
  });

  it('gives only the root disk a bootindex, whatever extra disks and seed come after it', () => {
    const { args } = buildQemuCommand(
      launch({
        boot: { kind: 'disk', image: '/s/root.qcow2', format: 'qcow2' },
        disks: [{ id: 'disk-data', path: '/s/data.qcow2', format: 'qcow2' }],
        seedImage: '/s/seed.iso',
      }),
    );
    expect(args.filter((a) => a.includes('bootindex'))).toEqual(['virtio-blk-pci,drive=root,bootindex=0']);
    expect(
      codeOf(() => buildQemuCommand(launch({ disks: [{ id: 'root', path: '/d.qcow2', format: 'qcow2' }] }))).code,
    ).toBe('VALIDATION');
  });

  it('refuses a seed path whose comma would break the option string, and the seed0 disk id', () => {
    expect(codeOf(() => buildQemuCommand(launch({ seedDir: '/run/a,b/seed' })))).toEqual({
      code: 'VALIDATION',
      property: 'seedDir',
    });
    expect(
      codeOf(() => buildQemuCommand(launch({ disks: [{ id: 'seed0', path: '/d.qcow2', format: 'qcow2' }] }))).code,
    ).toBe('VALIDATION');
  });
});

describe('cloud-init seed ISO', () => {
  it('writes user-data and meta-data into an ISO labelled cidata with the mkisofs flags of each tool', () => {
    expect(seedIsoCommand({ file: '/usr/bin/genisoimage', prefix: [] }, '/vm/seed', '/vm/seed.iso')).toEqual({
      file: '/usr/bin/genisoimage',
      args: [
        '-quiet',
        '-output',
        '/vm/seed.iso',
        '-volid',
        'cidata',
        '-joliet',
        '-rock',
        '/vm/seed/user-data',
        '/vm/seed/meta-data',
      ],
    });
    expect(seedIsoCommand({ file: 'xorriso', prefix: ['-as', 'mkisofs'] }, '/s', '/s.iso').args.slice(0, 2)).toEqual([
      '-as',
      'mkisofs',
    ]);
  });

  it('finds an ISO tool on the configured PATH, or none', () => {
    expect(findIsoTool({ searchPath: '/nonexistent' })).toBeUndefined();
  });
});
