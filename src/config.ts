/**
 * The one place the environment is read. Everything else receives a LocalVmConfig, so
 * tests pass their own and nothing depends on process-wide state.
 */
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import type { Accel } from './schema.js';

export interface LocalVmConfig {
  /** Root of per-VM directories (`<stateDir>/vms/<name>/`). */
  stateDir: string;
  /** Where built guest images (`tiny`) are cached. */
  cacheDir: string;
  /** Short directory for control sockets when a VM dir path would exceed 107 bytes. */
  runDir: string;
  /** Accelerator override (`LOCALVM_ACCEL`), applied when a spec says `auto`. */
  accel: Accel;
  /** Prefix of every test VM's name. */
  testPrefix: string;
  /** Directory holding `orbctl` and `qemu-*` overrides, if any (tests put simulators first on PATH instead). */
  qemuBinary?: string | undefined;
  /** Keep test fixtures' worker VMs across runs (`LOCALVM_REUSE=1`). */
  reuse: boolean;
  /** Print debug logs. */
  verbose: boolean;
  /** The host platform (`process.platform`), so backend selection is testable. */
  platform: NodeJS.Platform;
  /** The PATH used to find tools such as `orbctl`. */
  searchPath: string;
}

export const DEFAULT_TEST_PREFIX = 'pytest-test-';

/** An XDG base directory, or undefined: the XDG spec says a relative one is invalid and ignored. */
function xdgDir(value: string | undefined): string | undefined {
  return value && isAbsolute(value) ? value : undefined;
}

/**
 * Reads the configuration from `env` (defaults to `process.env`). Directories come out
 * absolute, resolved against the cwd at load: they are recorded in vm.json and QEMU's
 * arguments, and a relative one would mean something else from another directory.
 */
export function loadConfig(
  env: NodeJS.ProcessEnv = process.env,
  overrides: Partial<LocalVmConfig> = {},
): LocalVmConfig {
  const home = env.HOME || homedir();
  const stateHome = xdgDir(env.XDG_STATE_HOME) ?? join(home, '.local', 'state');
  const cacheHome = xdgDir(env.XDG_CACHE_HOME) ?? join(home, '.cache');
  const runtimeDir = xdgDir(env.XDG_RUNTIME_DIR) ?? '/tmp';
  const accel = env.LOCALVM_ACCEL;
  return {
    stateDir: resolve(env.LOCALVM_HOME || join(stateHome, 'localvm')),
    cacheDir: resolve(env.LOCALVM_CACHE || join(cacheHome, 'localvm')),
    runDir: resolve(env.LOCALVM_RUN_DIR || join(runtimeDir, `localvm-${process.getuid?.() ?? 'u'}`)),
    accel: accel === 'kvm' || accel === 'tcg' || accel === 'hvf' ? accel : 'auto',
    testPrefix: env.LOCALVM_TEST_PREFIX || DEFAULT_TEST_PREFIX,
    qemuBinary: env.LOCALVM_QEMU || undefined,
    reuse: env.LOCALVM_REUSE === '1' || env.LOCALVM_REUSE === 'true',
    verbose: env.LOCALVM_DEBUG === '1',
    platform: process.platform,
    searchPath: env.PATH ?? '',
    ...overrides,
  };
}
