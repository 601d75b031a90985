import { chmodSync, lstatSync, mkdirSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isLocalVmError, type LocalVmError } from '../../src/errors.js';
import { mkdirPrivate, pathChain, privateDirExists } from '../../src/host/privateDir.js';
import { testTempDir } from '../fixtures/tempDir.js';

async function refusal(p: Promise<unknown>): Promise<LocalVmError> {
  try {
    await p;
  } catch (error) {
    if (isLocalVmError(error)) return error;
    throw error;
  }
  throw new Error('expected HOST_FS, but it resolved');
}

describe('pathChain', () => {
  it('lists every directory from the root down', () => {
    expect(pathChain('/a/b/c')).toEqual(['/', '/a', '/a/b', '/a/b/c']);
    expect(pathChain('/')).toEqual(['/']);
  });
});

describe('mkdirPrivate', () => {
  it('creates missing directories with mode 0700, and accepts them again', async () => {
    const root = testTempDir('lvm-priv-');
    const dir = join(root, 'a', 'b');
    await mkdirPrivate(dir);
    expect(statSync(join(root, 'a')).mode & 0o777).toBe(0o700);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    await mkdirPrivate(dir);
    expect(await privateDirExists(dir)).toBe(true);
    expect(await privateDirExists(join(root, 'absent'))).toBe(false);
  });

  it('refuses a symlink in place of the directory, even to a private one', async () => {
    const root = testTempDir('lvm-priv-');
    mkdirSync(join(root, 'real'), { mode: 0o700 });
    symlinkSync(join(root, 'real'), join(root, 'link'));
    const error = await refusal(mkdirPrivate(join(root, 'link')));
    expect(error.code).toBe('HOST_FS');
    expect(error.message).toContain(join(root, 'link'));
    expect(error.message).toMatch(/symbolic link/);
    expect(lstatSync(join(root, 'link')).isSymbolicLink()).toBe(true);
  });

  it('refuses a directory others may write to, and creates nothing below a writable ancestor', async () => {
    const root = testTempDir('lvm-priv-');
    const open = join(root, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    expect((await refusal(mkdirPrivate(open))).code).toBe('HOST_FS');
    const error = await refusal(mkdirPrivate(join(open, 'sub', 'leaf')));
    expect(error.details?.path).toBe(open);
    expect(error.hint).toMatch(/chmod go-w/);
    expect(readdirSync(open)).toEqual([]);
  });

  it('tightens a directory of ours that others may only read to 0700', async () => {
    const root = testTempDir('lvm-priv-');
    const dir = join(root, 'cache');
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    await mkdirPrivate(dir);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
  });

  it('accepts a sticky world-writable ancestor (like /tmp) but not a file in the path', async () => {
    const root = testTempDir('lvm-priv-');
    const sticky = join(root, 'sticky');
    mkdirSync(sticky);
    chmodSync(sticky, 0o1777);
    await mkdirPrivate(join(sticky, 'mine'));
    writeFileSync(join(root, 'file'), '');
    const error = await refusal(mkdirPrivate(join(root, 'file', 'x')));
    expect(error.code).toBe('HOST_FS');
    expect(error.message).toMatch(/not a directory/);
  });
});
