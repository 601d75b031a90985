/**
 * A clone's identity (clock, hostname, MAC) through a helper parked in its template.
 *
 * Under software emulation a restored guest runs every code path cold: its first process
 * (fork, exec, a shell) costs 150-250 ms before it does anything, which is most of a clone's
 * create time when personalisation is a guest-exec. So the template, just before it is
 * frozen, starts one small shell that opens a virtio-serial port of its own
 * (`org.localvm.identity.0`), forks the child that will set the MAC (the two joined by a
 * FIFO both opened and already unlinked), says `parked` and blocks reading a line. Every
 * clone inherits that process mid-read: after `cont` the host writes `EPOCH HOSTNAME MAC` to
 * the port, the shell writes the hostname into /proc, hands the MAC to its child (which execs
 * `ip`) and waits for it, or kills it when no MAC is asked for (a held pool clone), and execs
 * `date`, whose `ok` line on the port says all of it is done. No fork happens in the clone,
 * and the agent is not involved (it answers its own `guest-sync` meanwhile).
 *
 * The values travel as one data line that `read -r` splits; each is checked here first
 * (digits, a VM name, a MAC), so nothing from input can become script text.
 *
 * The host end of the port must be connected whenever the guest reads it: a read from a
 * port with no host connected returns end-of-file at once. So the template build connects
 * before parking and stays connected through the freeze, and a clone connects before `cont`
 * (the port's host state is compared only when the restored guest first runs). A clone
 * resumed with nobody connected (a held clone in another process) makes the helper read
 * end-of-file and exit; that clone is personalised through the agent instead.
 */
import { connect, type Socket } from 'node:net';
import { LocalVmError } from '../../../errors.js';
import { VM_NAME_PATTERN } from '../../../validation.js';
import { IDENTITY_PORT } from '../cmdline.js';

// "$1": the port's name. The port is found through sysfs (the tiny guest has no udev), the
// network interface is the first that is not loopback, like the agent's identity script.
// Every step that can fail says so on the port, so the host never waits for a silent helper.
const HELPER = [
  'p=; for d in /sys/class/virtio-ports/*; do [ "$(cat "$d/name" 2>/dev/null)" = "$1" ] && p=/dev/${d##*/}; done',
  '[ -c "$p" ] || exit 3',
  'n=; for d in /sys/class/net/*; do [ "${d##*/}" = lo ] || { n=${d##*/}; break; }; done',
  // The pipe to the MAC child is a FIFO opened by both ends now and unlinked now: nothing
  // of it is left in /run, and a clone runs no `rm`.
  'f=/run/localvm-identity.$$',
  'mkfifo -m 600 "$f" || exit 4',
  'exec 3<>"$p" 4<>"$f" 5<"$f" || exit 5',
  '( exec 3>&- 4>&-; read -r m <&5; exec 5<&-; if [ -n "$m" ] && [ -n "$n" ]; then exec ip link set dev "$n" address "$m"; fi ) &',
  'c=$!',
  'exec 5<&-',
  'rm -f "$f"',
  'echo parked >&3',
  'read -r t h m <&3 || exit 6',
  'echo "$h" > /proc/sys/kernel/hostname || { echo "error: hostname $h could not be set"; exit 7; } >&3',
  // No MAC asked for: the child is not needed, and waiting for it to exit costs ~50 ms cold.
  'if [ -n "$m" ]; then echo "$m" >&4; wait "$c" || { echo "error: MAC $m could not be set"; exit 8; } >&3; else kill "$c"; fi',
  'exec 4>&-',
  'exec date -s "@$t" "+ok %s" >&3 2>&3',
].join('\n');

/** The argv that parks the helper (started through the agent, not waited for). Pure. */
export function helperArgv(): string[] {
  return ['/bin/sh', '-c', HELPER, 'sh', IDENTITY_PORT];
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** The line a clone's helper reads: epoch seconds, hostname, MAC (empty: keep it). Pure. */
export function identityLine(hostname: string, mac: string | undefined, epochMs: number): string {
  if (!VM_NAME_PATTERN.test(hostname)) throw new LocalVmError('INTERNAL', `not a host name: ${hostname}`);
  if (mac !== undefined && !MAC.test(mac)) throw new LocalVmError('INTERNAL', `not a MAC: ${mac}`);
  if (!Number.isFinite(epochMs) || epochMs < 0) throw new LocalVmError('INTERNAL', `not a time: ${epochMs}`);
  return `${Math.round(epochMs / 1000)} ${hostname} ${mac ?? ''}\n`;
}

/** What a helper's answer line means: done, or the helper's own error. Pure. */
export function parseAnswer(line: string): { ok: true } | { ok: false; why: string } {
  const t = line.trim();
  if (/^ok \d+$/.test(t)) return { ok: true };
  return {
    ok: false,
    why: t.startsWith('error: ') ? t.slice('error: '.length) : `unexpected answer "${t.slice(0, 200)}"`,
  };
}

/** The host end of a VM's identity port: whole lines in, lines out. */
export class IdentityPort {
  private buffered = '';
  private readonly lines: string[] = [];
  private waiter: (() => void) | undefined;
  private ended: Error | undefined;

  private constructor(
    private readonly socket: Socket,
    readonly path: string,
  ) {
    // A held clone's port may stay open for as long as the pool keeps it: it must not keep
    // the process alive (a wait for an answer does, through its timer).
    socket.unref();
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffered += chunk;
      let nl: number;
      while ((nl = this.buffered.indexOf('\n')) !== -1) {
        this.lines.push(this.buffered.slice(0, nl));
        this.buffered = this.buffered.slice(nl + 1);
      }
      this.wake();
    });
    const end = (error?: Error) => {
      this.ended ??= error ?? new Error('the connection closed');
      this.wake();
    };
    socket.on('error', end);
    socket.on('close', () => end());
  }

  /** Connects to QEMU's end of the port at `path` (it listens from launch on). */
  static async connect(path: string, timeoutMs: number): Promise<IdentityPort> {
    const socket = connect(path);
    const timer = setTimeout(() => socket.destroy(new Error(`no connection within ${timeoutMs} ms`)), timeoutMs);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
    } catch (error) {
      throw new LocalVmError('TRANSIENT', `cannot connect to the identity port ${path}: ${(error as Error).message}`, {
        details: { socket: path },
      });
    } finally {
      clearTimeout(timer);
    }
    return new IdentityPort(socket, path);
  }

  send(line: string): void {
    this.socket.write(line);
  }

  /** The next line, or TIMEOUT naming `what` after `timeoutMs` (PROTOCOL when the port closes first). */
  async nextLine(timeoutMs: number, what: string): Promise<string> {
    const deadline = performance.now() + timeoutMs;
    while (this.lines.length === 0) {
      if (this.ended)
        throw new LocalVmError('PROTOCOL', `${what}: ${this.ended.message}`, { details: { socket: this.path } });
      const left = deadline - performance.now();
      if (left <= 0)
        throw new LocalVmError('TIMEOUT', `${what}: no answer within ${timeoutMs} ms`, {
          details: { socket: this.path },
        });
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    return this.lines.shift() as string;
  }

  close(): void {
    this.socket.destroy();
  }

  private wake(): void {
    this.waiter?.();
  }
}

/**
 * The identity ports this process holds open, by VM name: a clone's is opened before its
 * `cont` and used right after (the restore and personalise steps of one plan).
 */
export class IdentityPorts {
  private readonly open = new Map<string, IdentityPort>();

  set(vm: string, port: IdentityPort): void {
    this.open.get(vm)?.close();
    this.open.set(vm, port);
  }

  /** Removes and returns `vm`'s port (the caller closes it). */
  take(vm: string): IdentityPort | undefined {
    const port = this.open.get(vm);
    this.open.delete(vm);
    return port;
  }

  drop(vm: string): void {
    this.take(vm)?.close();
  }
}
