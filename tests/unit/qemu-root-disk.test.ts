/**
 * `kernel` with `image` (issue 11): the image is the root disk and the kernel boots it. The
 * layout verdict runs on real qemu-io hex dumps (tests/fixtures/captured/README.md says how
 * each was made); the root= default, the qemu-io argv and the QEMU command line are tables.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildQemuCommand, type QemuLaunch } from '../../src/backends/qemu/cmdline.js';
import { bootFiles } from '../../src/backends/qemu/kernelRoot.js';
import { launchFor } from '../../src/backends/qemu/layout.js';
import {
  hasRoot,
  parseQemuIoHex,
  qemuIoHead,
  rootAppend,
  rootLayout,
  ROOT_HEAD_BYTES,
} from '../../src/backends/qemu/rootDisk.js';
import { bootFilesOf } from '../../src/backends/qemu/template/store.js';
import { parseVmSpec } from '../../src/schema.js';
import { codeOfSync } from '../fixtures/rejection.js';
import { qemuLaunch } from '../fixtures/qemuLaunch.js';

const captured = (file: string) => readFileSync(join(import.meta.dirname, '../fixtures/captured', file), 'utf8');

describe('qemu-io hex dumps', () => {
  it('parses the bytes at their offsets, ignoring the ascii column and the summary lines', () => {
    const bytes = parseQemuIoHex(captured('qemu-io-part-head.txt'));
    expect(bytes.length).toBe(2048);
    expect([bytes[510], bytes[511]]).toEqual([0x55, 0xaa]);
    expect(bytes[446 + 4]).toBe(0x83); // a Linux partition
    expect(parseQemuIoHex('read 0/0 bytes at offset 0\n')).toEqual(Buffer.alloc(0));
  });
});

describe('rootLayout', () => {
  it.each([
    ['a bare ext4 file system (mkfs.ext4 on the whole image)', 'qemu-io-fs-head.txt', 'filesystem'],
    ['an MBR with one Linux partition (sfdisk)', 'qemu-io-part-head.txt', 'partitioned'],
    ['a GPT (sfdisk label: gpt)', 'qemu-io-gpt-head.txt', 'partitioned'],
    [
      "the Debian agent image's qcow2 (debootstrap, MBR, root in partition 1)",
      'qemu-io-debian-agent-head.txt',
      'partitioned',
    ],
  ])('%s', (_what, file, layout) => {
    expect(rootLayout(parseQemuIoHex(captured(file)))).toBe(layout);
  });

  it('is unknown for a blank disk, and for a boot sector that is not a partition table', () => {
    expect(rootLayout(Buffer.alloc(ROOT_HEAD_BYTES))).toBe('unknown');
    const fat = Buffer.alloc(2048);
    fat.set([0xeb, 0x3c, 0x90], 0);
    fat.fill(0x41, 446, 510); // boot code where an MBR keeps its entries
    fat.set([0x55, 0xaa], 510);
    expect(rootLayout(fat)).toBe('unknown');
  });
});

describe('rootAppend', () => {
  it.each([
    ['keeps the user root=', 'console=ttyS0 root=/dev/vdb2 rw', 'partitioned', 'console=ttyS0 root=/dev/vdb2 rw'],
    ['keeps root= even for an unknown layout', 'root=LABEL=x', 'unknown', 'root=LABEL=x'],
    ['partition 1 of a partitioned disk', 'console=ttyS0', 'partitioned', 'console=ttyS0 root=/dev/vda1'],
    ['the whole disk for a bare file system', 'console=ttyS0', 'filesystem', 'console=ttyS0 root=/dev/vda'],
    ['no append at all', undefined, 'partitioned', 'root=/dev/vda1'],
    ['a word merely containing root=', 'myroot=x', 'filesystem', 'myroot=x root=/dev/vda'],
  ] as const)('%s', (_what, append, layout, want) => {
    expect(rootAppend(append, layout, '/i.raw')).toBe(want);
  });

  it('refuses to guess when the layout is unknown, naming append and saying why', () => {
    expect(codeOfSync(() => rootAppend('console=ttyS0', 'unknown', '/i.raw', 'the image is not downloaded yet'))).toBe(
      'VALIDATION',
    );
    try {
      rootAppend('console=ttyS0', 'unknown', '/i.raw', 'the image is not downloaded yet');
    } catch (e) {
      expect((e as { issues: { property: string; reason: string }[] }).issues[0]).toEqual({
        property: 'append',
        reason: 'needs root=… (the image is not downloaded yet)',
      });
    }
    expect(hasRoot(' root=/dev/vda')).toBe(true);
    expect(hasRoot('noroot=1')).toBe(false);
  });
});

describe('qemuIoHead', () => {
  it('reads read-only and beside running VMs (-r -U), the path one argv element', () => {
    expect(qemuIoHead('/img/a b.qcow2', 'qcow2', 4096)).toEqual({
      file: 'qemu-io',
      args: ['-r', '-U', '-f', 'qcow2', '-c', 'read -v 0 4096', '/img/a b.qcow2'],
    });
    expect(codeOfSync(() => qemuIoHead('-f', 'qcow2', 1))).toBe('VALIDATION');
    expect(codeOfSync(() => qemuIoHead('/a,b', 'qcow2', 1))).toBe('VALIDATION');
  });
});

const paths = { dir: '/s', qmpSocket: '/s/q', qgaSocket: '/s/g', consoleLog: '/s/c', pidFile: '/s/p' };
const launch = (boot: QemuLaunch['boot']): QemuLaunch => ({ ...qemuLaunch({ boot }), paths });
const valueOf = (args: string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);

describe('buildQemuCommand: a kernel with the image as its root disk', () => {
  it.each([
    [
      'kernel, initrd and append on a disk boot',
      { kernel: '/k/vmlinuz', initrd: '/k/initrd', append: 'console=ttyS0 root=/dev/vda1' },
      { '-kernel': ['/k/vmlinuz'], '-initrd': ['/k/initrd'], '-append': ['console=ttyS0 root=/dev/vda1'] },
    ],
    ['a kernel alone', { kernel: '/k/vmlinuz' }, { '-kernel': ['/k/vmlinuz'], '-initrd': [], '-append': [] }],
    ['no kernel: the disk boots itself', undefined, { '-kernel': [], '-initrd': [], '-append': [] }],
  ] as const)('%s', (_what, kernel, flags) => {
    const { args } = buildQemuCommand(
      launch({ kind: 'disk', image: '/s/root.qcow2', format: 'qcow2', ...(kernel ? { kernel } : {}) }),
    );
    for (const [flag, values] of Object.entries(flags)) expect(valueOf(args, flag)).toEqual(values);
    // The image is still the root disk, the first virtio disk (/dev/vda); it is the boot
    // candidate only without a kernel (with -kernel QEMU's linuxboot ROM holds bootindex 0).
    expect(valueOf(args, '-drive')[0]).toBe('file=/s/root.qcow2,format=qcow2,if=none,id=root');
    expect(valueOf(args, '-device')[0]).toBe(
      kernel ? 'virtio-blk-pci,drive=root' : 'virtio-blk-pci,drive=root,bootindex=0',
    );
  });

  it('refuses a comma in the kernel path, naming it', () => {
    const bad = launch({ kind: 'disk', image: '/s/root.qcow2', format: 'qcow2', kernel: { kernel: '/k,x' } });
    expect(codeOfSync(() => buildQemuCommand(bad))).toBe('VALIDATION');
  });

  it('a record with such a boot launches with it, and needs its kernel, initrd and disk', () => {
    const boot = {
      kind: 'disk' as const,
      image: '/s/vms/a/root.qcow2',
      format: 'qcow2' as const,
      kernel: { kernel: '/k/vmlinuz', initrd: '/k/initrd', append: 'root=/dev/vda' },
    };
    const l = launchFor(
      {
        name: 'a',
        spec: parseVmSpec({ name: 'a' }),
        arch: 'x86_64',
        boot,
        disks: [],
        paths: { ...paths, record: '/s/r', overlay: '/s/o' },
      },
      'tcg',
      undefined,
    );
    expect(l.boot).toEqual(boot);
    expect(bootFiles(boot)).toEqual(['/k/vmlinuz', '/k/initrd', '/s/vms/a/root.qcow2']);
    expect(bootFiles({ kind: 'kernel', kernel: '/k/v' })).toEqual(['/k/v']);
    // A template of it depends on the kernel files and the user's image.
    expect(bootFilesOf(parseVmSpec({ name: 'a', image: '/img/d.qcow2', kernel: '/k/vmlinuz' }), boot)).toEqual([
      '/k/vmlinuz',
      '/k/initrd',
      '/img/d.qcow2',
    ]);
  });
});
