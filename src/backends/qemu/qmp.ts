/**
 * A QMP client: greeting, `qmp_capabilities`, then commands matched to replies by `id`.
 * Asynchronous events that arrive in between are collected, never mistaken for replies.
 */
import { LocalVmError } from '../../errors.js';
import { withDeadline } from '../../time/deadline.js';
import { JsonLineSocket, newId, type JsonMessage } from './jsonSocket.js';

export interface QmpEvent {
  event: string;
  data?: unknown;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpOptions {
  /** Deadline for connect + greeting + capabilities negotiation. */
  connectTimeoutMs?: number;
  /** Abandons the handshake (closing the connection) when it aborts. */
  signal?: AbortSignal | undefined;
}

/** The error for a QMP/QGA `{"error": {class, desc}}` reply. */
export function replyError(protocol: 'QMP' | 'QGA', command: string, error: unknown): LocalVmError {
  const e = (error ?? {}) as { class?: unknown; desc?: unknown };
  const cls = typeof e.class === 'string' ? e.class : 'GenericError';
  const desc = typeof e.desc === 'string' ? e.desc : JSON.stringify(error);
  return new LocalVmError('COMMAND_FAILED', `${protocol} ${command} failed: ${cls}: ${desc}`, {
    details: { protocol, command, class: cls, desc },
  });
}

export class QmpClient {
  /** Events seen while waiting for replies, oldest first. */
  readonly events: QmpEvent[] = [];
  greeting: JsonMessage | undefined;

  private constructor(private readonly conn: JsonLineSocket) {}

  /** Connects, reads the greeting and leaves capabilities-negotiation mode. */
  static async connect(path: string, options: QmpOptions = {}): Promise<QmpClient> {
    const what = `QMP handshake on ${path}`;
    const timeoutMs = options.connectTimeoutMs ?? 5_000;
    return withDeadline(timeoutMs, { what, parent: options.signal, details: { socket: path } }, (limit) =>
      JsonLineSocket.open(path, limit, async (conn) => {
        const client = new QmpClient(conn);
        const greeting = await conn.receive(limit.signal);
        if (typeof greeting.QMP !== 'object' || greeting.QMP === null) {
          throw new LocalVmError(
            'PROTOCOL',
            `${path} did not greet like QMP: ${JSON.stringify(greeting).slice(0, 200)}`,
          );
        }
        client.greeting = greeting;
        await client.execute('qmp_capabilities', undefined, limit.remainingMs(), limit.signal);
        return client;
      }),
    );
  }

  /**
   * Runs `command` and resolves with its `return` value. A QMP error reply becomes
   * COMMAND_FAILED carrying the error class and description; no reply in `timeoutMs` →
   * TIMEOUT, and an abort of `signal` → its reason (both drop the connection).
   */
  async execute(
    command: string,
    args?: Record<string, unknown>,
    timeoutMs = 10_000,
    signal?: AbortSignal,
  ): Promise<unknown> {
    const id = newId('qmp');
    const what = `QMP ${command} on ${this.conn.path}`;
    return withDeadline(timeoutMs, { what, parent: signal, details: { socket: this.conn.path } }, async (limit) => {
      this.conn.send(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id });
      while (true) {
        const msg = await this.conn.receive(limit.signal);
        if (typeof msg.event === 'string') {
          this.events.push(msg as unknown as QmpEvent);
          continue;
        }
        if (msg.id !== id) continue;
        if ('error' in msg) throw replyError('QMP', command, msg.error);
        if (!('return' in msg)) {
          throw new LocalVmError('PROTOCOL', `QMP ${command}: reply without return or error`, {
            details: { reply: msg },
          });
        }
        return msg.return;
      }
    });
  }

  /** Waits for an event named `name` (already received or arriving before the deadline). */
  async waitEvent(
    name: string,
    timeoutMs: number,
    match?: (e: QmpEvent) => boolean,
    signal?: AbortSignal,
  ): Promise<QmpEvent> {
    const hit = (e: QmpEvent) => e.event === name && (!match || match(e));
    const what = `QMP event ${name} on ${this.conn.path}`;
    return withDeadline(timeoutMs, { what, parent: signal, details: { socket: this.conn.path } }, async (limit) => {
      while (true) {
        const seen = this.events.findIndex(hit);
        if (seen !== -1) return this.events.splice(seen, 1)[0] as QmpEvent;
        const msg = await this.conn.receive(limit.signal);
        if (typeof msg.event === 'string') this.events.push(msg as unknown as QmpEvent);
      }
    });
  }

  close(): void {
    this.conn.close();
  }
}

/** Connects, runs `fn`, and always closes: QMP connections are short-lived per operation. */
export async function withQmp<T>(path: string, fn: (qmp: QmpClient) => Promise<T>, options?: QmpOptions): Promise<T> {
  const qmp = await QmpClient.connect(path, options);
  try {
    return await fn(qmp);
  } finally {
    qmp.close();
  }
}
