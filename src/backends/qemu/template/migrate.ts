/**
 * Device state in and out of QEMU 7.2 over a unix socket. QEMU 7.2's only file-like
 * migration URIs are `exec:` (a /bin/sh command line: never built from a path here) and
 * `fd:`; a `unix:` URI is taken verbatim as a socket path, so Node listens (freeze) or
 * connects (restore) on a socket in the VM's private directory and moves the bytes to or
 * from the file itself. No shell, no descriptor passing through the runner.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { LocalVmError } from '../../../errors.js';
import { isLocalVmError } from '../../../errors.js';
import { poll } from '../../../time/poll.js';
import { MAX_SOCKET_PATH } from '../cmdline.js';
import type { QmpClient } from '../qmp.js';

/** A `unix:` migration URI for `path`, refused when QEMU could misread it or it is too long. */
export function unixUri(path: string): string {
  if (path.includes(',') || Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    throw new LocalVmError('VALIDATION', `migration socket path is unusable: ${path}`, {
      hint: 'set LOCALVM_RUN_DIR to a short directory such as /tmp/localvm',
    });
  }
  return `unix:${path}`;
}

/** Listens on `socket` and writes the first connection's bytes to `file` (mode 0600). */
export async function receiveToFile(
  socket: string,
  file: string,
): Promise<{ done: Promise<number>; close: () => void }> {
  await rm(socket, { force: true });
  let server: Server;
  const done = new Promise<number>((resolve, reject) => {
    server = createServer({ allowHalfOpen: false }, (conn: Socket) => {
      server.close();
      let bytes = 0;
      conn.on('data', (chunk: Buffer) => (bytes += chunk.length));
      pipeline(conn, createWriteStream(file, { mode: 0o600 })).then(() => resolve(bytes), reject);
    });
    server.on('error', reject);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, () => resolve());
  });
  return {
    done,
    close: () => {
      server.close();
      void rm(socket, { force: true });
    },
  };
}

/**
 * Connects to QEMU's incoming socket (retrying until it listens) and streams `file` into it;
 * resolves when the stream has ended (an async function's returned promise is adopted, so
 * this waits for the whole stream: ~6 ms for a tiny template's 0.7 MB). Never rejects for the
 * stream: QEMU closes its end as soon as it has read the end-of-stream marker, which Node may
 * see as a premature close, so whether the state arrived is for `query-migrate` to say.
 */
export async function startSending(socket: string, file: string, timeoutMs: number): Promise<void> {
  const conn = await poll(
    () =>
      new Promise<Socket | undefined>((resolve) => {
        const s = connect(socket);
        s.once('connect', () => resolve(s));
        s.once('error', () => resolve(undefined));
      }),
    { what: `QEMU to listen on ${socket}`, timeoutMs, initialMs: 1, maxMs: 20 },
  );
  return pipeline(createReadStream(file), conn).catch(() => undefined);
}

/** Turns on x-ignore-shared: RAM in a shared file is not copied into the stream. */
export async function ignoreShared(qmp: QmpClient): Promise<void> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'x-ignore-shared', state: true }],
  });
}

/** Waits for `query-migrate` to say completed; a failed migration is `failure`'s error with QEMU's reason. */
export async function awaitMigration(
  qmp: QmpClient,
  timeoutMs: number,
  failure: (why: string) => LocalVmError,
): Promise<void> {
  try {
    await poll(
      async () => {
        const r = (await qmp.execute('query-migrate', undefined, 5_000)) as { status?: string; 'error-desc'?: string };
        if (r.status === 'completed') return true;
        if (r.status === 'failed' || r.status === 'cancelled') throw failure(r['error-desc'] ?? r.status);
        return undefined;
      },
      { what: 'migration to complete', timeoutMs, initialMs: 1, maxMs: 20 },
    );
  } catch (error) {
    if (isLocalVmError(error, 'TIMEOUT')) throw failure(`no completion within ${timeoutMs} ms`);
    throw error;
  }
}
