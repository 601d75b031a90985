/**
 * A create whose readiness wait fails, through the built CLI against real QEMU (issue 10,
 * defect 8): the VM is kept (a first boot may just be slow) and the error says so, with the
 * commands to look at it and to delete it; `--json` carries `vm` and `details.left`.
 * Also: a LOCALVM_HOME that is a file is a usage error naming it (defect 5).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, repo } from '../fixtures/build.js';
import { missingTools } from '../fixtures/tools.js';

const cli = join(repo, 'dist/cli/main.js');
const skip = missingTools('qemu-system-x86_64');

describe.skipIf(skip)('localvm create that is not ready in time (real QEMU)', () => {
  const home = mkdtempSync(join(tmpdir(), 'localvm-cli-kept-'));
  const env = { ...process.env, LOCALVM_HOME: join(home, 'state'), LOCALVM_RUN_DIR: join(home, 'run') };
  const tag = randomBytes(2).toString('hex');
  const localvm = (args: string[], extraEnv: NodeJS.ProcessEnv = {}) => {
    const r = spawnSync(process.execPath, [cli, ...args], {
      env: { ...env, ...extraEnv },
      encoding: 'utf8',
      timeout: 240_000,
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const listed = () =>
    (JSON.parse(localvm(['list', '--json']).stdout) as { name: string; state: string }[]).map((v) => [v.name, v.state]);

  beforeAll(() => ensureBuilt('dist/cli/main.js'), 300_000);
  afterAll(() => {
    for (const [name] of listed()) localvm(['delete', name!]);
    rmSync(home, { recursive: true, force: true });
  });

  it('exits 4 (TIMEOUT), keeps the VM running and says how to inspect or delete it', () => {
    const name = `kept-${tag}`;
    const r = localvm(['create', name, '--ready-timeout', '50ms']);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toMatch(/error \[TIMEOUT\]: VM .* was not ready after 50 ms/);
    expect(r.stderr).toContain(`${name} is kept and still running`);
    expect(r.stderr).toContain(`localvm console ${name}`);
    expect(r.stderr).toContain(`localvm delete ${name}`);
    expect(r.stderr).not.toMatch(/\d\.\d+ ?ms/);
    expect(listed()).toContainEqual([name, 'running']);
    expect(localvm(['delete', name]).code).toBe(0);
  });

  it('with --json the error carries the VM and what was left', () => {
    const name = `kept-json-${tag}`;
    const r = localvm(['create', name, '--ready-timeout', '0.05s', '--json']);
    expect(r.code, r.stderr).toBe(4);
    // Progress lines come first on stderr; the error is the last line.
    const { error } = JSON.parse(r.stderr.trim().split('\n').at(-1) ?? '') as { error: Record<string, unknown> };
    expect(error).toMatchObject({ code: 'TIMEOUT', vm: name, details: { left: 'running', timeoutMs: 50 } });
    expect(listed()).toContainEqual([name, 'running']);
    expect(localvm(['delete', name]).code).toBe(0);
  });

  it('refuses a bad --ready-timeout as a usage error, before anything is made', () => {
    for (const bad of ['soon', '-5s', '1.5ms', '2h']) {
      const r = localvm(['create', `bad-${tag}`, '--ready-timeout', bad]);
      expect(r.code, `${bad}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(/ready-timeout/);
    }
    expect(listed().map(([n]) => n)).not.toContain(`bad-${tag}`);
  });

  it('refuses a LOCALVM_HOME that is a file with exit 2 naming LOCALVM_HOME, for list and create', () => {
    const file = join(home, 'a-file');
    writeFileSync(file, '');
    for (const args of [['list'], ['create', `x-${tag}`], ['create', `x-${tag}`, '--dry-run']]) {
      const r = localvm(args, { LOCALVM_HOME: file });
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toContain('error [VALIDATION]: invalid LOCALVM_HOME');
    }
  });
});
