/**
 * What runs in the guest through an agent connection: commands (`guest-exec`, its status
 * polled) and byte-exact file transfer (`guest-file-*`), each bounded by a deadline.
 */
import type { ExecResult } from '../../backend.js';
import { LocalVmError } from '../../errors.js';
import { deadline } from '../../time/deadline.js';
import { poll } from '../../time/poll.js';
import type { QgaClient } from './qga.js';

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
export async function guestExec(qga: QgaClient, argv: string[], options: GuestExecOptions): Promise<ExecResult> {
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
  signal?: AbortSignal,
): Promise<void> {
  const limit = deadline(timeoutMs, { what: `writing ${guestPath} in the guest`, parent: signal });
  try {
    await putChunks(qga, guestPath, content, chunk, (command, args) =>
      qga.execute(command, args, limit.remainingMs(), limit.signal),
    );
  } finally {
    limit.dispose();
  }
}

type AgentCall = (command: string, args: Record<string, unknown>) => Promise<unknown>;

async function putChunks(
  qga: QgaClient,
  guestPath: string,
  content: Uint8Array,
  chunk: number,
  call: AgentCall,
): Promise<void> {
  const handle = await call('guest-file-open', { path: guestPath, mode: 'wb' });
  try {
    const buf = Buffer.from(content.buffer, content.byteOffset, content.byteLength);
    for (let off = 0; off < buf.length; off += chunk) {
      const piece = buf.subarray(off, off + chunk);
      const r = (await call('guest-file-write', { handle, 'buf-b64': piece.toString('base64') })) as {
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
  await call('guest-file-close', { handle });
}

/** Reads the whole of `guestPath` through guest-file-*. */
export async function guestGetFile(
  qga: QgaClient,
  guestPath: string,
  timeoutMs: number,
  chunk = GET_CHUNK,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  const limit = deadline(timeoutMs, { what: `reading ${guestPath} in the guest`, parent: signal });
  try {
    return await getChunks(qga, guestPath, chunk, (command, args) =>
      qga.execute(command, args, limit.remainingMs(), limit.signal),
    );
  } finally {
    limit.dispose();
  }
}

async function getChunks(qga: QgaClient, guestPath: string, chunk: number, call: AgentCall): Promise<Uint8Array> {
  const handle = await call('guest-file-open', { path: guestPath, mode: 'rb' });
  const parts: Buffer[] = [];
  try {
    while (true) {
      const r = (await call('guest-file-read', { handle, count: chunk })) as {
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
  await call('guest-file-close', { handle });
  return new Uint8Array(Buffer.concat(parts));
}
