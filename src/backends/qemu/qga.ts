/**
 * A guest-agent (qemu-ga) client. The agent has no greeting, and a command sent while it
 * was not listening is queued in the virtio channel and answered later, possibly to the
 * next client: so every session starts with `guest-sync` carrying a random id, and every
 * reply is matched by id; everything else is stale and dropped.
 */
import { LocalVmError } from '../../errors.js';
import type { ExecResult } from '../../backend.js';
import { JsonLineSocket, newId } from './jsonSocket.js';
import { acquireFileLock, KeyedMutex } from '../../host/lock.js';
import { replyError } from './qmp.js';

export interface QgaSyncOptions {
  /** How long to wait for the connection and for the sync reply. */
  timeoutMs: number;
}

export class QgaClient {
  private constructor(private readonly conn: JsonLineSocket) {}

  /**
   * Connects and synchronises. Rejects TRANSIENT when the socket does not accept, and
   * TIMEOUT when the agent does not answer `guest-sync` in time (it is not up yet).
   */
  static async connect(path: string, options: QgaSyncOptions): Promise<QgaClient> {
    const conn = await JsonLineSocket.connect(path, options.timeoutMs);
    const client = new QgaClient(conn);
    try {
      await client.sync(options.timeoutMs);
      return client;
    } catch (error) {
      conn.close();
      throw error;
    }
  }

  /** `guest-sync` with a random numeric id; returns once the matching reply came back. */
  async sync(timeoutMs: number): Promise<void> {
    const id = Math.floor(Math.random() * 2 ** 31);
    const deadline = performance.now() + timeoutMs;
    this.conn.send({ execute: 'guest-sync', arguments: { id } });
    while (true) {
      const msg = await this.conn.receive(deadline, `guest-sync reply (${timeoutMs} ms)`);
      if (msg.return === id) return;
    }
  }

  /**
   * Runs one agent command; resolves with its `return`. Error replies → COMMAND_FAILED
   * with class and description; no reply in `timeoutMs` → TIMEOUT (connection dropped).
   */
  async execute(command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<unknown> {
    const id = newId('qga');
    const deadline = performance.now() + timeoutMs;
    this.conn.send(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id });
    while (true) {
      const msg = await this.conn.receive(deadline, `reply to ${command}`);
      if (msg.id !== id) continue;
      if ('error' in msg) throw replyError('QGA', command, msg.error);
      return msg.return;
    }
  }

  /** False once the connection broke (timeout, peer closed): it must not be reused. */
  get open(): boolean {
    return this.conn.open;
  }

  /** See JsonLineSocket.hold: an idle pooled connection must not keep the process alive. */
  hold(held: boolean): void {
    this.conn.hold(held);
  }

  close(): void {
    this.conn.close();
  }
}

interface IdleSession {
  qga: QgaClient;
  releaseLock: () => Promise<void>;
  timer: NodeJS.Timeout;
}

/**
 * Guest-agent sessions, one per VM at a time. qemu-ga (virtio-serial) sleeps 100 ms each
 * time it sees the host side hang up, so a fresh connection right after a close costs
 * 100-200 ms; keeping the connection (and the cross-process agent lock) for a short
 * idle linger lets back-to-back operations skip that. A lingering connection never
 * keeps the process alive, and a process that exits with it leaves a lock that the next
 * user steals (its holder is dead).
 */
export class AgentSessions {
  private readonly mutex = new KeyedMutex();
  private readonly idle = new Map<string, IdleSession>();

  constructor(private readonly lingerMs: number) {}

  /**
   * Runs `fn` with a synchronised agent connection to `socketPath`, serialized per
   * socket in-process and across processes by the lock file `lockPath`. The whole of
   * `timeoutMs` covers waiting for the lock, connecting and the sync.
   */
  async run<T>(
    socketPath: string,
    lockPath: string,
    timeoutMs: number,
    fn: (qga: QgaClient) => Promise<T>,
  ): Promise<T> {
    const started = performance.now();
    return this.mutex.run(socketPath, async () => {
      let session = this.take(socketPath);
      if (!session) {
        const left = () => Math.max(1, timeoutMs - (performance.now() - started));
        const releaseLock = await acquireFileLock(lockPath, { timeoutMs: left(), what: 'guest agent session' });
        try {
          session = { qga: await QgaClient.connect(socketPath, { timeoutMs: left() }), releaseLock };
        } catch (error) {
          await releaseLock();
          throw error;
        }
      }
      session.qga.hold(true);
      try {
        return await fn(session.qga);
      } finally {
        this.park(socketPath, session.qga, session.releaseLock);
      }
    });
  }

  /** Closes the idle connection to `socketPath` (if any) and releases its lock: before stop/delete. */
  async drop(socketPath: string): Promise<void> {
    await this.mutex.run(socketPath, async () => {
      const session = this.take(socketPath);
      if (session) {
        session.qga.close();
        await session.releaseLock();
      }
    });
  }

  private take(socketPath: string): { qga: QgaClient; releaseLock: () => Promise<void> } | undefined {
    const idle = this.idle.get(socketPath);
    if (!idle) return undefined;
    this.idle.delete(socketPath);
    clearTimeout(idle.timer);
    if (idle.qga.open) return idle;
    idle.qga.close();
    void idle.releaseLock();
    return undefined;
  }

  private park(socketPath: string, qga: QgaClient, releaseLock: () => Promise<void>): void {
    if (!qga.open || this.lingerMs <= 0) {
      qga.close();
      void releaseLock();
      return;
    }
    qga.hold(false);
    const timer = setTimeout(() => {
      if (this.idle.get(socketPath)?.timer !== timer) return;
      this.idle.delete(socketPath);
      qga.close();
      void releaseLock();
    }, this.lingerMs);
    timer.unref();
    this.idle.set(socketPath, { qga, releaseLock, timer });
  }
}

export interface GuestExecOptions {
  env?: Record<string, string> | undefined;
  cwd?: string | undefined;
  /** Run as this guest user (through `su`), default the agent's user (root). */
  user?: string | undefined;
  stdin?: string | Uint8Array | undefined;
  timeoutMs: number;
  /** Called once the guest pid is known (tests, logs). */
  onPid?: (pid: number) => void;
}

/**
 * The argv actually run for `argv` with `cwd`/`env`/`user`. Pure. Wrappers inherit the
 * agent's environment, and every value travels as its own argv element, never as script text.
 */
export function wrapArgv(argv: string[], options: Pick<GuestExecOptions, 'env' | 'cwd' | 'user'>): string[] {
  let out = argv;
  const env = Object.entries(options.env ?? {});
  // guest-exec's own `env` replaces the whole environment (no PATH, no HOME); `env K=V`
  // adds to the agent's environment instead, which is what a caller expects.
  if (env.length > 0) out = ['env', ...env.map(([k, v]) => `${k}=${v}`), ...out];
  // guest-exec has no working-directory argument; the directory travels as "$1", never
  // spliced into the script text.
  if (options.cwd !== undefined)
    out = ['/bin/sh', '-c', 'cd "$1" || exit 126; shift; exec "$@"', 'sh', options.cwd, ...out];
  if (options.user !== undefined && options.user !== 'root') {
    out = ['su', '-s', '/bin/sh', options.user, '-c', 'exec "$@"', 'sh', ...out];
  }
  return out;
}

const toBytes = (b64: unknown): Uint8Array => (typeof b64 === 'string' ? Buffer.from(b64, 'base64') : new Uint8Array());

/**
 * `guest-exec` with captured output, then `guest-exec-status` polled with a short
 * adaptive interval. On timeout the guest process is killed (best effort) and TIMEOUT thrown.
 */
export async function guestExec(qga: QgaClient, argv: string[], options: GuestExecOptions): Promise<ExecResult> {
  const started = performance.now();
  const full = wrapArgv(argv, options);
  const [path, ...arg] = full;
  if (path === undefined) throw new LocalVmError('VALIDATION', 'exec needs a command');
  const args: Record<string, unknown> = { path, arg, 'capture-output': true };
  if (options.stdin !== undefined) args['input-data'] = Buffer.from(options.stdin).toString('base64');
  const deadline = started + options.timeoutMs;
  const reply = (await qga.execute('guest-exec', args, Math.max(1, deadline - performance.now()))) as { pid?: number };
  const pid = reply.pid;
  if (typeof pid !== 'number')
    throw new LocalVmError('PROTOCOL', `guest-exec returned no pid: ${JSON.stringify(reply)}`);
  options.onPid?.(pid);
  let interval = 1;
  while (true) {
    const status = (await qga.execute('guest-exec-status', { pid }, Math.max(1, deadline - performance.now()))) as {
      exited?: boolean;
      exitcode?: number;
      signal?: number;
      'out-data'?: string;
      'err-data'?: string;
    };
    if (status.exited) {
      const stdoutBytes = toBytes(status['out-data']);
      const stderrBytes = toBytes(status['err-data']);
      const signal = status.signal;
      return {
        exitCode: status.exitcode ?? (signal !== undefined ? 128 + signal : -1),
        signal,
        stdout: Buffer.from(stdoutBytes).toString('utf8'),
        stderr: Buffer.from(stderrBytes).toString('utf8'),
        stdoutBytes,
        stderrBytes,
        durationMs: performance.now() - started,
      };
    }
    const remaining = deadline - performance.now();
    if (remaining <= 0) {
      await qga.execute('guest-exec', { path: 'kill', arg: ['-KILL', String(pid)] }, 2_000).catch(() => undefined);
      throw new LocalVmError('TIMEOUT', `${argv.join(' ')} did not finish in ${options.timeoutMs} ms`, {
        details: { guestPid: pid, argv },
      });
    }
    await new Promise((r) => setTimeout(r, Math.min(interval, remaining)));
    interval = Math.min(interval * 2, 50);
  }
}

/** Bytes per guest-file-write; base64 makes the JSON line 4/3 of this. */
export const PUT_CHUNK = 48 * 1024;
/** Bytes per guest-file-read. */
export const GET_CHUNK = 1024 * 1024;

/** Writes `content` to `guestPath` (created or truncated) through guest-file-*. */
export async function guestPutFile(
  qga: QgaClient,
  guestPath: string,
  content: Uint8Array,
  timeoutMs: number,
  chunk = PUT_CHUNK,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  const left = () => Math.max(1, deadline - performance.now());
  const handle = await qga.execute('guest-file-open', { path: guestPath, mode: 'wb' }, left());
  try {
    const buf = Buffer.from(content.buffer, content.byteOffset, content.byteLength);
    for (let off = 0; off < buf.length; off += chunk) {
      const piece = buf.subarray(off, off + chunk);
      const r = (await qga.execute('guest-file-write', { handle, 'buf-b64': piece.toString('base64') }, left())) as {
        count?: number;
      };
      if (r.count !== piece.length) {
        throw new LocalVmError('COMMAND_FAILED', `short write to ${guestPath}: ${r.count} of ${piece.length} bytes`);
      }
    }
  } catch (error) {
    // The original failure matters, not whether the handle could still be closed.
    await qga.execute('guest-file-close', { handle }, 1_000).catch(() => undefined);
    throw error;
  }
  await qga.execute('guest-file-close', { handle }, left());
}

/** Reads the whole of `guestPath` through guest-file-*. */
export async function guestGetFile(
  qga: QgaClient,
  guestPath: string,
  timeoutMs: number,
  chunk = GET_CHUNK,
): Promise<Uint8Array> {
  const deadline = performance.now() + timeoutMs;
  const left = () => Math.max(1, deadline - performance.now());
  const handle = await qga.execute('guest-file-open', { path: guestPath, mode: 'rb' }, left());
  const parts: Buffer[] = [];
  try {
    while (true) {
      const r = (await qga.execute('guest-file-read', { handle, count: chunk }, left())) as {
        'buf-b64'?: string;
        eof?: boolean;
        count?: number;
      };
      if (r['buf-b64']) parts.push(Buffer.from(r['buf-b64'], 'base64'));
      if (r.eof || !r.count) break;
    }
  } catch (error) {
    await qga.execute('guest-file-close', { handle }, 1_000).catch(() => undefined);
    throw error;
  }
  await qga.execute('guest-file-close', { handle }, left());
  return new Uint8Array(Buffer.concat(parts));
}
