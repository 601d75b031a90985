/**
 * `kernel` with `image` on real QEMU (issue 11): the image becomes the root disk (/dev/vda)
 * and the kernel boots with it, `root=` defaulted from the image's layout: a raw ext4 file
 * system (read directly) gets root=/dev/vda, a partitioned qcow2 (read through qemu-io)
 * root=/dev/vda1. tiny's kernel and initramfs boot them (tiny runs from its initramfs, so the
 * root disk is mounted by hand to see the image's own file). An image whose layout cannot be
 * told, without root=, is refused before anything is made.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, truncateSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findTinyImage, type TinyImage } from '../../src/backends/qemu/image/index.js';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { realClock, type OperationContext } from '../../src/context.js';
import { planCreateVm } from '../../src/operations/plan.js';
import { createTemplate, deleteTemplate } from '../../src/operations/template.js';
import { createVm, deleteVm, findVm, listVms, vmInfo, waitForVmReady } from '../../src/operations/vm.js';
import { createExecaRunner } from '../../src/runner.js';
import { rejection } from '../fixtures/rejection.js';
import { missingQemuOrTiny, missingTools } from '../fixtures/tools.js';

const skip = (await missingQemuOrTiny()) !== undefined || missingTools('mkfs.ext4', 'sfdisk', 'qemu-io') !== undefined;

describe.skipIf(skip)('kernel with image: the image is the root disk (real QEMU)', () => {
  let dir: string;
  let ctx: OperationContext;
  let tiny: TinyImage;
  const sh = async (vm: string, script: string) => (await connect(vm, ctx)).shell(script);
  const boot = () => ({ kernel: tiny.kernel, initrd: tiny.initrd, append: tiny.append, memory: 128 });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lvm-kri-'));
    ctx = {
      config: loadConfig({ ...process.env, LOCALVM_HOME: join(dir, 'home') }),
      runner: createExecaRunner(),
      clock: realClock,
    };
    tiny = (await findTinyImage(ctx.config)) as TinyImage;
    // A bare ext4 file system holding one file of its own.
    mkdirSync(join(dir, 'content'));
    writeFileSync(join(dir, 'content', 'marker'), 'from-the-image\n');
    writeFileSync(join(dir, 'fs.raw'), '');
    truncateSync(join(dir, 'fs.raw'), 16 * 1024 * 1024);
    execFileSync('mkfs.ext4', ['-q', '-F', '-d', join(dir, 'content'), join(dir, 'fs.raw')]);
    // A partitioned disk, as a qcow2.
    writeFileSync(join(dir, 'part.raw'), '');
    truncateSync(join(dir, 'part.raw'), 16 * 1024 * 1024);
    execFileSync('sfdisk', ['-q', join(dir, 'part.raw')], { input: 'label: dos\nstart=2048, type=83\n' });
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', join(dir, 'part.raw'), join(dir, 'part.qcow2')]);
    writeFileSync(join(dir, 'blank.raw'), '');
    truncateSync(join(dir, 'blank.raw'), 16 * 1024 * 1024);
  });

  afterAll(async () => {
    for (const v of await listVms(ctx).catch(() => [])) await deleteVm(v.name, ctx).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('a bare file system: root=/dev/vda, the guest reads the image as /dev/vda', async () => {
    const image = join(dir, 'fs.raw');
    const plan = await planCreateVm({ name: 'kri-fs', image, ...boot() }, ctx);
    const launch = plan.steps.find((s) => s.command?.args.includes('-kernel'))?.command?.args ?? [];
    expect(launch[launch.indexOf('-append') + 1]).toBe(`${tiny.append} root=/dev/vda`);
    expect(launch).toContain('virtio-blk-pci,drive=root');

    await createVm({ name: 'kri-fs', image, ...boot() }, ctx);
    await waitForVmReady('kri-fs', {}, ctx);
    expect((await vmInfo('kri-fs', ctx)).image).toBe(image);
    const r = await sh(
      'kri-fs',
      // tiny loads virtio_blk and ext4 in the background after its agent answers: wait for them.
      'cat /proc/cmdline; i=0; until grep -q ext4 /proc/filesystems && [ -b /dev/vda ] || [ $i -ge 200 ]; do sleep 0.1; i=$((i+1)); done; mkdir -p /mnt/r && mount -t ext4 /dev/vda /mnt/r && cat /mnt/r/marker',
    );
    expect(r.stdout).toContain('root=/dev/vda\n');
    expect(r.stdout, r.stderr).toContain('from-the-image\n');
  });

  it('a partitioned qcow2: root=/dev/vda1, read through qemu-io; a given root= is kept', async () => {
    const image = join(dir, 'part.qcow2');
    await createVm({ name: 'kri-part', image, ...boot() }, ctx);
    await waitForVmReady('kri-part', {}, ctx);
    const r = await sh(
      'kri-part',
      'cat /proc/cmdline; i=0; until [ -b /dev/vda1 ] || [ $i -ge 200 ]; do sleep 0.1; i=$((i+1)); done; ls /sys/block/vda',
    );
    expect(r.stdout).toContain('root=/dev/vda1\n');
    expect(r.stdout).toContain('vda1');
    const own = await planCreateVm({ name: 'kri-own', image, ...boot(), append: 'console=ttyS0 root=/dev/vdz9' }, ctx);
    const args = own.steps.find((s) => s.command?.args.includes('-kernel'))?.command?.args ?? [];
    expect(args[args.indexOf('-append') + 1]).toBe('console=ttyS0 root=/dev/vdz9');
  });

  it('a template of it: clones boot the same kernel on overlays of the frozen root disk', async () => {
    await createTemplate({ name: 'kri-t', spec: { image: join(dir, 'fs.raw'), ...boot() } }, ctx);
    await createVm({ name: 'kri-clone', template: 'kri-t' }, ctx);
    await waitForVmReady('kri-clone', {}, ctx);
    const r = await sh(
      'kri-clone',
      'cat /proc/cmdline; mkdir -p /mnt/r && mount -t ext4 /dev/vda /mnt/r && cat /mnt/r/marker',
    );
    expect(r.stdout, r.stderr).toBe(`${tiny.append} root=/dev/vda\nfrom-the-image\n`);
    await deleteVm('kri-clone', ctx);
    expect(await deleteTemplate('kri-t', ctx)).toEqual({ deleted: true });
  });

  it('an image whose layout cannot be told, without root=: VALIDATION naming append, nothing made', async () => {
    const e = await rejection(createVm({ name: 'kri-blank', image: join(dir, 'blank.raw'), ...boot() }, ctx));
    expect(e.code).toBe('VALIDATION');
    expect(e.issues?.[0]?.property).toBe('append');
    expect(e.hint).toContain('root=/dev/vda1');
    expect(await findVm('kri-blank', ctx)).toBeUndefined();
  });
});
