import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createKvmProbe, resolveAccel, type AccelContext } from '../../src/backends/qemu/accel.js';
import type { Command, CommandRunner, RunResult } from '../../src/runner.js';

const ctx = (over: Partial<AccelContext> = {}): AccelContext => ({
  platform: 'linux',
  hostArch: 'x64',
  guestArch: 'x86_64',
  probeKvm: async () => ({ usable: true, reason: '/dev/kvm works' }),
  ...over,
});

describe('resolveAccel', () => {
  it('honours an explicit choice without probing', async () => {
    let probed = false;
    const probeKvm = async () => ((probed = true), { usable: false, reason: 'x' });
    expect((await resolveAccel('tcg', ctx({ probeKvm }))).accel).toBe('tcg');
    expect((await resolveAccel('kvm', ctx({ probeKvm }))).accel).toBe('kvm');
    expect(probed).toBe(false);
  });

  it('auto: kvm on Linux only when the probe passes, tcg with its reason otherwise', async () => {
    expect(await resolveAccel('auto', ctx())).toEqual({ accel: 'kvm', reason: 'chose kvm: /dev/kvm works' });
    const broken = await resolveAccel(
      'auto',
      ctx({ probeKvm: async () => ({ usable: false, reason: 'kvm_pvm loaded' }) }),
    );
    expect(broken).toEqual({ accel: 'tcg', reason: 'chose tcg: kvm_pvm loaded' });
  });

  it('auto: hvf on macOS, tcg for a foreign guest architecture or an unknown platform', async () => {
    expect(
      (await resolveAccel('auto', ctx({ platform: 'darwin', hostArch: 'arm64', guestArch: 'aarch64' }))).accel,
    ).toBe('hvf');
    const foreign = await resolveAccel('auto', ctx({ guestArch: 'aarch64' }));
    expect(foreign.accel).toBe('tcg');
    expect(foreign.reason).toMatch(/differs/);
    expect((await resolveAccel('auto', ctx({ platform: 'win32' }))).accel).toBe('tcg');
  });
});

describe('createKvmProbe', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'lvm-accel-'));
    mkdirSync(join(dir, 'sys'));
    writeFileSync(join(dir, 'kvm'), '');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function fakeRunner(exitCode: number, stderr = ''): CommandRunner & { calls: Command[] } {
    const calls: Command[] = [];
    return {
      calls,
      async run(cmd): Promise<RunResult> {
        calls.push(cmd);
        return { file: cmd.file, args: cmd.args, exitCode, stderr, stdout: '', timedOut: false, durationMs: 1 };
      },
    };
  }

  const deps = (runner: CommandRunner, kernelRelease = '6.1.0') => ({
    runner,
    cacheDir: join(dir, 'cache'),
    kernelRelease,
    qemuBinary: 'qemu-system-x86_64',
    devKvm: join(dir, 'kvm'),
    sysModuleDir: join(dir, 'sys'),
  });

  it('says unusable when /dev/kvm does not open', async () => {
    const runner = fakeRunner(0);
    const verdict = await createKvmProbe({ ...deps(runner), devKvm: join(dir, 'absent') })();
    expect(verdict.usable).toBe(false);
    expect(verdict.reason).toMatch(/ENOENT/);
    expect(runner.calls).toHaveLength(0);
  });

  it('says unusable without running QEMU when kvm_pvm is loaded', async () => {
    mkdirSync(join(dir, 'sys', 'kvm_pvm'));
    const runner = fakeRunner(0);
    const verdict = await createKvmProbe(deps(runner))();
    expect(verdict).toEqual({
      usable: false,
      reason: `${join(dir, 'kvm')} present but kvm_pvm loaded (nested software virtualisation), KVM unusable`,
    });
    expect(runner.calls).toHaveLength(0);
  });

  it('trusts a QEMU vCPU that initialises, and distrusts one that aborts', async () => {
    const ok = fakeRunner(0);
    expect((await createKvmProbe(deps(ok))()).usable).toBe(true);
    expect(ok.calls[0]?.args).toEqual(expect.arrayContaining(['-accel', 'kvm', '-cpu', 'host']));
    rmSync(join(dir, 'cache'), { recursive: true });
    const bad = fakeRunner(134, 'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69');
    const verdict = await createKvmProbe(deps(bad))();
    expect(verdict.usable).toBe(false);
    expect(verdict.reason).toMatch(/MSR 0x10a/);
  });

  it('caches the verdict per kernel release', async () => {
    const runner = fakeRunner(0);
    await createKvmProbe(deps(runner))();
    await createKvmProbe(deps(runner))();
    expect(runner.calls).toHaveLength(1);
    expect(JSON.parse(readFileSync(join(dir, 'cache', 'accel.json'), 'utf8')).kernelRelease).toBe('6.1.0');
    await createKvmProbe(deps(runner, '6.12.0'))();
    expect(runner.calls).toHaveLength(2);
  });
});
