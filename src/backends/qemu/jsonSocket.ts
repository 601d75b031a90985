/**
 * A newline-delimited JSON connection over a unix socket: the transport under both QMP
 * and the guest agent. Short-lived by design (connect, talk, close); every wait takes an
 * AbortSignal (a deadline's, usually), and an abort destroys the connection so a late
 * reply can never be read as the answer to a later question on the same socket.
 */
import { createConnection, type Socket } from 'node:net';
import { LocalVmError } from '../../errors.js';
import { deadline, onAbort, type Deadline } from '../../time/deadline.js';

export type JsonMessage = Record<string, unknown>;

/** Why a connection ended, kept so every later wait fails with the same, precise error. */
interface Closed {
  /** A LocalVmError, or the reason of the signal that abandoned the connection. */
  error: unknown;
}

export class JsonLineSocket {
  private readonly queue: JsonMessage[] = [];
  private pending: Buffer[] = [];
  private waiter: { resolve: () => void } | undefined;
  private closed: Closed | undefined;
  /** Lines that were not JSON (a reply cut by an earlier client's disconnect). */
  discarded = 0;

  private constructor(
    private readonly socket: Socket,
    readonly path: string,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.markClosed(this.closedError(err)));
    socket.on('close', () => this.markClosed(this.closedError()));
  }

  /**
   * Connects within `limit` and runs the protocol's handshake on the new connection; a
   * handshake that fails (or runs out of time) closes the connection before rethrowing.
   */
  static async open<T>(path: string, limit: Deadline, handshake: (conn: JsonLineSocket) => Promise<T>): Promise<T> {
    const conn = await JsonLineSocket.connect(path, limit.remainingMs(), limit.signal);
    try {
      return await handshake(conn);
    } catch (error) {
      conn.close();
      throw error;
    }
  }

  /**
   * Connects to the unix socket at `path`. Rejects with TRANSIENT when nothing listens
   * (ENOENT/ECONNREFUSED: the VM is not up yet, or just went away), TIMEOUT after
   * `timeoutMs`, and with the reason of `signal` when it aborts first.
   */
  static connect(path: string, timeoutMs: number, signal?: AbortSignal): Promise<JsonLineSocket> {
    const limit = deadline(timeoutMs, { what: `connecting to ${path}`, parent: signal, details: { socket: path } });
    return new Promise<JsonLineSocket>((resolve, reject) => {
      if (limit.signal.aborted) {
        reject(limit.signal.reason);
        return;
      }
      const socket = createConnection({ path });
      const detach = onAbort(limit.signal, (reason) => {
        socket.destroy();
        reject(reason);
      });
      socket.once('connect', () => {
        detach();
        socket.removeAllListeners('error');
        resolve(new JsonLineSocket(socket, path));
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        detach();
        socket.destroy();
        reject(
          new LocalVmError('TRANSIENT', `socket ${path} is not accepting connections (${err.code ?? err.message})`, {
            cause: err,
            details: { errno: err.code },
          }),
        );
      });
    }).finally(() => limit.dispose());
  }

  /** Writes one message followed by a newline. */
  send(message: JsonMessage): void {
    if (this.closed) throw this.closed.error;
    this.socket.write(`${JSON.stringify(message)}\n`);
  }

  /**
   * The next message. When `signal` aborts first (a deadline: TIMEOUT) the connection is
   * abandoned (destroyed) and the call rejects with the signal's reason. Rejects with
   * PROTOCOL when the peer closed the connection.
   */
  async receive(signal: AbortSignal): Promise<JsonMessage> {
    while (true) {
      const next = this.queue.shift();
      if (next) return next;
      if (this.closed) throw this.closed.error;
      if (signal.aborted) {
        this.markClosed(signal.reason);
        this.socket.destroy();
        throw signal.reason;
      }
      await new Promise<void>((resolve) => {
        const detach = onAbort(signal, () => {
          this.waiter = undefined;
          resolve();
        });
        this.waiter = {
          resolve: () => {
            detach();
            this.waiter = undefined;
            resolve();
          },
        };
      });
    }
  }

  /** False once the connection failed, timed out or was closed by either side. */
  get open(): boolean {
    return this.closed === undefined;
  }

  /** Lets the process exit while this connection sits idle (`unref`), or not (`ref`). */
  hold(held: boolean): void {
    if (held) this.socket.ref();
    else this.socket.unref();
  }

  /** Closes the connection; safe to call twice. */
  close(): void {
    this.markClosed(new LocalVmError('PROTOCOL', `connection to ${this.path} was closed by us`));
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    let start = 0;
    let nl = chunk.indexOf(10);
    while (nl !== -1) {
      this.pending.push(chunk.subarray(start, nl));
      this.pushLine(Buffer.concat(this.pending));
      this.pending = [];
      start = nl + 1;
      nl = chunk.indexOf(10, start);
    }
    if (start < chunk.length) this.pending.push(chunk.subarray(start));
  }

  private pushLine(line: Buffer): void {
    // QGA may emit a 0xFF sentinel (guest-sync-delimited) and stale, truncated replies:
    // anything that does not parse as a JSON object is dropped, never fatal.
    const text = line.toString('utf8').replace(/^[\s\xff\ufffd]+/, '');
    if (!text.trim()) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      this.discarded++;
      return;
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      this.discarded++;
      return;
    }
    this.queue.push(parsed as JsonMessage);
    this.waiter?.resolve();
  }

  private closedError(err?: Error): LocalVmError {
    const partial = this.pending.length > 0 ? ' in the middle of a message' : '';
    return new LocalVmError(
      'PROTOCOL',
      `connection to ${this.path} closed by the peer${partial}${err ? ` (${err.message})` : ''}`,
      { transient: true, cause: err },
    );
  }

  private markClosed(error: unknown): void {
    if (!this.closed) this.closed = { error };
    this.waiter?.resolve();
  }
}

/** A random id for a command; both QMP and QGA echo it in the reply. */
export function newId(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.floor(Math.random() * 2 ** 32).toString(36)}`;
}
