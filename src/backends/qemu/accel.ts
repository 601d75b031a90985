/**
 * Choosing the accelerator. `auto` must not trust /dev/kvm alone: on hosts that are
 * themselves VMs with software-nested KVM (`kvm_pvm`), /dev/kvm opens but guests hang
 * or abort, so KVM is used only when a real probe passes. The verdict is cached per
 * kernel release, since it only changes when the host kernel (or its modules) does.
 */
import { constants, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { archFromNode } from '../../host/arch.js';
import writeFileAtomic from 'write-file-atomic';
import type { CommandRunner } from '../../runner.js';
import type { Accel, Arch } from '../../schema.js';
import { tail } from '../../errors.js';
import { exists } from '../../host/fs.js';
import { mkdirPrivate } from '../../host/privateDir.js';

export type ConcreteAccel = 'kvm' | 'tcg' | 'hvf';

export interface AccelChoice {
  accel: ConcreteAccel;
  /** One line saying why, recorded in vm.json and logged. */
  reason: string;
}

export interface KvmVerdict {
  usable: boolean;
  reason: string;
}

export interface AccelContext {
  platform: NodeJS.Platform;
  /** Host CPU architecture as Node names it (`x64`, `arm64`). */
  hostArch: string;
  guestArch: Arch;
  /** Decides whether KVM works on this Linux host (see `createKvmProbe`). */
  probeKvm: () => Promise<KvmVerdict>;
}

/**
 * The accelerator for `requested`. Explicit choices are honoured as given; `auto` picks
 * hvf on macOS, kvm on Linux when `probeKvm` says it works, tcg otherwise.
 */
export async function resolveAccel(requested: Accel, ctx: AccelContext): Promise<AccelChoice> {
  if (requested !== 'auto') return { accel: requested, reason: `chose ${requested}: requested explicitly` };
  if (archFromNode(ctx.hostArch) !== ctx.guestArch) {
    return { accel: 'tcg', reason: `chose tcg: guest ${ctx.guestArch} differs from host ${ctx.hostArch}` };
  }
  if (ctx.platform === 'darwin') return { accel: 'hvf', reason: 'chose hvf: macOS host' };
  if (ctx.platform !== 'linux') return { accel: 'tcg', reason: `chose tcg: no accelerator support on ${ctx.platform}` };
  const verdict = await ctx.probeKvm();
  return verdict.usable
    ? { accel: 'kvm', reason: `chose kvm: ${verdict.reason}` }
    : { accel: 'tcg', reason: `chose tcg: ${verdict.reason}` };
}

export interface KvmProbeDeps {
  runner: CommandRunner;
  /** Where `accel.json` caches the verdict. */
  cacheDir: string;
  /** `os.release()`: the cache key. */
  kernelRelease: string;
  qemuBinary: string;
  /** Overridable for tests. */
  devKvm?: string;
  sysModuleDir?: string;
}

async function opensReadWrite(path: string): Promise<string | undefined> {
  try {
    const fh = await open(path, constants.O_RDWR);
    await fh.close();
    return undefined;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code ?? String(error);
  }
}

/** The KVM verdict cached in `<cacheDir>/accel.json` for `kernelRelease`; never probes. */
export async function readKvmVerdict(cacheDir: string, kernelRelease: string): Promise<KvmVerdict | undefined> {
  try {
    const cached = JSON.parse(await readFile(join(cacheDir, 'accel.json'), 'utf8')) as {
      kernelRelease?: string;
      verdict?: KvmVerdict;
    };
    return cached.kernelRelease === kernelRelease ? cached.verdict : undefined;
  } catch {
    return undefined; // no verdict cached yet
  }
}

/**
 * A KVM probe for this host: /dev/kvm must open read-write; a loaded `kvm_pvm` module
 * (software-nested KVM) is known broken; otherwise QEMU must initialise a vCPU with
 * `-accel kvm -cpu host` and quit cleanly (broken nested KVM aborts there, ~0.3 s).
 * The verdict is cached in `<cacheDir>/accel.json` keyed by kernel release.
 */
export function createKvmProbe(deps: KvmProbeDeps): () => Promise<KvmVerdict> {
  const cacheFile = join(deps.cacheDir, 'accel.json');
  return async () => {
    const cached = await readKvmVerdict(deps.cacheDir, deps.kernelRelease);
    if (cached) return cached;
    const verdict = await probeKvmUncached(deps);
    await mkdirPrivate(deps.cacheDir);
    // Only a cache: a full or read-only disk costs the next start a probe, not this start.
    await writeFileAtomic(cacheFile, JSON.stringify({ kernelRelease: deps.kernelRelease, verdict }, null, 2)).catch(
      () => undefined,
    );
    return verdict;
  };
}

async function probeKvmUncached(deps: KvmProbeDeps): Promise<KvmVerdict> {
  const dev = deps.devKvm ?? '/dev/kvm';
  const openError = await opensReadWrite(dev);
  if (openError) return { usable: false, reason: `${dev} does not open read-write (${openError})` };
  if (await exists(join(deps.sysModuleDir ?? '/sys/module', 'kvm_pvm'))) {
    return {
      usable: false,
      reason: `${dev} present but kvm_pvm loaded (nested software virtualisation), KVM unusable`,
    };
  }
  const result = await deps.runner.run(
    {
      file: deps.qemuBinary,
      args: [
        ...(deps.qemuBinary.endsWith('aarch64') ? ['-M', 'virt'] : []),
        '-accel',
        'kvm',
        '-cpu',
        'host',
        '-display',
        'none',
        '-nodefaults',
        '-no-user-config',
        '-S',
        '-qmp',
        'stdio',
      ],
    },
    { input: '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n', timeoutMs: 10_000 },
  );
  if (result.exitCode === 0) return { usable: true, reason: `${dev} works (a KVM vCPU initialised)` };
  const why = result.timedOut ? 'timed out' : tail(result.stderr, 2, 300) || `exit ${result.exitCode}`;
  return { usable: false, reason: `${dev} present but a KVM vCPU failed to start (${why})` };
}
