import { readFileSync, writeFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { runCli } from '../../src/cli/program.js';
import { createRecordingRunner } from '../../src/runner.js';
import { createQemuBackend } from '../../src/backends/qemu/backend.js';
import type { TinyImage } from '../../src/backends/qemu/image/index.js';
import { FakeBackend, fakeClock } from '../fixtures/fakeBackend.js';
import { testTempDir } from '../fixtures/tempDir.js';

function harness(options: { realQemu?: boolean } = {}) {
  const home = testTempDir('localvm-cli-');
  const backend = new FakeBackend();
  const runner = createRecordingRunner();
  const config = loadConfig({
    HOME: home,
    LOCALVM_HOME: join(home, 'state'),
    LOCALVM_CACHE: join(home, 'cache'),
    PATH: '',
  });
  // The real QEMU backend over the recording runner: it plans, and must run and write nothing.
  const tiny: TinyImage = {
    name: 'tiny',
    dir: '/images',
    kernel: '/images/vmlinux',
    initrd: '/images/initrd.gz',
    append: 'console=ttyS0',
    hash: 'x',
    kernelVersion: '6.1',
    builtAt: '',
    bootFormat: 'pvh-vmlinux',
  };
  const qemu = createQemuBackend({ config, runner, findImage: async () => tiny });
  let stdout = '';
  let stderr = '';
  const dec = (c: string | Uint8Array) => (typeof c === 'string' ? c : new TextDecoder().decode(c));
  const run = async (...argv: string[]) => {
    stdout = '';
    stderr = '';
    const code = await runCli(argv, {
      stdout: { write: (c) => (stdout += dec(c)) },
      stderr: { write: (c) => (stderr += dec(c)) },
      env: {},
      context: { config, runner, clock: fakeClock(), backends: { qemu: options.realQemu ? qemu : backend } },
      stdin: async () => new TextEncoder().encode('piped input'),
    });
    return { code, stdout, stderr };
  };
  return { run, backend, runner, home, config };
}

describe('localvm program (fake backend)', () => {
  it('creates, lists as JSON, execs with the guest exit code, and deletes', async () => {
    const { run, backend } = harness();
    const created = await run('create', 'web', '--memory', '512', '--port', '8080:80', '--json');
    expect(created.code).toBe(0);
    expect(JSON.parse(created.stdout)).toMatchObject({
      vm: { name: 'web', memory: 512, state: 'running' },
      adopted: false,
    });
    expect(backend.calls).toContain('probe web');

    const list = await run('list', '--json');
    expect(JSON.parse(list.stdout).map((v: { name: string }) => v.name)).toEqual(['web']);

    const ok = await run('exec', 'web', '--', 'echo', 'hi', '--not-a-flag');
    expect(ok).toMatchObject({ code: 0, stdout: 'hi --not-a-flag' });
    expect((await run('exec', 'web', '--', 'false')).code).toBe(1);

    expect((await run('delete', 'web')).stdout).toBe('deleted web\n');
    expect((await run('delete', 'web')).stdout).toBe('web did not exist\n');
  });

  it('console prints the guest console tail; a missing VM is exit 3', async () => {
    const { run } = harness();
    await run('create', 'web', '--no-wait');
    expect(await run('console', 'web', '-n', '5')).toMatchObject({ code: 0, stdout: 'fake console: booting\n' });
    expect(JSON.parse((await run('console', 'web', '--json')).stdout)).toEqual({
      name: 'web',
      console: 'fake console: booting',
    });
    expect((await run('console', 'nope')).code).toBe(3);
  });

  it('--no-wait skips the readiness probe', async () => {
    const { run, backend } = harness();
    expect((await run('create', 'quick', '--no-wait')).code).toBe(0);
    expect(backend.calls.filter((c) => c.startsWith('probe'))).toEqual([]);
  });

  it('exits 2 with a readable message on invalid input, before touching the backend', async () => {
    const { run, backend } = harness();
    const bad = await run('create', '$(reboot)');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error \[VALIDATION\]: invalid VM spec: name: /);
    expect((await run('create', 'ok', '--memory', '0')).code).toBe(2);
    const usage = await run('create');
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/^error \[VALIDATION\]: missing required argument 'name'/);
    expect((await run('frobnicate')).code).toBe(2);
    const json = await run('--json', 'create', 'x', '--cpus', 'lots');
    expect(JSON.parse(json.stderr).error).toMatchObject({ code: 'VALIDATION', issues: [{ property: 'cpus' }] });
    expect(backend.calls).toEqual([]);
  });

  it('maps NOT_FOUND and CONFLICT to their exit codes', async () => {
    const { run } = harness();
    expect((await run('info', 'ghost')).code).toBe(3);
    expect((await run('create', 'a', '--memory', '256')).code).toBe(0);
    const conflict = await run('create', 'a', '--memory', '512');
    expect(conflict.code).toBe(5);
    expect(conflict.stderr).toContain('error [CONFLICT]');
    expect(conflict.stderr).toContain('hint: ');
  });

  it('copies files both ways with NAME:/path', async () => {
    const { run, home, backend } = harness();
    await run('create', 'files', '--no-wait');
    const src = join(home, 'in.bin');
    writeFileSync(src, Buffer.from([0, 1, 2, 255]));
    expect((await run('cp', src, 'files:/tmp/')).code).toBe(0);
    expect([...(backend.vms.get('files')?.files.get('/tmp/in.bin') ?? [])]).toEqual([0, 1, 2, 255]);
    expect((await run('cp', 'files:/tmp/in.bin', home)).code).toBe(0);
    expect([...readFileSync(join(home, 'in.bin'))]).toEqual([0, 1, 2, 255]);
    expect((await run('cp', join(home, 'missing'), 'files:/tmp/x')).code).toBe(3);
  });

  it('cleanup deletes only the prefixed VMs; --dry-run deletes none', async () => {
    const { run, backend } = harness();
    for (const n of ['pytest-test-a', 'pytest-test-b', 'keep-me']) await run('create', n, '--no-wait');
    const dry = await run('--dry-run', 'cleanup', '--prefix', 'pytest-test-', '--json');
    expect(JSON.parse(dry.stdout)).toMatchObject({ matched: ['pytest-test-a', 'pytest-test-b'], deleted: [] });
    expect(backend.vms.size).toBe(3);
    await run('cleanup', '--prefix', 'pytest-test-');
    expect([...backend.vms.keys()]).toEqual(['keep-me']);
    expect((await run('cleanup', '--prefix', '')).code).toBe(2);
  });

  it("--dry-run create prints the QEMU backend's planned argv, runs nothing and touches no disk", async () => {
    const { run, backend, runner, config } = harness({ realQemu: true });
    const r = await run('--dry-run', 'create', 'plan', '--memory', '512', '--json', '--backend', 'qemu');
    expect(r.code).toBe(0);
    const argv = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '') as string[];
    expect(argv[0]).toBe('qemu-system-x86_64');
    expect(argv).toContain('-daemonize');
    expect(argv[argv.indexOf('-m') + 1]).toBe('512');
    expect(backend.calls).toEqual([]);
    expect(runner.commands).toEqual([]);
    expect(existsSync(config.stateDir)).toBe(false);
    expect(readdirSync(join(config.stateDir, '..'))).toEqual([]);
  });

  it('refuses --dry-run where it cannot be honoured, with UNSUPPORTED', async () => {
    const { run } = harness();
    expect((await run('--dry-run', 'exec', 'x', '--', 'true')).code).toBe(7);
  });

  it('--dry-run delete of a missing VM says there is nothing to do, and runs nothing', async () => {
    const { run, runner, backend } = harness();
    expect(await run('--dry-run', 'delete', 'x')).toMatchObject({
      code: 0,
      stdout: '# x does not exist: nothing to do\n',
    });
    expect(runner.commands).toEqual([]);
    expect(backend.calls).toEqual([]);
  });

  it('--help lists every command, and each group its subcommands, in order', async () => {
    const { run } = harness();
    // The names at the start of the lines under "Commands:" (descriptions wrap onto indented lines).
    const commands = async (...argv: string[]) => {
      const help = await run(...argv, '--help');
      expect(help.code).toBe(0);
      const section = help.stdout.split('Commands:\n')[1]?.split('\n\n')[0] ?? '';
      return [...section.matchAll(/^ {2}(\S+)/gm)].map((m) => m[1]);
    };
    expect(await commands()).toEqual([
      ...['create', 'start', 'stop', 'restart', 'delete', 'list', 'info', 'console', 'exec', 'shell', 'cp'],
      ...['ssh', 'ssh-config'],
      ...['qmp', 'cleanup', 'snapshot', 'template', 'disk', 'image', 'doctor', 'demo', 'run', 'pool', 'help'],
    ]);
    expect(await commands('snapshot')).toEqual(['create', 'list', 'restore', 'delete', 'help']);
    expect(await commands('template')).toEqual(['create', 'list', 'info', 'delete', 'help']);
    expect(await commands('disk')).toEqual([
      ...['add', 'list', 'remove', 'create', 'attach', 'detach', 'resize', 'delete', 'help'],
    ]);
    expect(await commands('image')).toEqual(['build', 'list', 'pull', 'rm', 'prune', 'help']);
    expect(await commands('pool')).toEqual(['list', 'clean', 'help']);
  });

  it('documents exit codes in --help', async () => {
    const { run } = harness();
    const help = await run('--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Exit codes:');
    expect(help.stdout).toMatch(/3\s+no such VM/);
  });
});
