import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { VmInfo } from '../../src/backend.js';
import { createOrbstackBackend, orbCreatePlan, orbMatchesSpec } from '../../src/backends/orbstack/index.js';
import { loadConfig } from '../../src/config.js';
import { isLocalVmError, type LocalVmError } from '../../src/errors.js';
import type { Command, CommandRunner, RunOptions, RunResult } from '../../src/runner.js';
import { parseVmSpec, type VmSpecInput } from '../../src/schema.js';
import { rejection } from '../fixtures/rejection.js';

const captured = (f: string) => readFileSync(join(import.meta.dirname, '../fixtures/captured', f), 'utf8');
const INFO_RUNNING = captured('orbctl-info-running.stdout');
const INFO_STOPPED = captured('orbctl-info-stopped.stdout');
const INFO_BARE = captured('orbctl-info-bare.stdout');
const LIST = captured('orbctl-list.stdout');

type Reply = Partial<RunResult> | ((cmd: Command, o: RunOptions) => Partial<RunResult>);

/** A fake runner: replies by subcommand (first arg), records every call with its options. */
function fakeRunner(replies: Record<string, Reply | Reply[]> = {}) {
  const calls: Array<{ args: string[]; options: RunOptions }> = [];
  const runner: CommandRunner = {
    async run(cmd, options = {}) {
      calls.push({ args: [...cmd.args], options });
      const key = cmd.args[0] === 'config' ? `config ${cmd.args[1]}` : (cmd.args[0] ?? '');
      const entry = replies[key];
      const reply = Array.isArray(entry) ? (entry.length > 1 ? entry.shift() : entry[0]) : entry;
      const partial = typeof reply === 'function' ? reply(cmd, options) : (reply ?? {});
      return {
        file: cmd.file,
        args: cmd.args,
        exitCode: 0,
        stdout: '',
        stderr: '',
        timedOut: false,
        durationMs: 1,
        ...partial,
      };
    },
  };
  return { runner, calls, argv: () => calls.map((c) => c.args) };
}

const config = loadConfig({ HOME: '/nonexistent', PATH: '' });
const backendWith = (runner: CommandRunner) => createOrbstackBackend({ config, runner, orbctl: 'orbctl' });
const spec = (extra: Partial<VmSpecInput> = {}) =>
  parseVmSpec({ name: 'lvtest-web', backend: 'orbstack', image: 'ubuntu:noble', ...extra });

describe('orbCreatePlan', () => {
  it('maps image, arch and user; leaves schema-default cpus/memory alone', () => {
    expect(orbCreatePlan(spec({ arch: 'x86_64', user: 'dev' }))).toEqual({
      distro: 'ubuntu',
      version: 'noble',
      arch: 'amd64',
      user: 'dev',
      cpus: undefined,
      memoryMib: undefined,
      diskBytes: undefined,
    });
    expect(orbCreatePlan(spec({ image: 'alpine', arch: 'aarch64' }))).toMatchObject({
      distro: 'alpine',
      arch: 'arm64',
    });
    expect(orbCreatePlan(spec({ cpus: 2, memory: 2048 }))).toMatchObject({ cpus: 2, memoryMib: 2048 });
  });

  it.each<[string, Partial<VmSpecInput>, string]>([
    ['tiny', { image: 'tiny' }, 'VALIDATION'],
    ['default image (tiny)', { image: undefined }, 'VALIDATION'],
    ['a qcow2 path', { image: '/images/debian.qcow2' }, 'VALIDATION'],
    ['direct kernel boot', { kernel: '/boot/vmlinuz' }, 'UNSUPPORTED'],
    ['extra disks', { disks: [{ name: 'data', size: '1G' }] }, 'UNSUPPORTED'],
    ['isolated', { isolated: true }, 'UNSUPPORTED'],
    ['a remapped port', { ports: [{ host: 8080, guest: 80 }] }, 'UNSUPPORTED'],
    ['accel kvm', { accel: 'kvm' }, 'UNSUPPORTED'],
  ])('rejects %s', (_label, extra, code) => {
    let thrown: unknown;
    try {
      orbCreatePlan(parseVmSpec({ name: 'x', image: 'ubuntu', ...extra }));
    } catch (error) {
      thrown = error;
    }
    expect(isLocalVmError(thrown, code as 'VALIDATION')).toBe(true);
  });

  it('the tiny rejection hints at a distro image', () => {
    let thrown: unknown;
    try {
      orbCreatePlan(spec({ image: 'tiny' }));
    } catch (error) {
      thrown = error;
    }
    expect((thrown as LocalVmError).hint).toMatch(/ubuntu:noble/);
  });

  it('accepts same-port forwards (OrbStack makes them itself)', () => {
    expect(() => orbCreatePlan(spec({ ports: [{ host: 8080, guest: 8080 }] }))).not.toThrow();
  });
});

describe('orbstack backend argv', () => {
  it('create: argv, user-data in a 0600 temp file removed afterwards, limits via config set, then info', async () => {
    let userDataPath = '';
    let userDataMode = 0;
    let userDataText = '';
    const fake = fakeRunner({
      create: (cmd) => {
        userDataPath = cmd.args[cmd.args.indexOf('-c') + 1] ?? '';
        userDataMode = statSync(userDataPath).mode & 0o777;
        userDataText = readFileSync(userDataPath, 'utf8');
        return {};
      },
      info: { stdout: INFO_RUNNING },
    });
    const s = spec({ arch: 'x86_64', user: 'dev', userData: '#cloud-config\n', cpus: 2, memory: 1024 });
    const info = await backendWith(fake.runner).create(s);
    expect(fake.argv()).toEqual([
      ['create', '-a', 'amd64', '-u', 'dev', '-c', userDataPath, 'ubuntu:noble', 'lvtest-web'],
      ['config', 'set', 'machine.lvtest-web.cpu', '2'],
      ['config', 'set', 'machine.lvtest-web.memory_mib', '1024'],
      ['info', 'lvtest-web', '-f', 'json'],
    ]);
    expect(fake.calls[0]?.options.timeoutMs).toBe(s.timeouts.createMs);
    expect(userDataMode).toBe(0o600);
    expect(userDataText).toBe('#cloud-config\n');
    expect(() => statSync(userDataPath)).toThrow();
    expect(info).toMatchObject({
      name: 'lvtest-web',
      backend: 'orbstack',
      state: 'running',
      ip4: '198.19.249.36',
      image: 'ubuntu:noble',
      arch: 'aarch64',
    });
  });

  it('create without options passes only image and name', async () => {
    const fake = fakeRunner({ info: { stdout: INFO_RUNNING } });
    await backendWith(fake.runner).create(spec({ image: 'debian' }));
    expect(fake.argv()[0]).toEqual(['create', 'debian', 'lvtest-web']);
  });

  it('a failed create is classified, and nothing else runs', async () => {
    const fake = fakeRunner({
      create: {
        exitCode: 1,
        stderr: "[-32098] create 'lvtest-web': setup: machine didn't start in 30s (missing IP address)\n",
      },
    });
    const error = await rejection(backendWith(fake.runner).create(spec({ cpus: 2 })));
    expect(error).toMatchObject({ code: 'TRANSIENT', transient: true, vm: 'lvtest-web' });
    expect(fake.argv()).toHaveLength(1);
  });

  it('start, restart, info, list', async () => {
    const fake = fakeRunner({ info: { stdout: INFO_RUNNING }, list: { stdout: LIST } });
    const b = backendWith(fake.runner);
    await b.start('lvtest-web');
    await b.restart('lvtest-web');
    const list = await b.list();
    expect(fake.argv()).toEqual([
      ['start', 'lvtest-web'],
      ['info', 'lvtest-web', '-f', 'json'],
      ['restart', 'lvtest-web'],
      ['info', 'lvtest-web', '-f', 'json'],
      ['list', '-f', 'json'],
    ]);
    expect(list.length).toBeGreaterThan(0);
    for (const vm of list) expect(vm.backend).toBe('orbstack');
  });

  it('stop is graceful first, forced when the graceful stop times out', async () => {
    const fake = fakeRunner({
      stop: (cmd) => (cmd.args.includes('-f') ? {} : { exitCode: -1, timedOut: true }),
      info: { stdout: INFO_STOPPED },
    });
    const info = await backendWith(fake.runner).stop('lvtest-web', { timeoutMs: 1234 });
    expect(fake.argv()).toEqual([
      ['stop', 'lvtest-web'],
      ['stop', '-f', 'lvtest-web'],
      ['info', 'lvtest-web', '-f', 'json'],
    ]);
    expect(fake.calls[0]?.options.timeoutMs).toBe(1234);
    expect(info.state).toBe('stopped');
    expect(info.ip4).toBeUndefined();
  });

  it('stop of a missing machine is NOT_FOUND without forcing', async () => {
    const fake = fakeRunner({ stop: { exitCode: 1, stderr: 'machine not found: lvtest-web\n' } });
    expect((await rejection(backendWith(fake.runner).stop('lvtest-web'))).code).toBe('NOT_FOUND');
    expect(fake.argv()).toEqual([['stop', 'lvtest-web']]);
  });

  it('stop --force goes straight to -f', async () => {
    const fake = fakeRunner({ info: { stdout: INFO_STOPPED } });
    await backendWith(fake.runner).stop('lvtest-web', { force: true });
    expect(fake.argv()[0]).toEqual(['stop', '-f', 'lvtest-web']);
  });

  it('delete uses -f and treats not found as success, other failures as errors', async () => {
    const gone = fakeRunner({ delete: { exitCode: 1, stderr: 'machine not found: lvtest-web\n' } });
    await expect(backendWith(gone.runner).delete('lvtest-web')).resolves.toBeUndefined();
    expect(gone.argv()).toEqual([['delete', '-f', 'lvtest-web']]);
    const down = fakeRunner({ delete: { exitCode: 1, stderr: 'OrbStack is not running\n' } });
    expect((await rejection(backendWith(down.runner).delete('lvtest-web'))).code).toBe('TRANSIENT');
  });

  it('exec: -u, -w, env via `env`, stdin and timeout go to the runner; guest exit codes are results', async () => {
    const fake = fakeRunner({ run: { exitCode: 3, stdout: 'o', stderr: 'e' } });
    const r = await backendWith(fake.runner)
      .guest('lvtest-web')
      .exec(['ls', '-l'], {
        user: 'root',
        cwd: '/srv',
        env: { A: '1', B: 'x y' },
        stdin: 'in',
        timeoutMs: 999,
      });
    expect(fake.argv()).toEqual([
      ['run', '-m', 'lvtest-web', '-u', 'root', '-w', '/srv', 'env', 'A=1', 'B=x y', 'ls', '-l'],
    ]);
    expect(fake.calls[0]?.options).toMatchObject({ input: 'in', timeoutMs: 999 });
    expect(r).toMatchObject({ exitCode: 3, stdout: 'o', stderr: 'e' });
  });

  it('exec timeout is TIMEOUT; a missing machine is NOT_FOUND', async () => {
    const slow = fakeRunner({ run: { exitCode: -1, timedOut: true } });
    expect((await rejection(backendWith(slow.runner).guest('lvtest-web').exec(['sleep', '9']))).code).toBe('TIMEOUT');
    const missing = fakeRunner({ run: { exitCode: 1, stderr: 'machine not found: lvtest-web\n' } });
    expect((await rejection(backendWith(missing.runner).guest('lvtest-web').exec(['true']))).code).toBe('NOT_FOUND');
  });

  it('putFile pushes a temp file then chmods; getFile pulls into a temp file', async () => {
    let pushed = '';
    const fake = fakeRunner({
      push: (cmd) => {
        pushed = readFileSync(cmd.args[3] ?? '', 'utf8');
        return {};
      },
      pull: (cmd) => {
        // what `orbctl pull` would write
        writeFileSync(cmd.args[4] ?? '', 'pulled');
        return {};
      },
    });
    const b = backendWith(fake.runner);
    await b.guest('lvtest-web').putFile('/etc/motd', new TextEncoder().encode('hello'), { mode: 0o644 });
    const got = await b.guest('lvtest-web').getFile('/etc/motd');
    const argv = fake.argv();
    expect(argv[0]?.slice(0, 3)).toEqual(['push', '-m', 'lvtest-web']);
    expect(argv[0]?.[4]).toBe('/etc/motd');
    expect(argv[1]).toEqual(['run', '-m', 'lvtest-web', 'chmod', '0644', '--', '/etc/motd']);
    expect(argv[2]?.slice(0, 4)).toEqual(['pull', '-m', 'lvtest-web', '/etc/motd']);
    expect(pushed).toBe('hello');
    expect(new TextDecoder().decode(got)).toBe('pulled');
  });

  it('probe: not ready while stopped or without ip4, then `run true` decides', async () => {
    const stopped = fakeRunner({ info: { stdout: INFO_STOPPED } });
    expect(await backendWith(stopped.runner).guest('lvtest-web').probe(500)).toEqual({
      ready: false,
      detail: 'state stopped',
    });
    expect(stopped.argv()).toHaveLength(1);

    const noIp = INFO_RUNNING.replace(/,\s*"ip4": "[^"]*"/, '');
    const waiting = fakeRunner({ info: { stdout: noIp } });
    const probe = await backendWith(waiting.runner).guest('lvtest-web').probe(500);
    expect(probe.ready).toBe(false);
    expect(probe.detail).toMatch(/running.*no ip4/);

    const ready = fakeRunner({ info: { stdout: INFO_RUNNING } });
    expect((await backendWith(ready.runner).guest('lvtest-web').probe(500)).ready).toBe(true);
    expect(ready.argv()[1]).toEqual(['run', '-m', 'lvtest-web', 'true']);
    expect(ready.calls[1]?.options.timeoutMs).toBe(500);

    const bare = fakeRunner({ info: { stdout: INFO_BARE }, run: { exitCode: 1, stderr: 'not yet\n' } });
    const bareProbe = await backendWith(bare.runner).guest('lvtest-web').probe(500);
    expect(bareProbe.ready).toBe(false);
    expect(bareProbe.detail).toMatch(/run true/);
  });

  it('probe: a transient info failure is "not ready", NOT_FOUND is thrown', async () => {
    const down = fakeRunner({ info: { exitCode: 1, stderr: 'OrbStack is not running\n' } });
    expect((await backendWith(down.runner).guest('lvtest-web').probe(500)).ready).toBe(false);
    const gone = fakeRunner({ info: { exitCode: 1, stderr: 'machine not found: lvtest-web\n' } });
    expect((await rejection(backendWith(gone.runner).guest('lvtest-web').probe(500))).code).toBe('NOT_FOUND');
  });

  it('has no QMP or snapshot capability', () => {
    const b = backendWith(fakeRunner().runner) as unknown as Record<string, unknown>;
    expect(b.qmp).toBeUndefined();
    expect(b.snapshotCreate).toBeUndefined();
  });
});

describe('orbMatchesSpec', () => {
  async function infoOf(stdout: string): Promise<VmInfo> {
    return backendWith(fakeRunner({ info: { stdout } }).runner).info('lvtest-web');
  }

  it.each<[string, Partial<VmSpecInput>, boolean]>([
    ['same distro and version', { image: 'ubuntu:noble' }, true],
    ['version alias 24.04 = noble', { image: 'ubuntu:24.04' }, true],
    ['distro only', { image: 'ubuntu' }, true],
    ['other version', { image: 'ubuntu:jammy' }, false],
    ['other distro', { image: 'debian:bookworm' }, false],
    ['same arch', { image: 'ubuntu', arch: 'aarch64' }, true],
    ['other arch', { image: 'ubuntu', arch: 'x86_64' }, false],
    ['same user', { image: 'ubuntu', user: 'dev' }, true],
    ['other user', { image: 'ubuntu', user: 'ops' }, false],
  ])('%s → %s', async (_label, extra, expected) => {
    expect(orbMatchesSpec(await infoOf(INFO_RUNNING), spec(extra))).toBe(expected);
  });

  it('an isolated machine does not stand for a plain spec', async () => {
    expect(orbMatchesSpec(await infoOf(INFO_STOPPED), spec({ image: 'debian:bookworm' }))).toBe(false);
    const notIsolated = INFO_STOPPED.replace(/"isolated": true/, '"isolated": false');
    expect(orbMatchesSpec(await infoOf(notIsolated), spec({ image: 'debian:12' }))).toBe(true);
  });

  it('a VM of another backend never matches', async () => {
    const info = { ...(await infoOf(INFO_RUNNING)), backend: 'qemu' as const };
    expect(orbMatchesSpec(info, spec())).toBe(false);
  });
});
