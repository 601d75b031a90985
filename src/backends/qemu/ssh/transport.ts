/**
 * SSH as a GuestTransport for QEMU VMs that have it (see ssh/argv.ts for the client's command
 * lines): exec through `sudo` as root like the agent (the same cwd/env/user wrapping), files
 * through `cat` with the bytes on stdin/stdout, readiness as one `true` over a fresh or warm
 * control master. The host key is learned on the first connect and pinned in the VM's
 * known_hosts; a different key later is refused (CONFLICT), never accepted.
 */
import { readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { ExecOptions, ExecResult, ProbeResult, PutFileOptions } from '../../../backend.js';
import { isLocalVmError, LocalVmError, tail } from '../../../errors.js';
import { mkdirPrivate } from '../../../host/privateDir.js';
import type { Command, RunResult } from '../../../runner.js';
import { formatMs } from '../../../time/format.js';
import { applyMode, type GuestTransport } from '../../../transport.js';
import type { QemuHost } from '../host.js';
import { observe, requireRecord, requireRunning } from '../observe.js';
import { wrapArgv } from '../qga.js';
import type { VmPaths, VmRecord } from '../state.js';
import { classifySshFailure, controlPathFor, sshExecCommand, sshExitMasterCommand, type SshTarget } from './argv.js';

/** True for the CONFLICT of a host key that differs from the pinned one. */
export function isHostKeyRefusal(error: unknown): boolean {
  return isLocalVmError(error, 'CONFLICT') && error.details?.hostKeyRefused === true;
}

/** The SSH target of a record; UNSUPPORTED when the VM was created without SSH. */
export function sshTarget(host: QemuHost, record: VmRecord): SshTarget {
  const ssh = record.ssh;
  if (!ssh) {
    throw new LocalVmError('UNSUPPORTED', `VM ${record.name} has no SSH transport`, {
      vm: record.name,
      hint: "create it from a cloud image (SSH is set up unless transport is 'agent'), or with transport 'ssh'",
    });
  }
  return { name: record.name, ...ssh, controlPath: controlPathFor(record.paths.dir, host.config.runDir) };
}

/** True once a host key is pinned (known_hosts has content). */
async function pinned(t: SshTarget): Promise<boolean> {
  return (await stat(t.knownHosts).catch(() => undefined))?.size ? true : false;
}

/** The argv run in the guest: root through sudo (as the agent runs), then the agent's own wrapping. */
export function sshGuestArgv(argv: string[], o: Pick<ExecOptions, 'env' | 'cwd' | 'user'>): string[] {
  return ['sudo', '-n', '--', ...wrapArgv(argv, o)];
}

function sshError(name: string, t: SshTarget, r: RunResult): LocalVmError | undefined {
  if (r.timedOut) return undefined;
  const kind = classifySshFailure(r.exitCode, r.stderr);
  const said = tail(r.stderr, 3, 500);
  switch (kind) {
    case 'host-key-changed':
    case 'host-key-unknown':
      return new LocalVmError(
        'CONFLICT',
        `VM ${name}: the SSH host key differs from the one pinned in ${t.knownHosts}: refused (${said})`,
        {
          vm: name,
          details: { hostKeyRefused: true, knownHosts: t.knownHosts },
          hint: `if the guest was rebuilt on purpose, remove ${t.knownHosts} and connect again; otherwise something else answers on port ${t.port}`,
        },
      );
    case 'auth':
      return new LocalVmError('COMMAND_FAILED', `VM ${name}: SSH refused the VM's key for ${t.user}: ${said}`, {
        vm: name,
        hint: 'cloud-init may still be creating the user (wait for readiness), or the image ignores the NoCloud seed',
      });
    case 'connect':
      return new LocalVmError('TRANSIENT', `VM ${name}: SSH on 127.0.0.1:${t.port} did not answer: ${said}`, {
        vm: name,
        hint: 'is the guest still booting? see `localvm console`',
      });
    default:
      return undefined;
  }
}

/** The SSH transport of QEMU VM `name`. */
export function sshTransport(host: QemuHost, name: string): GuestTransport {
  const target = async (): Promise<{ t: SshTarget; record: VmRecord }> => {
    const { record } = await requireRunning(host, name);
    const t = sshTarget(host, record);
    // The control socket's directory exists (the run dir one is ours and 0700).
    if (dirname(t.controlPath) !== record.paths.dir) await mkdirPrivate(dirname(t.controlPath));
    return { t, record };
  };

  async function run(
    argv: string[],
    o: { input?: string | Uint8Array | undefined; timeoutMs: number; signal?: AbortSignal | undefined },
  ): Promise<{ r: RunResult; cmd: Command }> {
    const { t } = await target();
    const cmd = sshExecCommand(t, argv, { pinned: await pinned(t), connectTimeoutS: o.timeoutMs / 1000 });
    const r = await host.runner.run(cmd, {
      timeoutMs: o.timeoutMs,
      signal: o.signal,
      input: o.input ?? '',
      binary: true,
    });
    const failure = sshError(name, t, r);
    if (failure) throw failure;
    if (r.timedOut) {
      throw new LocalVmError(
        'TIMEOUT',
        `VM ${name}: ${argv[0] ?? 'command'} over SSH ran past ${formatMs(o.timeoutMs)}`,
        {
          vm: name,
          details: { timeoutMs: Math.round(o.timeoutMs) },
        },
      );
    }
    return { r, cmd };
  }

  const execTimeout = async () => (await requireRecord(host, name)).record.spec.timeouts.execMs;

  const exec = async (argv: string[], o: ExecOptions = {}): Promise<ExecResult> => {
    if (argv.length === 0) throw new LocalVmError('VALIDATION', 'exec needs a command', { vm: name });
    const timeoutMs = o.timeoutMs ?? (await execTimeout());
    const { r } = await run(sshGuestArgv(argv, o), { input: o.stdin, timeoutMs, signal: o.signal });
    const stdoutBytes = r.stdoutBytes ?? new TextEncoder().encode(r.stdout);
    const stderrBytes = r.stderrBytes ?? new TextEncoder().encode(r.stderr);
    return {
      exitCode: r.exitCode,
      stdout: r.stdout,
      stderr: r.stderr,
      stdoutBytes,
      stderrBytes,
      signal: r.signal,
      durationMs: r.durationMs,
    };
  };

  return {
    kind: 'ssh',
    exec,

    async putFile(path, content, o: PutFileOptions = {}) {
      const timeoutMs = await execTimeout();
      const { r } = await run(sshGuestArgv(['/bin/sh', '-c', 'cat > "$1"', 'sh', path], {}), {
        input: content,
        timeoutMs,
        signal: o.signal,
      });
      if (r.exitCode !== 0) {
        throw new LocalVmError('COMMAND_FAILED', `writing ${path} in ${name} failed: ${tail(r.stderr, 3, 300)}`, {
          vm: name,
        });
      }
      if (o.mode !== undefined) await applyMode((argv) => exec(argv, { timeoutMs: 30_000 }), name, path, o.mode);
    },

    async getFile(path) {
      const timeoutMs = await execTimeout();
      const { r } = await run(sshGuestArgv(['cat', '--', path], {}), { timeoutMs });
      if (r.exitCode !== 0) {
        throw new LocalVmError('COMMAND_FAILED', `reading ${path} in ${name} failed: ${tail(r.stderr, 3, 300)}`, {
          vm: name,
        });
      }
      return r.stdoutBytes ?? new TextEncoder().encode(r.stdout);
    },

    async probe(timeoutMs): Promise<ProbeResult> {
      const o = await observe(host, name);
      if (!o.exists) return { ready: false, detail: 'no such VM' };
      if (o.state.state !== 'running')
        return { ready: false, detail: `process not running (${o.state.reason ?? o.state.state})` };
      if (!o.record?.ssh) return { ready: false, detail: 'the VM has no SSH transport' };
      const started = performance.now();
      try {
        const { r } = await run(['true'], { timeoutMs });
        if (r.exitCode === 0)
          return { ready: true, detail: `ssh answered in ${formatMs(performance.now() - started)}` };
        return { ready: false, detail: `ssh true exited ${r.exitCode}: ${tail(r.stderr, 2, 300)}` };
      } catch (error) {
        // A changed host key is never "not ready yet": the wait stops with it.
        if (isHostKeyRefusal(error)) throw error;
        if (error instanceof LocalVmError && error.code === 'TIMEOUT')
          return { ready: false, detail: `ssh: no answer in ${formatMs(timeoutMs)}` };
        return { ready: false, detail: (error as Error).message };
      }
    },
  };
}

/** The VM's public key, as the seed injects it. */
export async function readPublicKey(keyFile: string): Promise<string> {
  return (await readFile(`${keyFile}.pub`, 'utf8')).trim();
}

/**
 * Stops the VM's control master, if one runs: after a snapshot restore the guest's side of
 * its connection jumped back in time, so the next call must connect afresh. Best effort.
 */
export async function closeSshMaster(host: QemuHost, paths: VmPaths): Promise<void> {
  const controlPath = controlPathFor(paths.dir, host.config.runDir);
  if (!(await stat(controlPath).catch(() => undefined))) return;
  await host.runner.run(sshExitMasterCommand(controlPath), { timeoutMs: 5_000 }).catch(() => undefined);
}
