/**
 * The `localvm` command line against real QEMU: the built dist/cli/main.js run as a child
 * process with a temp LOCALVM_HOME (the default image cache, so the tiny image is reused).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { missingTools } from '../fixtures/tools.js';
import { ensureBuilt, repo } from '../fixtures/build.js';

const cli = join(repo, 'dist/cli/main.js');
const skip = missingTools('qemu-system-x86_64');

function tree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

describe.skipIf(skip)('localvm CLI (real QEMU)', () => {
  const home = mkdtempSync(join(tmpdir(), 'localvm-cli-e2e-'));
  const env = { ...process.env, LOCALVM_HOME: join(home, 'state'), LOCALVM_RUN_DIR: join(home, 'run') };
  const tag = randomBytes(2).toString('hex');
  const main = `cli-${tag}`;
  const localvmWithInput = (input: string | Buffer, ...args: string[]) => {
    const r = spawnSync(process.execPath, [cli, ...args], {
      env,
      input: Buffer.from(input),
      encoding: 'buffer',
      timeout: 240_000,
    });
    return {
      code: r.status,
      stdout: r.stdout.toString('utf8'),
      stdoutBytes: r.stdout,
      stderr: r.stderr.toString('utf8'),
    };
  };
  const localvm = (...args: string[]) => localvmWithInput('', ...args);
  const names = () => (JSON.parse(localvm('list', '--json').stdout) as { name: string }[]).map((v) => v.name);

  beforeAll(() => ensureBuilt('dist/cli/main.js'), 300_000);
  afterAll(() => {
    for (const name of names()) localvm('delete', name);
    rmSync(home, { recursive: true, force: true });
  });

  it('does the main job: create, exec, cp both ways, list --json, delete', () => {
    const created = localvm('create', main, '--memory', '256', '--json');
    expect(created.code, created.stderr).toBe(0);
    expect(JSON.parse(created.stdout)).toMatchObject({
      vm: { name: main, state: 'running', backend: 'qemu' },
      adopted: false,
    });

    const uname = localvm('exec', main, '--', 'uname', '-s');
    expect(uname).toMatchObject({ code: 0, stdout: 'Linux\n' });
    expect(localvm('exec', main, '--', 'sh', '-c', 'echo oops >&2; exit 3')).toMatchObject({
      code: 3,
      stderr: 'oops\n',
    });
    expect(localvm('shell', main, 'printf "%s" "$((6*7))"')).toMatchObject({ code: 0, stdout: '42' });
    // -i passes our stdin to the guest command; without it the command gets none
    expect(localvmWithInput('piped\nlines\n', 'exec', '-i', main, '--', 'wc', '-l')).toMatchObject({
      code: 0,
      stdout: '2\n',
    });
    expect(localvmWithInput('ignored', 'shell', main, 'cat; echo end')).toMatchObject({ code: 0, stdout: 'end\n' });

    const payload = randomBytes(200_000);
    const src = join(home, 'payload.bin');
    writeFileSync(src, payload);
    expect(localvm('cp', src, `${main}:/tmp/`).code).toBe(0);
    const sum = localvm('exec', main, '--', 'sha256sum', '/tmp/payload.bin');
    expect(sum.stdout.split(' ')[0]).toBe(execFileSync('sha256sum', [src], { encoding: 'utf8' }).split(' ')[0]);
    const out = join(home, 'back.bin');
    expect(localvm('cp', `${main}:/tmp/payload.bin`, out).code).toBe(0);
    expect(Buffer.compare(readFileSync(out), payload)).toBe(0);
    // exec passes stdout through as bytes, not re-encoded text
    const raw = localvm('exec', main, '--', 'cat', '/tmp/payload.bin');
    expect(Buffer.compare(raw.stdoutBytes, payload)).toBe(0);

    const list = JSON.parse(localvm('list', '--json').stdout) as { name: string; state: string; pid: number }[];
    expect(list.find((v) => v.name === main)).toMatchObject({ state: 'running' });
    expect(localvm('qmp', main, 'query-status', '--json').stdout).toContain('"running"');
  });

  it('snapshots through the CLI: create, list, restore brings /tmp back, delete', () => {
    expect(localvm('shell', main, 'echo before > /tmp/snapmark').code).toBe(0);
    const saved = localvm('snapshot', 'create', main, 'clean');
    expect(saved, saved.stderr).toMatchObject({ code: 0, stdout: `saved ${main}@clean\n` });
    expect(localvm('shell', main, 'echo after > /tmp/snapmark').code).toBe(0);
    const listed = JSON.parse(localvm('--json', 'snapshot', 'list', main).stdout) as { name: string }[];
    expect(listed.map((s) => s.name)).toEqual(['clean']);
    expect(localvm('snapshot', 'restore', main, 'clean').code).toBe(0);
    expect(localvm('exec', main, '--', 'cat', '/tmp/snapmark')).toMatchObject({ code: 0, stdout: 'before\n' });
    expect(localvm('snapshot', 'restore', main, 'nope').code).toBe(3);
    expect(localvm('snapshot', 'create', main, '../x').code).toBe(2);
    expect(localvm('snapshot', 'delete', main, 'clean').stdout).toBe(`deleted ${main}@clean\n`);
    expect(localvm('snapshot', 'list', main).stdout).toBe('no snapshots\n');
  });

  it('disks through the CLI: add hot-plugs a disk the guest sees, list, remove', () => {
    const added = localvm('disk', 'add', main, 'data', '64M');
    expect(added, added.stderr).toMatchObject({ code: 0, stdout: `added ${main}:data (64 MiB)\n` });
    const listed = JSON.parse(localvm('--json', 'disk', 'list', main).stdout) as { name: string; attached: boolean }[];
    expect(listed).toMatchObject([{ name: 'data', attached: true }]);
    // 64 MiB = 131072 sectors of 512 bytes; the guest may take a moment to see the new device.
    const seen = localvm(
      'shell',
      main,
      'for i in $(seq 50); do cat /sys/block/vd*/size 2>/dev/null && break; sleep 0.1; done',
    );
    expect(seen.stdout).toContain('131072');
    expect(localvm('disk', 'add', main, '../x', '1M').code).toBe(2);
    expect(localvm('disk', 'remove', main, 'data').stdout).toBe(`removed ${main}:data\n`);
    expect(localvm('disk', 'list', main).stdout).toBe('no extra disks\n');
  });

  it('standalone disks through the CLI: create, attach (the guest sees it), list, detach, resize, delete', () => {
    const created = localvm('disk', 'create', 'shared', '32M');
    expect(created, created.stderr).toMatchObject({ code: 0, stdout: 'created disk shared (32 MiB)\n' });
    const attached = localvm('disk', 'attach', main, 'shared');
    expect(attached, attached.stderr).toMatchObject({ code: 0, stdout: `attached disk shared to ${main}\n` });
    const seen = localvm(
      'shell',
      main,
      'for i in $(seq 50); do cat /sys/block/vd*/size 2>/dev/null && break; sleep 0.1; done',
    );
    expect(seen.stdout).toContain('65536');
    const listed = JSON.parse(localvm('--json', 'disk', 'list').stdout) as unknown[];
    expect(listed).toMatchObject([
      { name: 'shared', sizeBytes: 32 << 20, attachedTo: [{ vm: main, readonly: false }] },
    ]);
    expect(localvm('disk', 'list').stdout).toMatch(
      new RegExp(`^NAME .*ATTACHED TO\n(.|\n)*shared +32 MiB .* qcow2 +${main}\n$`),
    );
    // Refused while attached (exit 5), a shrink and a bad name (exit 2), unknown disk or VM (exit 3).
    expect(localvm('disk', 'delete', 'shared').code).toBe(5);
    expect(localvm('disk', 'resize', 'shared', '1M').code).toBe(2);
    expect(localvm('disk', 'create', '../x', '1M').code).toBe(2);
    expect(localvm('disk', 'attach', main, 'nope').code).toBe(3);
    expect(localvm('disk', 'attach', 'no-such-vm', 'shared').code).toBe(3);
    expect(localvm('disk', 'detach', main, 'shared').stdout).toBe(`detached disk shared from ${main}\n`);
    expect(localvm('disk', 'detach', main, 'shared').stdout).toBe(`disk shared was not attached to ${main}\n`);
    expect(localvm('disk', 'resize', 'shared', '64M').stdout).toBe('disk shared is 64 MiB\n');
    expect(localvm('disk', 'delete', 'shared').stdout).toBe('deleted disk shared\n');
    expect(localvm('disk', 'list').stdout).toBe('no standalone disks\n');
  });

  it('image prune --dry-run --json lists and removes nothing', () => {
    const r = localvm('--json', 'image', 'prune', '--dry-run');
    expect(r, r.stderr).toMatchObject({ code: 0 });
    expect(JSON.parse(r.stdout)).toMatchObject({ dryRun: true, skipped: [] });
  });

  it('--dry-run create prints the exact argv of a real create and leaves nothing on disk', () => {
    const dry = `dry-${tag}`;
    const before = tree(home);
    const r = localvm('--dry-run', '--json', 'create', dry, '--memory', '256');
    expect(r.code, r.stderr).toBe(0);
    expect(tree(home)).toEqual(before);
    const argv = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '[]') as string[];
    expect(argv[0]).toBe('qemu-system-x86_64');
    expect(names()).not.toContain(dry);
    // The same spec under another name really runs with the same argv, names aside.
    const info = JSON.parse(localvm('info', main, '--json').stdout) as { pid: number };
    const real = readFileSync(`/proc/${info.pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
    real[0] = real[0]?.split('/').at(-1) ?? '';
    expect(argv.map((a) => a.replaceAll(dry, main))).toEqual(real);
    // Text mode prints one shell-quoted line per command.
    expect(localvm('--dry-run', 'create', dry).stdout).toMatch(/-append '[^']+'/);
  });

  it('--dry-run stop/start/delete print their plan and change nothing; the start argv is what start runs', () => {
    const pid = (JSON.parse(localvm('info', main, '--json').stdout) as { pid: number }).pid;
    const stopPlan = localvm('--dry-run', 'stop', main);
    expect(stopPlan.code, stopPlan.stderr).toBe(0);
    expect(stopPlan.stdout).toMatch(/^# QMP system_powerdown on .*qmp\.sock$/m);
    expect(localvm('--dry-run', 'delete', main).stdout).toMatch(/^# remove .*\/vms\/cli-/m);
    expect(localvm('--dry-run', 'delete', `gone-${tag}`).stdout).toContain('does not exist: nothing to do');
    expect(JSON.parse(localvm('info', main, '--json').stdout)).toMatchObject({ state: 'running', pid });

    expect(localvm('stop', main).code).toBe(0);
    const startPlan = localvm('--dry-run', '--json', 'start', main);
    expect(startPlan.code, startPlan.stderr).toBe(0);
    const argv = JSON.parse(startPlan.stdout.trim().split('\n').at(-1) ?? '[]') as string[];
    expect(JSON.parse(localvm('info', main, '--json').stdout)).toMatchObject({ state: 'stopped' });
    expect(localvm('start', main).code).toBe(0);
    const started = JSON.parse(localvm('info', main, '--json').stdout) as { pid: number };
    const real = readFileSync(`/proc/${started.pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
    real[0] = real[0]?.split('/').at(-1) ?? '';
    expect(argv).toEqual(real);
  });

  it('rejects bad arguments with exit code 2 and a readable message', () => {
    const evil = localvm('create', '$(reboot)');
    expect(evil.code).toBe(2);
    expect(evil.stderr).toMatch(/^error \[VALIDATION\]: invalid VM spec: name: /);
    expect(evil.stderr).not.toContain('    at ');
    const zero = localvm('create', `z-${tag}`, '--memory', '0');
    expect(zero.code).toBe(2);
    expect(zero.stderr).toContain('memory: must be 64-262144 MiB');
    const json = localvm('--json', 'create', `z-${tag}`, '--port', 'nonsense');
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stderr).error).toMatchObject({ code: 'VALIDATION', issues: [{ property: 'port' }] });
    expect(localvm('info', `ghost-${tag}`).code).toBe(3);
    expect(names()).toEqual([main]);
  });

  it('cleanup --prefix pytest-test- deletes exactly the prefixed VMs', () => {
    const doomed = [`pytest-test-${tag}-a`, `pytest-test-${tag}-b`];
    const other = `other-${tag}`;
    for (const n of [...doomed, other]) expect(localvm('create', n, '--no-wait').code).toBe(0);
    const dry = JSON.parse(localvm('--dry-run', '--json', 'cleanup', '--prefix', 'pytest-test-').stdout);
    expect(dry).toMatchObject({ matched: doomed, deleted: [] });
    expect(names()).toEqual([main, ...doomed, other].sort());
    const r = JSON.parse(localvm('--json', 'cleanup', '--prefix', 'pytest-test-').stdout);
    expect(r.deleted).toEqual(doomed);
    expect(names()).toEqual([main, other].sort());
    expect(localvm('delete', other).stdout).toBe(`deleted ${other}\n`);
  });

  it('deletes the main VM', () => {
    expect(localvm('delete', main).code).toBe(0);
    expect(names()).toEqual([]);
    expect(localvm('delete', main).stdout).toBe(`${main} did not exist\n`);
  });
});
