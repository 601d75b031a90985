/**
 * Issue 10, defects 3 and 4: a state dir on a full file system (a real tmpfs, mounted
 * here) must give HOST_FS with the errno and a hint, never INTERNAL; leave no lock file,
 * temp file or empty VM directory behind; and leave an existing VM's record as it was.
 * Needs root (mount); skipped otherwise, except in CI.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKvmProbe, createQemuBackend, type QemuBackend } from '../../src/backends/qemu/index.js';
import { loadConfig, type LocalVmConfig } from '../../src/config.js';
import { isLocalVmError, type LocalVmError } from '../../src/errors.js';
import { acquireFileLock } from '../../src/host/lock.js';
import { createExecaRunner } from '../../src/runner.js';
import { parseVmSpec } from '../../src/schema.js';
import { missingQemuOrTiny, missingRoot } from '../fixtures/tools.js';
import { ensureBuilt, repo } from '../fixtures/build.js';

const skip = missingRoot('mount', 'umount') !== undefined || (await missingQemuOrTiny()) !== undefined;

const runner = createExecaRunner();
const prefix = loadConfig().testPrefix;
const EXISTING = `${prefix}fs-a`;
let mnt: string | undefined;
let mounted = false;
let config: LocalVmConfig;
let backend: QemuBackend;

/** Every file and directory under `dir`, relative, sorted. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      out.push(relative(dir, p) + (e.isDirectory() ? '/' : ''));
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.sort();
}

/** Fills the mount, leaving at most `leaveBytes` (whole blocks) free. */
function fill(leaveBytes: number): void {
  const filler = join(mnt!, 'filler');
  rmSync(filler, { force: true });
  const { bavail, bsize } = statfsSync(mnt!);
  writeFileSync(filler, Buffer.alloc(Math.max(0, bavail - Math.floor(leaveBytes / bsize)) * bsize));
  // tmpfs counts a little differently from statfs's promise: top up block by block.
  while (statfsSync(mnt!).bavail * bsize > leaveBytes) appendFileSync(filler, Buffer.alloc(bsize));
  expect(statfsSync(mnt!).bavail * bsize).toBe(leaveBytes);
}

async function refusal(p: Promise<unknown>): Promise<LocalVmError> {
  try {
    await p;
  } catch (error) {
    if (isLocalVmError(error)) return error;
    throw error;
  }
  throw new Error('expected a HOST_FS error, but it succeeded');
}

const spec = (name: string) => parseVmSpec({ name, image: 'tiny', memory: 128, backend: 'qemu' });

describe.skipIf(skip)('state dir on a full file system (real tmpfs)', () => {
  beforeAll(async () => {
    mnt = mkdtempSync(join(tmpdir(), 'lvm-fullfs-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m,mode=0700', 'tmpfs', mnt]);
    mounted = true;
    config = loadConfig(process.env, { stateDir: join(mnt, 'state'), runDir: join(mnt, 'run'), accel: 'auto' });
    backend = createQemuBackend({ config, runner });
    await backend.create(spec(EXISTING));
    await backend.stop(EXISTING, { force: true });
  });

  afterAll(async () => {
    if (mnt) rmSync(join(mnt, 'filler'), { force: true });
    if (backend) for (const vm of await backend.list().catch(() => [])) await backend.delete(vm.name).catch(() => {});
    // A QEMU just killed may hold the mount for a moment while it exits.
    for (let i = 0; mounted && i < 50; i++) {
      try {
        execFileSync('umount', [mnt!], { stdio: 'pipe' });
        mounted = false;
      } catch (error) {
        if (i === 49) throw error;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    if (mnt) rmSync(mnt, { recursive: true, force: true });
  });

  it('create on a full disk: HOST_FS with ENOSPC and a hint, nothing left behind', async () => {
    fill(0);
    const before = tree(config.stateDir);
    const error = await refusal(backend.create(spec(`${prefix}fs-b`)));
    expect(error.code).toBe('HOST_FS');
    expect(error.details?.errno).toBe('ENOSPC');
    expect(error.hint).toMatch(/free space/);
    expect(error.message).toContain('.lock');
    expect(tree(config.stateDir)).toEqual(before);
  });

  it('start on a full disk: HOST_FS, and the existing record is unchanged', async () => {
    fill(0);
    const record = join(config.stateDir, 'vms', EXISTING, 'vm.json');
    const text = readFileSync(record, 'utf8');
    const before = tree(config.stateDir);
    const error = await refusal(backend.start(EXISTING));
    expect(error.code).toBe('HOST_FS');
    expect(readFileSync(record, 'utf8')).toBe(text);
    expect(tree(config.stateDir)).toEqual(before);
  });

  it('create with room for the lock but not the record: no empty VM directory stays', async () => {
    fill(4096);
    const before = tree(config.stateDir);
    const error = await refusal(backend.create(spec(`${prefix}fs-c`)));
    expect(error.code).toBe('HOST_FS');
    expect(error.message).toContain('vm.json');
    expect(tree(config.stateDir)).toEqual(before);
  });

  it('a lock whose holder record cannot be written is removed, not left forever', async () => {
    fill(0);
    const path = join(config.stateDir, 'locks', 'solo.lock');
    const error = await refusal(acquireFileLock(path, { timeoutMs: 1_000 }));
    expect(error.code).toBe('HOST_FS');
    expect(readdirSync(join(config.stateDir, 'locks'))).not.toContain('solo.lock');
  });

  it('a full cache disk does not fail the KVM probe: the verdict is only not cached', async () => {
    fill(0);
    const probe = createKvmProbe({
      runner,
      cacheDir: join(mnt!, 'cache'),
      kernelRelease: release(),
      qemuBinary: 'qemu-system-x86_64',
    });
    const verdict = await probe();
    expect(typeof verdict.usable).toBe('boolean');
    expect(readdirSync(join(mnt!, 'cache'))).toEqual([]);
  });

  it('the CLI says HOST_FS and exits 8, not INTERNAL ("a bug in localvm")', () => {
    ensureBuilt('dist/cli/main.js');
    fill(0);
    const r = spawnSync(process.execPath, [join(repo, 'dist/cli/main.js'), 'create', `${prefix}fs-cli`], {
      env: { ...process.env, LOCALVM_HOME: config.stateDir, LOCALVM_RUN_DIR: config.runDir },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.stderr).toContain('error [HOST_FS]');
    expect(r.stderr).not.toMatch(/bug in localvm/);
    expect(r.status).toBe(8);
  });

  it('create on a read-only mount: HOST_FS with EROFS, and the record stays readable', async () => {
    rmSync(join(mnt!, 'filler'), { force: true });
    execFileSync('mount', ['-o', 'remount,ro', mnt!]);
    try {
      const error = await refusal(backend.create(spec(`${prefix}fs-ro`)));
      expect(error.code).toBe('HOST_FS');
      expect(error.details?.errno).toBe('EROFS');
      expect(error.hint).toMatch(/read-only/);
      expect((await backend.info(EXISTING)).state).toBe('stopped');
    } finally {
      execFileSync('mount', ['-o', 'remount,rw', mnt!]);
    }
  });
});
