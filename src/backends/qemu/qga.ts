/**
 * A guest-agent (qemu-ga) client. The agent has no greeting, and a command sent while it
 * was not listening is queued in the virtio channel and answered later, possibly to the
 * next client: so every session starts with `guest-sync` carrying a random id, and every
 * reply is matched by id; everything else is stale and dropped.
 */
import type { ExecResult } from '../../backend.js';
import { LocalVmError } from '../../errors.js';
import { deadline, withDeadline } from '../../time/deadline.js';
import { poll } from '../../time/poll.js';
import { JsonLineSocket, newId } from './jsonSocket.js';
import { acquireFileLock, KeyedMutex } from '../../host/lock.js';
import { replyError } from './qmp.js';

export interface QgaSyncOptions {
  /** How long to wait for the connection and for the sync reply. */
  timeoutMs: number;
  /** Abandons the connection when it aborts. */
  signal?: AbortSignal | undefined;
}

/**
 * One guest agent, as the exec and file-transfer logic needs it: send one command, get its
 * reply. A QgaClient on the agent's socket is one; libvirt's `qemu-agent-command` is another.
 */
export interface AgentChannel {
  /** Runs one agent command; resolves with its `return`, COMMAND_FAILED on an error reply, TIMEOUT past `timeoutMs`. */
  execute(command: string, args?: Record<string, unknown>, timeoutMs?: number, signal?: AbortSignal): Promise<unknown>;
  /** False once the channel broke and must not be used again. */
  readonly open: boolean;
}

export class QgaClient implements AgentChannel {
  private constructor(private readonly conn: JsonLineSocket) {}

  /**
   * Connects and synchronises. Rejects TRANSIENT when the socket does not accept, and
   * TIMEOUT when the agent does not answer `guest-sync` in time (it is not up yet).
   */
  static async connect(path: string, options: QgaSyncOptions): Promise<QgaClient> {
    const what = `guest agent on ${path}`;
    return withDeadline(options.timeoutMs, { what, parent: options.signal, details: { socket: path } }, (limit) =>
      JsonLineSocket.open(path, limit, async (conn) => {
        const client = new QgaClient(conn);
        await client.sync(limit.remainingMs(), limit.signal);
        return client;
      }),
    );
  }

  /** `guest-sync` with a random numeric id; returns once the matching reply came back. */
  async sync(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const id = Math.floor(Math.random() * 2 ** 31);
    const what = `guest-sync on ${this.conn.path}`;
    await withDeadline(timeoutMs, { what, parent: signal, details: { socket: this.conn.path } }, async (limit) => {
      this.conn.send({ execute: 'guest-sync', arguments: { id } });
      while (true) {
        const msg = await this.conn.receive(limit.signal);
        if (msg.return === id) return;
      }
    });
  }

  /**
   * Runs one agent command; resolves with its `return`. Error replies → COMMAND_FAILED
   * with class and description; no reply in `timeoutMs` → TIMEOUT, an abort of `signal` →
   * its reason (both drop the connection).
   */
  async execute(
    command: string,
    args?: Record<string, unknown>,
    timeoutMs = 10_000,
    signal?: AbortSignal,
  ): Promise<unknown> {
    const id = newId('qga');
    const what = `guest agent ${command} on ${this.conn.path}`;
    return withDeadline(timeoutMs, { what, parent: signal, details: { socket: this.conn.path } }, async (limit) => {
      this.conn.send(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id });
      while (true) {
        const msg = await this.conn.receive(limit.signal);
        if (msg.id !== id) continue;
        if ('error' in msg) throw replyError('QGA', command, msg.error);
        return msg.return;
      }
    });
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
  /** Sockets whose idle connection lingers longer than `lingerMs` (see keep). */
  private readonly kept = new Map<string, number>();
  private readonly early = new Map<
    string,
    { connecting: Promise<QgaClient>; releaseLock: () => Promise<void>; abort: AbortController }
  >();

  constructor(private readonly lingerMs: number) {}

  /**
   * Takes the agent lock and starts connecting to `socketPath` now, its `guest-sync` sent
   * ahead: for a clone that is restored but not yet running, so the sync is in the channel
   * when the guest wakes and the agent answers it first thing. The next `run` on the socket
   * uses this connection once the sync is answered (within `timeoutMs` of now).
   */
  async prepare(socketPath: string, lockPath: string, timeoutMs: number): Promise<void> {
    await this.mutex.run(socketPath, async () => {
      if (this.idle.has(socketPath) || this.early.has(socketPath)) return;
      const releaseLock = await acquireFileLock(lockPath, { timeoutMs, what: 'guest agent session' });
      const abort = new AbortController();
      const connecting = QgaClient.connect(socketPath, { timeoutMs, signal: abort.signal });
      // Settled by the `run` or `drop` that takes it; never an unhandled rejection meanwhile.
      connecting.catch(() => undefined);
      this.early.set(socketPath, { connecting, releaseLock, abort });
    });
  }

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
    signal?: AbortSignal,
  ): Promise<T> {
    const limit = deadline(timeoutMs, { what: `guest agent session on ${socketPath}`, parent: signal });
    try {
      return await this.mutex.run(socketPath, async () => {
        let session = this.take(socketPath) ?? (await this.takeEarly(socketPath));
        if (!session) {
          limit.check();
          const releaseLock = await acquireFileLock(lockPath, {
            timeoutMs: Math.max(1, limit.remainingMs()),
            what: 'guest agent session',
          });
          try {
            session = {
              qga: await QgaClient.connect(socketPath, { timeoutMs: limit.remainingMs(), signal: limit.signal }),
              releaseLock,
            };
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
    } finally {
      limit.dispose();
    }
  }

  /**
   * Lets the connection to `socketPath` linger `ms` after each use instead of `lingerMs`, for
   * a VM this process owns alone and will use again later (a fixture's clone prepared ahead of
   * its test): its next command then skips qemu-ga's reconnect, 60-100 ms under emulation.
   * The agent lock stays with this process meanwhile: another process waits up to `ms` for
   * it. An idle connection already parked is re-armed; `drop` ends it.
   */
  keep(socketPath: string, ms: number): void {
    this.kept.set(socketPath, ms);
    const idle = this.take(socketPath);
    if (idle) this.park(socketPath, idle.qga, idle.releaseLock);
  }

  /** Closes the idle connection to `socketPath` (if any) and releases its lock: before stop/delete. */
  async drop(socketPath: string): Promise<void> {
    this.kept.delete(socketPath);
    await this.mutex.run(socketPath, async () => {
      const early = this.early.get(socketPath);
      if (early) {
        this.early.delete(socketPath);
        early.abort.abort(new LocalVmError('TRANSIENT', 'the agent connection was dropped'));
        await early.connecting.then(
          (qga) => qga.close(),
          () => undefined,
        );
        await early.releaseLock();
      }
      const session = this.take(socketPath);
      if (session) {
        session.qga.close();
        await session.releaseLock();
      }
    });
  }

  /** The connection `prepare` started, once synchronised; a failed one releases its lock and rejects. */
  private async takeEarly(
    socketPath: string,
  ): Promise<{ qga: QgaClient; releaseLock: () => Promise<void> } | undefined> {
    const early = this.early.get(socketPath);
    if (!early) return undefined;
    this.early.delete(socketPath);
    try {
      return { qga: await early.connecting, releaseLock: early.releaseLock };
    } catch (error) {
      await early.releaseLock();
      throw error;
    }
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
    const lingerMs = this.kept.get(socketPath) ?? this.lingerMs;
    if (!qga.open || lingerMs <= 0) {
      qga.close();
      void releaseLock();
      return;
    }
    qga.hold(false);
    const timer = setTimeout(() => {
      if (this.idle.get(socketPath)?.timer !== timer) return;
      this.idle.delete(socketPath);
      this.kept.delete(socketPath);
      qga.close();
      void releaseLock();
    }, lingerMs);
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
  /** Ends the run early: the guest process is killed and the call rejects with the reason. */
  signal?: AbortSignal | undefined;
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

/** The least time one guest-exec-status call gets (it answers in about a millisecond). */
const STATUS_FLOOR_MS = 1_000;

/**
 * `guest-exec` with captured output, then `guest-exec-status` polled with a short
 * adaptive interval. On timeout, or when `signal` aborts, the guest process is killed
 * (best effort) and TIMEOUT (or the signal's reason) thrown.
 */
export async function guestExec(qga: AgentChannel, argv: string[], options: GuestExecOptions): Promise<ExecResult> {
  const started = performance.now();
  const full = wrapArgv(argv, options);
  const [path, ...arg] = full;
  if (path === undefined) throw new LocalVmError('VALIDATION', 'exec needs a command');
  const args: Record<string, unknown> = { path, arg, 'capture-output': true };
  if (options.stdin !== undefined) args['input-data'] = Buffer.from(options.stdin).toString('base64');
  const limit = deadline(options.timeoutMs, { what: `${argv.join(' ')} in the guest`, parent: options.signal });
  try {
    const reply = (await qga.execute('guest-exec', args, limit.remainingMs(), limit.signal)) as { pid?: number };
    const pid = reply.pid;
    if (typeof pid !== 'number')
      throw new LocalVmError('PROTOCOL', `guest-exec returned no pid: ${JSON.stringify(reply)}`);
    options.onPid?.(pid);
    const kill = () =>
      qga.execute('guest-exec', { path: 'kill', arg: ['-KILL', String(pid)] }, 2_000).catch(() => undefined);
    try {
      // Status calls are not cut by the deadline: the connection must stay usable to kill
      // the process when it passes. The floor keeps one made just before it from timing out.
      return await poll(
        async () => {
          const status = (await qga.execute(
            'guest-exec-status',
            { pid },
            Math.max(STATUS_FLOOR_MS, limit.remainingMs()),
          )) as {
            exited?: boolean;
            exitcode?: number;
            signal?: number;
            'out-data'?: string;
            'err-data'?: string;
          };
          if (!status.exited) return undefined;
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
          } satisfies ExecResult;
        },
        {
          what: `${argv.join(' ')} in the guest`,
          deadline: limit,
          initialMs: 1,
          factor: 2,
          maxMs: 50,
          onTimeout: () =>
            new LocalVmError('TIMEOUT', `${argv.join(' ')} did not finish in ${limit.ms} ms`, {
              details: { guestPid: pid, argv },
            }),
        },
      );
    } catch (error) {
      // Timed out or cancelled: the process must not run on in the guest.
      if (limit.expired() && qga.open) await kill();
      throw error;
    }
  } finally {
    limit.dispose();
  }
}

// File transfer over a client lives in its own room; imported from here too.
export { GET_CHUNK, guestGetFile, guestPutFile, PUT_CHUNK } from './qgaFiles.js';
