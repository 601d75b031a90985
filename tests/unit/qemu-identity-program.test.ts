/**
 * The identity program's build: the compiler argv, the cache (a program built once is not
 * built again), and every way it cannot be had (no compiler, another guest architecture)
 * ending in undefined and a log line, never an error: templates then park the shell helper.
 * The program itself runs in real guests (tests/integration/template.test.ts).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Command, CommandRunner, RunResult } from '../../src/runner.js';
import { loadConfig } from '../../src/config.js';
import { programArgv } from '../../src/backends/qemu/template/create.js';
import { compileCommand, IDENTITY_SOURCE, identityProgram } from '../../src/backends/qemu/template/identityProgram.js';
import { IDENTITY_PORT } from '../../src/backends/qemu/cmdline.js';
import { testTempDir } from '../fixtures/tempDir.js';

function fakeHost(exitCode: number, writes = true) {
  const calls: Command[] = [];
  const logs: string[] = [];
  const runner: CommandRunner = {
    async run(cmd: Command): Promise<RunResult> {
      calls.push(cmd);
      const out = cmd.args[cmd.args.indexOf('-o') + 1] ?? '';
      if (exitCode === 0 && writes) await writeFile(out, 'ELF');
      return {
        file: cmd.file,
        args: cmd.args,
        exitCode,
        stdout: '',
        stderr: exitCode ? 'cc: fatal error: no input files' : '',
        timedOut: false,
        durationMs: 1,
      };
    },
  };
  const cacheDir = testTempDir('lvm-idprog-');
  const config = loadConfig({ ...process.env, LOCALVM_HOME: join(cacheDir, 'home'), LOCALVM_CACHE: cacheDir });
  return { host: { config, runner, hostArch: 'x86_64' as const, log: (m: string) => logs.push(m) }, calls, logs };
}

describe('identity program build', () => {
  it('compiles identity.c statically, small and stripped, with the compiler named by $CC', () => {
    expect(compileCommand('cc', '/src/identity.c', '/out/p')).toEqual({
      file: 'cc',
      args: ['-static', '-Os', '-s', '-o', '/out/p', '/src/identity.c'],
    });
    expect(IDENTITY_SOURCE).toMatch(/identity\.c$/);
  });

  it('builds once into the cache and reuses the program after that, even in a new process', async () => {
    const { host, calls } = fakeHost(0);
    const path = await identityProgram(host, 'x86_64', { CC: 'my-cc' });
    expect(path).toMatch(new RegExp(`^${host.config.cacheDir}/helpers/identity-x86_64-[0-9a-f]{16}$`));
    expect(calls.map((c) => c.file)).toEqual(['my-cc']);
    expect(calls[0]?.args.at(-1)).toBe(IDENTITY_SOURCE);
    // Built beside its final name, then renamed into place.
    expect(calls[0]?.args[calls[0].args.indexOf('-o') + 1]).toMatch(/\.partial$/);
    expect(await identityProgram(host, 'x86_64', { CC: 'my-cc' })).toBe(path);
    // Another process (another memo key) finds it in the cache.
    const again = { ...host, config: { ...host.config } };
    expect(await identityProgram(again, 'x86_64', { CC: 'other-cc' })).toBe(path);
    expect(calls).toHaveLength(1);
  });

  it('without $CC: musl-gcc first (a small program), else cc', async () => {
    const { host, calls } = fakeHost(0);
    const failing = host.runner.run.bind(host.runner);
    host.runner.run = async (cmd) => {
      if (cmd.file === 'musl-gcc') {
        calls.push(cmd);
        return {
          file: cmd.file,
          args: cmd.args,
          exitCode: 1,
          stdout: '',
          stderr: 'no musl',
          timedOut: false,
          durationMs: 1,
        };
      }
      return failing(cmd);
    };
    expect(await identityProgram(host, 'x86_64', {})).toBeDefined();
    expect(calls.map((c) => c.file)).toEqual(['musl-gcc', 'cc']);
  });

  it('without a working compiler: undefined, nothing left in the cache, and the log says what to install', async () => {
    const { host, logs } = fakeHost(1);
    expect(await identityProgram(host, 'x86_64', {})).toBeUndefined();
    expect(logs.join('\n')).toMatch(
      /identity program not built \(musl-gcc: .*; cc: .*\); templates use the shell helper.*musl-tools/,
    );
    const { readdir } = await import('node:fs/promises');
    expect(await readdir(join(host.config.cacheDir, 'helpers'))).toEqual([]);
  });

  it('LOCALVM_IDENTITY_HELPER=shell rules the program out, without compiling', async () => {
    const { host, calls, logs } = fakeHost(0);
    expect(await identityProgram(host, 'x86_64', { LOCALVM_IDENTITY_HELPER: 'shell' })).toBeUndefined();
    expect(calls).toEqual([]);
    expect(logs[0]).toMatch(/LOCALVM_IDENTITY_HELPER=shell/);
  });

  it('a guest of another architecture than the host gets the shell helper, without compiling', async () => {
    const { host, calls, logs } = fakeHost(0);
    expect(await identityProgram(host, 'aarch64', {})).toBeUndefined();
    expect(calls).toEqual([]);
    expect(logs[0]).toMatch(/aarch64 guest on a x86_64 host/);
  });

  it('runs the copied program through /bin/sh (the agent cannot set a mode), told to remove its file', () => {
    const argv = programArgv('/run/localvm-identity');
    expect(argv.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    expect(argv.slice(3)).toEqual(['/run/localvm-identity', IDENTITY_PORT]);
    // The path and the port are arguments, never part of the script.
    expect(argv[2]).not.toContain('/run');
    expect(argv[2]).toBe('chmod 700 "$0" && exec "$0" "$1" "$0"');
  });
});
