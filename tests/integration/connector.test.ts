/**
 * The Connector API on the suite's shared worker VM (localvm/vitest's worker fixture): this
 * file boots no VM of its own, it uses the one its vitest worker already has.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import { vmTest as test } from '../../src/vitest/index.js';
import { isLocalVmError } from '../../src/errors.js';
import { missingTools } from '../fixtures/tools.js';

const skip = missingTools('qemu-system-x86_64', 'qemu-img');
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe.skipIf(skip)('Connector on the worker VM', () => {
  test('the worker VM carries the test prefix', ({ vmName }) => {
    expect(vmName.startsWith(process.env.LOCALVM_TEST_PREFIX ?? 'pytest-test-')).toBe(true);
  });

  test('exec passes argv without a shell: metacharacters arrive as plain bytes', async ({ vm }) => {
    const hostile = '$(reboot); rm -rf / `id` | cat';
    const r = await vm.exec(['printf', '%s', hostile]);
    expect(r).toMatchObject({ exitCode: 0, stdout: hostile, stderr: '' });
  });

  test('shell runs a script with env, cwd and stdin, and reports exit code and stderr', async ({ vm }) => {
    const r = await vm.shell('cd "$PWD" && printf "%s:%s:" "$GREETING" "$(pwd)" && cat && echo bad >&2 && exit 7', {
      env: { GREETING: 'hello' },
      cwd: '/proc',
      stdin: 'from stdin',
    });
    expect({ code: r.exitCode, out: r.stdout, err: r.stderr }).toEqual({
      code: 7,
      out: 'hello:/proc:from stdin',
      err: 'bad\n',
    });
  });

  test('putLocalFile/getLocalFile move a binary file byte-exactly and apply its mode', async ({ vm }) => {
    const dir = await mkdtemp(join(tmpdir(), 'lvm-conn-'));
    try {
      const data = randomBytes(300 * 1024);
      await writeFile(join(dir, 'in.bin'), data);
      await vm.putLocalFile(join(dir, 'in.bin'), '/tmp/conn.bin', { mode: 0o600 });
      expect((await vm.exec(['stat', '-c', '%a %s', '/tmp/conn.bin'])).stdout.trim()).toBe(`600 ${data.length}`);
      await vm.getLocalFile('/tmp/conn.bin', join(dir, 'out.bin'));
      expect(sha(await readFile(join(dir, 'out.bin')))).toBe(sha(data));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('reading a missing guest file fails with a LocalVmError, and the VM keeps working', async ({ vm }) => {
    const error = await vm.getFile('/nonexistent/file').catch((e: unknown) => e);
    expect(isLocalVmError(error)).toBe(true);
    expect((await vm.exec(['true'])).exitCode).toBe(0);
  });
});
