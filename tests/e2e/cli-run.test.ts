/**
 * `localvm run` through the built CLI on real QEMU: a one-shot sandbox from a template
 * exits with the job's exit code, prints its output, writes what it collected, exits 4 on
 * a timeout, and leaves no VM behind either way; `localvm pool list` then shows nothing.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, repo } from '../fixtures/build.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';

const cli = join(repo, 'dist/cli/main.js');
const skip = (await missingQemuOrTiny()) !== undefined;

describe.skipIf(skip)('localvm run (real QEMU)', () => {
  const home = mkdtempSync(join(tmpdir(), 'localvm-cli-run-'));
  const env = { ...process.env, LOCALVM_HOME: join(home, 'state'), LOCALVM_RUN_DIR: join(home, 'run') };
  const localvm = (args: string[]) => {
    const r = spawnSync(process.execPath, [cli, ...args], { env, cwd: home, encoding: 'utf8', timeout: 240_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const vms = () => JSON.parse(localvm(['list', '--json']).stdout) as { name: string }[];

  beforeAll(() => {
    ensureBuilt('dist/cli/main.js');
    const t = localvm(['template', 'create', 'runtpl', '--memory', '128']);
    expect(t.code, t.stderr).toBe(0);
  }, 300_000);
  afterAll(() => {
    for (const v of vms()) localvm(['delete', v.name]);
    localvm(['template', 'delete', 'runtpl']);
    rmSync(home, { recursive: true, force: true });
  });

  it("exits with the job's code, prints its output, writes what it collected, leaves no VM", () => {
    writeFileSync(join(home, 'in.txt'), 'from the host\n');
    const r = localvm([
      'run',
      '--template',
      'runtpl',
      '--file',
      `${join(home, 'in.txt')}:/job/in.txt`,
      '--collect',
      '/job/out/:collected',
      '--',
      '/bin/sh',
      '-c',
      'cat /job/in.txt; mkdir -p /job/out/sub; echo r > /job/out/sub/r.txt; echo oops >&2; exit 3',
    ]);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stdout).toBe('from the host\n');
    expect(r.stderr).toContain('oops');
    expect(readFileSync(join(home, 'collected/sub/r.txt'), 'utf8')).toBe('r\n');
    expect(vms()).toEqual([]);
  });

  it('exits 4 when the job runs past --timeout, and its VM is gone', () => {
    const r = localvm(['run', '--template', 'runtpl', '--timeout', '1s', '--', 'sleep', '100']);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain('ran longer than its timeout');
    expect(vms()).toEqual([]);
    expect(localvm(['pool', 'list']).stdout).toBe('no pool VMs\n');
  });

  it('refuses a relative collect path with VALIDATION (2) before any VM is made', () => {
    const r = localvm(['run', '--template', 'runtpl', '--collect', 'job/out', '--', 'true']);
    expect(r.code).toBe(2);
    expect(vms()).toEqual([]);
  });
});
