/**
 * Hostile input at the public boundary against a real guest (issue 10, defect 5): each is a
 * VALIDATION error naming the field, raised before anything reaches the guest or the disk.
 * Uses the suite's shared worker VM (localvm/vitest's fixture), like connector.test.ts.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readSync, closeSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import { checkImageBytes, IMAGE_HEAD_BYTES } from '../../src/backends/qemu/imageCheck.js';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { isLocalVmError, type ValidationIssue } from '../../src/errors.js';
import { planCreateVm } from '../../src/operations/plan.js';
import { createVm, deleteVm } from '../../src/operations/vm.js';
import { vmTest as test } from '../../src/vitest/index.js';
import { testTempDir } from '../fixtures/tempDir.js';
import { missingTools, which } from '../fixtures/tools.js';

const skip = missingTools('qemu-system-x86_64', 'qemu-img');

/** The verdict of imageCheck.ts on a real file's first bytes. */
function verdictOf(path: string) {
  const head = Buffer.alloc(IMAGE_HEAD_BYTES);
  const fd = openSync(path, 'r');
  try {
    return checkImageBytes(head.subarray(0, readSync(fd, head, 0, head.length, 0)), statSync(path).size);
  } finally {
    closeSync(fd);
  }
}

async function refusal(p: Promise<unknown>): Promise<{ code: string; message: string; issues?: ValidationIssue[] }> {
  const error = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isLocalVmError(error), String(error)).toBe(true);
  return error as { code: string; message: string; issues?: ValidationIssue[] };
}

async function validationProperties(p: Promise<unknown>): Promise<string[]> {
  const error = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isLocalVmError(error, 'VALIDATION'), String(error)).toBe(true);
  return (error as { issues: ValidationIssue[] }).issues.map((i) => i.property);
}

describe.skipIf(skip)('hostile input (real QEMU)', () => {
  test('exec env names are validated; values with "=" still arrive whole', async ({ vmName }) => {
    const vm = await connect(vmName);
    expect(await validationProperties(vm.exec(['env'], { env: { 'A=B': 'c' } }))).toEqual(['env.A=B']);
    expect(await validationProperties(vm.exec(['env'], { env: { '-i': 'x' } }))).toEqual(['env.-i']);
    const r = await vm.exec(['env'], { env: { A: 'B=c' } });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.split('\n')).toContain('A=B=c');
  });

  test('exec user, timeout, cwd and argv are validated', async ({ vmName }) => {
    const vm = await connect(vmName);
    expect(await validationProperties(vm.exec(['id'], { user: '-c' }))).toEqual(['user']);
    expect(await validationProperties(vm.exec(['sleep', '5'], { timeoutMs: -1 }))).toEqual(['timeoutMs']);
    expect(await validationProperties(vm.exec(['pwd'], { cwd: 'tmp' }))).toEqual(['cwd']);
    expect(await validationProperties(vm.exec('ls' as unknown as string[]))).toEqual(['argv']);
  });

  test('a spec with 20,000 labels is refused before a VM directory is made', async () => {
    const name = `hostile-${randomBytes(3).toString('hex')}`;
    const labels = Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, 'v'.repeat(256)]));
    try {
      expect(await validationProperties(createVm({ name, backend: 'qemu', labels }))).toEqual(['labels']);
      expect(existsSync(join(loadConfig().stateDir, 'vms', name))).toBe(false);
    } finally {
      // Only if validation failed to stop it: no VM may outlive the test.
      await deleteVm(name);
    }
  });

  test('an image that is not a disk image is refused, naming image and saying what it is', async () => {
    const root = testTempDir('localvm-hostile-');
    const textDisk = join(root, 'notes.img');
    // Disk-sized and sector-aligned, but text: only its content says it is no disk.
    writeFileSync(textDisk, 'not a disk\n'.repeat(1000));
    truncateSync(textDisk, 2 * 1024 * 1024);
    const dir = join(root, 'a-directory');
    mkdirSync(dir);
    const cases: [string, RegExp][] = [
      ['/etc/passwd', /is not a disk image: found a text file of \d+ bytes/],
      [textDisk, /is not a disk image: found no partition table or known file system \(a text file\)/],
      [dir, /is a directory$/],
      ['/dev/zero', /is a character device, not a disk image file$/],
    ];
    for (const [image, message] of cases) {
      const name = `hostile-${randomBytes(3).toString('hex')}`;
      try {
        const error = await refusal(createVm({ name, backend: 'qemu', image }));
        expect(error.code, error.message).toBe('VALIDATION');
        expect(error.message).toMatch(message);
        expect(error.issues?.map((i) => i.property)).toEqual(['image']);
        expect(existsSync(join(loadConfig().stateDir, 'vms', name))).toBe(false);
        // --dry-run refuses it the same way
        expect((await refusal(planCreateVm({ name, backend: 'qemu', image }))).code).toBe('VALIDATION');
      } finally {
        await deleteVm(name);
      }
    }
  });

  test('kernel and initrd that are not regular files say what they are, naming the field', async () => {
    const name = `hostile-${randomBytes(3).toString('hex')}`;
    try {
      const kernel = await refusal(createVm({ name, backend: 'qemu', kernel: '/dev/zero' }));
      expect([kernel.code, kernel.message]).toEqual([
        'VALIDATION',
        'kernel /dev/zero is a character device, not a regular file',
      ]);
      expect(kernel.issues?.map((i) => i.property)).toEqual(['kernel']);
      const initrd = await refusal(createVm({ name, backend: 'qemu', kernel: '/etc/hostname', initrd: '/tmp' }));
      expect([initrd.code, initrd.message]).toEqual(['VALIDATION', 'initrd /tmp is a directory']);
      expect(existsSync(join(loadConfig().stateDir, 'vms', name))).toBe(false);
    } finally {
      await deleteVm(name);
    }
  });

  test('real disk images are accepted: qcow2 and blank raw by qemu-img, ext4 by mke2fs', async () => {
    const root = testTempDir('localvm-hostile-');
    const images: [string, 'qcow2' | 'raw'][] = [];
    const qcow2 = join(root, 'disk.img');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2, '64M']);
    images.push([qcow2, 'qcow2']);
    const blank = join(root, 'blank.raw');
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', blank, '8M']);
    images.push([blank, 'raw']);
    if (which('mke2fs')) {
      const ext4 = join(root, 'fs.ext4');
      writeFileSync(ext4, '');
      truncateSync(ext4, 8 * 1024 * 1024);
      execFileSync('mke2fs', ['-q', '-t', 'ext4', '-F', ext4]);
      images.push([ext4, 'raw']);
    }
    for (const [image, format] of images) {
      expect(verdictOf(image)).toMatchObject({ ok: true, format });
      const plan = await planCreateVm({ name: `hostile-ok-${randomBytes(3).toString('hex')}`, backend: 'qemu', image });
      const overlay = plan.steps.find((s) => s.command?.args.includes('-b'))?.command?.args ?? [];
      expect(overlay[overlay.indexOf('-F') + 1], image).toBe(format);
    }
  });

  test('LOCALVM_HOME pointing at a file is VALIDATION naming LOCALVM_HOME, for list and create alike', async () => {
    const root = testTempDir('localvm-hostile-');
    const file = join(root, 'a-file');
    writeFileSync(file, '');
    for (const home of [file, join(file, 'below')]) {
      const error = await refusal((async () => loadConfig({ ...process.env, LOCALVM_HOME: home }))());
      expect(error.code, error.message).toBe('VALIDATION');
      expect(error.issues?.map((i) => i.property)).toEqual(['LOCALVM_HOME']);
    }
  });
});
