/**
 * The one place the environment is read. Everything else receives a LocalVmConfig, so
 * tests pass their own and nothing depends on process-wide state.
 */
import { statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { LocalVmError } from './errors.js';
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
  /** The libvirt connection URI a libvirt spec without `connect` uses (`LOCALVM_LIBVIRT_URI`). */
  libvirtUri: string;
  /** The libvirt hosts list (`LOCALVM_HOSTS`, default `<stateDir>/hosts.json`; see src/hosts/config.ts). */
  hostsFile: string;
  /** libvirt: only this host of the hosts list (`--host NAME`); set by the CLI, never from the environment. */
  libvirtHost?: string | undefined;
  /** libvirt: only this connection URI, hosts list or not (`--connect URI`); set by the CLI. */
  libvirtConnect?: string | undefined;
}

/** The libvirt URI when LOCALVM_LIBVIRT_URI is not set: the host's system daemon. */
export const DEFAULT_LIBVIRT_URI = 'qemu:///system';

export const DEFAULT_TEST_PREFIX = 'pytest-test-';

/** An XDG base directory, or undefined: the XDG spec says a relative one is invalid and ignored. */
function xdgDir(value: string | undefined): string | undefined {
  return value && isAbsolute(value) ? value : undefined;
}

/** What is in the way of `dir` being a directory: itself or its deepest existing ancestor when that is no directory. */
function notADirectory(dir: string): string | undefined {
  for (let p = dir; ; p = dirname(p)) {
    let isDir: boolean | undefined;
    try {
      isDir = statSync(p, { throwIfNoEntry: false })?.isDirectory();
    } catch (error) {
      // ENOTDIR: something above is a file; EACCES and the like are for whoever uses the dir to report.
      if ((error as NodeJS.ErrnoException).code === 'ENOTDIR') continue;
      return undefined;
    }
    if (isDir === false) return p === dir ? `${dir} is not a directory` : `${p}, a part of ${dir}, is not a directory`;
    if (isDir === true || dirname(p) === p) return undefined;
  }
}

/**
 * A directory setting that cannot be a directory (it, or a part of its path, is a file) is
 * VALIDATION naming the variable, here where the setting is read: every entry point comes
 * through here, and later a path is only a path (mkdirPrivate could only say HOST_FS about
 * "a part of the path", and `list` would just show nothing).
 */
function checkDirSetting(variable: string, dir: string, explicit: boolean): void {
  const problem = notADirectory(dir);
  if (!problem) return;
  const reason = explicit ? problem : `${problem} (the default; set ${variable} to use another directory)`;
  throw new LocalVmError('VALIDATION', `invalid ${variable}: ${reason}`, {
    issues: [{ property: variable, reason }],
    hint: `point ${variable} at a directory (it is created when missing), or move ${dir} away`,
  });
}

/**
 * Reads the configuration from `env` (defaults to `process.env`). Directories come out
 * absolute, resolved against the cwd at load: they are recorded in vm.json and QEMU's
 * arguments, and a relative one would mean something else from another directory.
 * VALIDATION naming the variable when a directory setting is a file (or below one).
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
  const stateDir = overrides.stateDir ?? resolve(env.LOCALVM_HOME || join(stateHome, 'localvm'));
  const cacheDir = overrides.cacheDir ?? resolve(env.LOCALVM_CACHE || join(cacheHome, 'localvm'));
  const runDir =
    overrides.runDir ?? resolve(env.LOCALVM_RUN_DIR || join(runtimeDir, `localvm-${process.getuid?.() ?? 'u'}`));
  if (overrides.stateDir === undefined) checkDirSetting('LOCALVM_HOME', stateDir, Boolean(env.LOCALVM_HOME));
  if (overrides.cacheDir === undefined) checkDirSetting('LOCALVM_CACHE', cacheDir, Boolean(env.LOCALVM_CACHE));
  // Only an explicit run dir: the default one is in /tmp, where another user could plant a
  // file to stop every command; it is refused when it is used (mkdirPrivate, HOST_FS).
  if (overrides.runDir === undefined && env.LOCALVM_RUN_DIR) checkDirSetting('LOCALVM_RUN_DIR', runDir, true);
  return {
    stateDir,
    cacheDir,
    runDir,
    accel: accel === 'kvm' || accel === 'tcg' || accel === 'hvf' ? accel : 'auto',
    testPrefix: env.LOCALVM_TEST_PREFIX || DEFAULT_TEST_PREFIX,
    qemuBinary: env.LOCALVM_QEMU || undefined,
    reuse: env.LOCALVM_REUSE === '1' || env.LOCALVM_REUSE === 'true',
    verbose: env.LOCALVM_DEBUG === '1',
    platform: process.platform,
    searchPath: env.PATH ?? '',
    libvirtUri: env.LOCALVM_LIBVIRT_URI || DEFAULT_LIBVIRT_URI,
    hostsFile: resolve(env.LOCALVM_HOSTS || join(stateDir, 'hosts.json')),
    ...overrides,
  };
}
