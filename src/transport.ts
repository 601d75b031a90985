/**
 * The guest-transport seam: how localvm reaches inside a guest, whatever runs it. The guest
 * agent (QEMU, libvirt), SSH and `orbctl run` (OrbStack) are implementations; the Connector
 * and readiness speak only this interface, so a new way in is one more implementation.
 */
import type { ExecOptions, ExecResult, ProbeResult, PutFileOptions } from './backend.js';
import { LocalVmError, tail } from './errors.js';

export interface GuestTransport {
  /** What this transport is (`agent`, `ssh`, `orbctl`), for messages and `info`. */
  readonly kind: string;
  /** Runs `argv` in the guest (no shell). Resolves whatever the exit code; TIMEOUT past `timeoutMs`. */
  exec(argv: string[], options?: ExecOptions): Promise<ExecResult>;
  /** Writes `content` to the absolute guest path, byte-exact, then applies `mode`. */
  putFile(path: string, content: Uint8Array, options?: PutFileOptions): Promise<void>;
  /** Reads a guest file, byte-exact. */
  getFile(path: string): Promise<Uint8Array>;
  /** One readiness probe: does the guest answer through this transport, within `timeoutMs`? */
  probe(timeoutMs: number): Promise<ProbeResult>;
  /**
   * Keeps this process's connection open for `ms` after each use (a VM this process owns and
   * uses again later), where reconnecting costs time: the guest agent's. Optional.
   */
  keepOpen?(ms: number): Promise<void>;
}

/**
 * How long a VM this process owns and uses again later (a fixture's clone prepared ahead of its
 * test, a warm pool VM waiting for its acquire) keeps its connection open unused (keepOpen):
 * qemu-ga takes 60-100 ms to take a new connection under emulation (measured: the sample test's
 * calls 200-240 ms in a clone left idle past the default 500 ms linger, 140-160 ms kept open).
 */
export const OWNED_KEEP_OPEN_MS = 30_000;

/** `chmod MODE -- PATH`: how every transport and resource applies a guest file's mode. */
export function chmodArgv(mode: number, path: string): string[] {
  return ['chmod', (mode & 0o7777).toString(8).padStart(4, '0'), '--', path];
}

/** Applies `mode` to a guest file with `exec`; COMMAND_FAILED naming the file when chmod fails. */
export async function applyMode(
  exec: (argv: string[]) => Promise<ExecResult>,
  vm: string,
  path: string,
  mode: number,
): Promise<void> {
  const r = await exec(chmodArgv(mode, path));
  if (r.exitCode !== 0) {
    throw new LocalVmError('COMMAND_FAILED', `chmod of ${path} in ${vm} failed: ${tail(r.stderr, 3, 300)}`, { vm });
  }
}

/** The sentence a TIMEOUT and the exec hint carry when the agent is silent but the guest is up. */
export const AGENT_SILENT =
  'no qemu-guest-agent answered; the guest is up: use transport ssh or install qemu-guest-agent';

/** A getty's prompt (`NAME login: `) in the console's last lines. Pure. */
export function consoleShowsLogin(consoleTail: string): boolean {
  return /\S login: *$/m.test(consoleTail);
}

/**
 * What to add when the agent gave no answer: the guest is up when its console shows a login
 * prompt or an SSH server sent its banner; undefined when nothing says so. Pure.
 */
export function agentSilenceNote(evidence: {
  consoleTail: string;
  sshBanner?: string | undefined;
}): string | undefined {
  const seen: string[] = [];
  if (consoleShowsLogin(evidence.consoleTail)) seen.push('the console shows a login prompt');
  if (evidence.sshBanner?.startsWith('SSH-')) seen.push(`port 22 answers (${evidence.sshBanner})`);
  return seen.length ? `${AGENT_SILENT} (${seen.join(', ')})` : undefined;
}
