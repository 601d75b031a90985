/**
 * Delete removes everything of a VM (issue 10, defect 3): its directory, its socket dir and
 * every lock file — including the guest-agent lock that a CLI process exiting while its
 * agent connection lingered leaves behind with a dead holder.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, repo } from '../fixtures/build.js';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { missingQemuOrTiny } from '../fixtures/tools.js';

const cli = join(repo, 'dist/cli/main.js');
const skip = (await missingQemuOrTiny()) !== undefined;

describe.skipIf(skip)('delete leaves nothing of the VM behind (real QEMU, built CLI)', () => {
  const home = mkdtempSync(join(tmpdir(), 'localvm-litter-'));
  const state = join(home, 'state');
  const env = { ...process.env, LOCALVM_HOME: state };
  const name = `litter-${randomBytes(2).toString('hex')}`;
  const localvm = (...args: string[]) => {
    const r = spawnSync(process.execPath, [cli, ...args], { env, encoding: 'utf8', timeout: 240_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const mine = (dir: string) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.startsWith(name)) : []);

  beforeAll(() => ensureBuilt('dist/cli/main.js'), 300_000);
  afterAll(() => {
    localvm('delete', name);
    rmSync(home, { recursive: true, force: true });
  });

  it('after create, exec (the agent lock outlives the CLI process) and delete, no file of the VM remains', () => {
    expect(localvm('create', name, '--memory', '128').code).toBe(0);
    expect(localvm('exec', name, '--', 'true').code).toBe(0);
    expect(localvm('delete', name).code).toBe(0);
    expect(mine(join(state, 'locks'))).toEqual([]);
    expect(mine(join(state, 'vms'))).toEqual([]);
  });
});
