/**
 * Issue 10, defect 6: the run dir (where a VM's control sockets go when its directory path is
 * too long for a unix socket) must be localvm's own. A second, real user pre-creates it (open
 * mode, or a symlink) the way an attacker on a shared machine would; create must refuse with
 * HOST_FS naming the path, and nothing may appear under the other user's directory.
 * Needs root (to make the throwaway user); skipped otherwise, except in CI.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createQemuBackend, socketPaths } from '../../src/backends/qemu/index.js';
import { loadConfig, type LocalVmConfig } from '../../src/config.js';
import { isLocalVmError, type LocalVmError } from '../../src/errors.js';
import { createExecaRunner } from '../../src/runner.js';
import { parseVmSpec } from '../../src/schema.js';
import { missingQemuOrTiny, missingRoot } from '../fixtures/tools.js';

const skip = missingRoot('useradd', 'userdel', 'runuser') !== undefined || (await missingQemuOrTiny()) !== undefined;

const OTHER = `lvm-t6-${process.pid}`;
const runner = createExecaRunner();
const prefix = loadConfig().testPrefix;
let root: string;
let config: LocalVmConfig;
/** Paths the other user made directly in /tmp (sticky, as the default run dir's parent is). */
const planted: string[] = [];
const plant = (what: string) => {
  const path = join('/tmp', `lvm-t6-${process.pid}-${what}`);
  planted.push(path);
  return path;
};

/** Runs argv as the second user (no shell). */
const asOther = (...argv: string[]) => execFileSync('runuser', ['-u', OTHER, '--', ...argv], { stdio: 'pipe' });
const otherUid = () => Number(execFileSync('id', ['-u', OTHER], { encoding: 'utf8' }).trim());

async function refusal(p: Promise<unknown>): Promise<LocalVmError> {
  try {
    await p;
  } catch (error) {
    if (isLocalVmError(error)) return error;
    throw error;
  }
  throw new Error('expected the create to be refused, but it succeeded');
}

describe.skipIf(skip)('run dir owned by someone else (second real user)', () => {
  beforeAll(() => {
    execFileSync('useradd', ['-M', '-r', '-s', '/usr/sbin/nologin', OTHER], { stdio: 'pipe' });
    root = mkdtempSync('/tmp/lvm-t6-');
    chmodSync(root, 0o755);
    // A state dir so deep that the VM dir cannot hold its sockets: they go to the run dir.
    config = loadConfig(process.env, { stateDir: join(root, 's'.repeat(100)), accel: 'auto' });
  });

  afterAll(() => {
    if (root) rmSync(root, { recursive: true, force: true });
    for (const dir of planted) rmSync(dir, { recursive: true, force: true });
    execFileSync('userdel', [OTHER], { stdio: 'pipe' });
  });

  /** Creates `name` with sockets under `runDir`, expects HOST_FS, runs `check` before the VM is deleted. */
  async function expectRefused(runDir: string, name: string, check: (error: LocalVmError) => void): Promise<void> {
    const backend = createQemuBackend({ config: { ...config, runDir }, runner });
    const spec = parseVmSpec({ name, image: 'tiny', memory: 128, backend: 'qemu' });
    expect(socketPaths(join(config.stateDir, 'vms', name), runDir).socketDir).toBeDefined();
    try {
      const error = await refusal(backend.create(spec));
      expect(error.code).toBe('HOST_FS');
      expect(error.hint).toBeTruthy();
      check(error);
    } finally {
      await backend.delete(name);
    }
  }

  it('refuses a run dir another user made with mode 0777, and writes nothing into it', async () => {
    const runDir = plant('open');
    asOther('mkdir', '-m', '0777', runDir);
    expect(statSync(runDir).uid).toBe(otherUid());
    await expectRefused(runDir, `${prefix}t6-open`, (error) => {
      expect(error.message).toContain(runDir);
      expect(readdirSync(runDir)).toEqual([]);
    });
  });

  it('refuses a run dir that is another user’s symlink, even to a private directory of ours', async () => {
    const target = join(root, 'ours');
    mkdirSync(target, { mode: 0o700 });
    const runDir = plant('link');
    asOther('ln', '-s', target, runDir);
    await expectRefused(runDir, `${prefix}t6-link`, (error) => {
      expect(error.message).toContain(runDir);
      expect(readdirSync(target)).toEqual([]);
    });
  });

  it('refuses a run dir of ours that everyone may write to', async () => {
    const runDir = join(root, 'run-ours-open');
    mkdirSync(runDir);
    chmodSync(runDir, 0o777);
    await expectRefused(runDir, `${prefix}t6-ours`, (error) => {
      expect(error.message).toContain(runDir);
      expect(readdirSync(runDir)).toEqual([]);
    });
  });

  it('refuses a socket dir another user made inside our run dir', async () => {
    const runDir = join(root, 'run-squat');
    mkdirSync(runDir, { mode: 0o755 });
    const name = `${prefix}t6-squat`;
    const { socketDir } = socketPaths(join(config.stateDir, 'vms', name), runDir);
    execFileSync('install', ['-d', '-m', '0700', '-o', OTHER, socketDir!]);
    await expectRefused(runDir, name, (error) => {
      expect(error.message).toContain(socketDir);
      expect(readdirSync(socketDir!)).toEqual([]);
    });
  });
});
