/**
 * The OpenSSH client's command lines for one VM, pure. Like Lima (pkg/sshutil), every call
 * goes through the system `ssh` with a per-VM key, a per-VM known_hosts file and a control
 * master socket, so only the first call of a while pays the handshake. The user's own
 * ~/.ssh/config is not read (`-F /dev/null`): what reaches the guest is what is written here.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { shellQuote } from '../../../argv.js';
import { LocalVmError } from '../../../errors.js';
import type { Command } from '../../../runner.js';
import { MAX_SOCKET_PATH } from '../cmdline.js';

/** Where and as whom a VM is reached over SSH (the record's `ssh` part plus its paths). */
export interface SshTarget {
  /** The VM's name: its host key is pinned under the alias `localvm-<name>`. */
  name: string;
  port: number;
  user: string;
  /** The private key; its `.pub` sits next to it. */
  keyFile: string;
  knownHosts: string;
  controlPath: string;
}

/** How long an idle control master stays for the next call. It also dies with the VM's connection. */
export const CONTROL_PERSIST_S = 60;

/** The alias the host key is pinned under, so it does not depend on the forwarded port. */
export function hostKeyAlias(name: string): string {
  return `localvm-${name}`;
}

/**
 * ssh_config values are tokenised on blanks and expand `%` tokens: a path is quoted and its
 * `%` doubled; a `"` cannot be quoted at all and is refused.
 */
export function configValue(path: string): string {
  if (/["\n\0]/.test(path)) {
    throw new LocalVmError('VALIDATION', `path ${JSON.stringify(path)} cannot be given to ssh (quote or newline)`);
  }
  const escaped = path.replace(/%/g, '%%');
  return /[\s]/.test(escaped) ? `"${escaped}"` : escaped;
}

/**
 * The options every call shares. `pinned`: the host key is in known_hosts already, so only
 * that key is accepted (`yes`); before the first connect a new key is learned (`accept-new`,
 * which still refuses a key that differs from a pinned one).
 */
export function sshOptions(t: SshTarget, o: { pinned: boolean; connectTimeoutS?: number; batch?: boolean }): string[] {
  const opts: string[] = [
    'IdentitiesOnly=yes',
    `IdentityFile=${configValue(t.keyFile)}`,
    `UserKnownHostsFile=${configValue(t.knownHosts)}`,
    `StrictHostKeyChecking=${o.pinned ? 'yes' : 'accept-new'}`,
    `HostKeyAlias=${hostKeyAlias(t.name)}`,
    'CheckHostIP=no',
    'PreferredAuthentications=publickey',
    'GSSAPIAuthentication=no',
    'LogLevel=ERROR',
    'ControlMaster=auto',
    `ControlPath=${configValue(t.controlPath)}`,
    `ControlPersist=${CONTROL_PERSIST_S}`,
    ...(o.batch === false ? [] : ['BatchMode=yes']),
    ...(o.connectTimeoutS !== undefined ? [`ConnectTimeout=${Math.max(1, Math.ceil(o.connectTimeoutS))}`] : []),
  ];
  return ['-F', '/dev/null', ...opts.flatMap((v) => ['-o', v]), '-p', String(t.port), '-l', t.user];
}

/**
 * The remote command for an argv. SSH carries one string that the guest user's shell parses,
 * so each element is quoted on its own: no input ever becomes shell syntax. Pure.
 */
export function remoteCommand(argv: readonly string[]): string {
  return argv.map(shellQuote).join(' ');
}

/** `ssh ... 127.0.0.1 -- <argv quoted>`: a non-interactive call (no TTY, stdin as given). */
export function sshExecCommand(
  t: SshTarget,
  argv: readonly string[],
  o: { pinned: boolean; connectTimeoutS?: number; sshBinary?: string },
): Command {
  return {
    file: o.sshBinary ?? 'ssh',
    args: [...sshOptions(t, o), '-T', '127.0.0.1', '--', remoteCommand(argv)],
  };
}

/**
 * `localvm ssh`: a login shell (with a TTY when `tty`) or a command, like `limactl shell`. Not
 * in batch mode, so ssh may ask about what it needs on the terminal it inherits.
 */
export function sshInteractiveCommand(
  t: SshTarget,
  argv: readonly string[],
  o: { pinned: boolean; tty: boolean; sshBinary?: string },
): Command {
  return {
    file: o.sshBinary ?? 'ssh',
    args: [
      ...sshOptions(t, { pinned: o.pinned, batch: false }),
      ...(o.tty ? ['-t'] : ['-T']),
      '127.0.0.1',
      ...(argv.length > 0 ? ['--', remoteCommand(argv)] : []),
    ],
  };
}

/** `ssh -O exit`: stops the control master on `controlPath` (it fails harmlessly when none runs). */
export function sshExitMasterCommand(controlPath: string, sshBinary = 'ssh'): Command {
  return {
    file: sshBinary,
    args: ['-F', '/dev/null', '-o', `ControlPath=${configValue(controlPath)}`, '-O', 'exit', '127.0.0.1'],
  };
}

// ssh adds `.` and 16 random characters to the control path while it binds the socket.
const CONTROL_SUFFIX = 17;

/**
 * The control socket: in the VM directory when the path fits a unix socket with ssh's
 * temporary suffix, else in the run dir (keyed by a hash of the VM dir, as the QMP sockets). Pure.
 */
export function controlPathFor(dir: string, runDir: string): string {
  const inDir = join(dir, 'ssh.sock');
  if (Buffer.byteLength(inDir) + CONTROL_SUFFIX <= MAX_SOCKET_PATH) return inDir;
  return join(runDir, createHash('sha256').update(dir).digest('hex').slice(0, 12), 'ssh.sock');
}

/**
 * An ssh_config stanza for the VM, like `vagrant ssh-config`: `ssh -F FILE localvm-NAME`, pyinfra
 * or Ansible reach the guest with the VM's own key and only its pinned host key. Pure.
 */
export function sshConfigStanza(t: Omit<SshTarget, 'controlPath'>): string {
  return [
    `Host ${hostKeyAlias(t.name)}`,
    '  HostName 127.0.0.1',
    `  Port ${t.port}`,
    `  User ${t.user}`,
    `  IdentityFile ${configValue(t.keyFile)}`,
    '  IdentitiesOnly yes',
    `  UserKnownHostsFile ${configValue(t.knownHosts)}`,
    '  StrictHostKeyChecking yes',
    `  HostKeyAlias ${hostKeyAlias(t.name)}`,
    '  CheckHostIP no',
    '  PreferredAuthentications publickey',
    '  LogLevel ERROR',
    '',
  ].join('\n');
}

/** What an ssh failure (exit 255) was, from its stderr. Pure. */
export type SshFailure = 'host-key-changed' | 'host-key-unknown' | 'auth' | 'connect';

export function classifySshFailure(exitCode: number, stderr: string): SshFailure | undefined {
  if (exitCode !== 255) return undefined;
  if (/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for \S+ has changed/i.test(stderr)) return 'host-key-changed';
  if (/Host key verification failed|No \S+ host key is known/i.test(stderr)) return 'host-key-unknown';
  if (/Permission denied|Too many authentication failures/i.test(stderr)) return 'auth';
  // Everything else ssh itself says at 255: refused, reset, closed by the (not yet up) guest.
  if (
    stderr === '' ||
    /^(ssh:|kex_exchange_identification|Connection|mux_client|Control socket|banner exchange)/im.test(stderr)
  )
    return 'connect';
  return undefined;
}

/** `ssh-keygen` writing the VM's ed25519 key pair (no passphrase; `<file>` 0600 and `<file>.pub`). */
export function keygenCommand(file: string, comment: string, binary = 'ssh-keygen'): Command {
  return { file: binary, args: ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file] };
}
