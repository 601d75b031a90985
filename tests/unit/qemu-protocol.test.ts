import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isLocalVmError } from '../../src/errors.js';
import {
  AgentSessions,
  QgaClient,
  guestExec,
  guestGetFile,
  guestPutFile,
  wrapArgv,
} from '../../src/backends/qemu/qga.js';
import { QmpClient, withQmp } from '../../src/backends/qemu/qmp.js';

type Msg = { execute?: string; arguments?: Record<string, unknown>; id?: unknown };
type Handler = (msg: Msg, sock: Socket) => void;

/** A unix-socket server that speaks newline JSON through `handler` (one fake QEMU). */
interface Fake {
  path: string;
  server: Server;
  received: Msg[];
  closedByClient: Promise<void>;
}

let dir: string;
const servers: Server[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lvm-proto-'));
});
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
  rmSync(dir, { recursive: true, force: true });
});

async function fake(handler: Handler, onConnect?: (sock: Socket) => void): Promise<Fake> {
  const path = join(dir, `s${servers.length}.sock`);
  const received: Msg[] = [];
  let resolveClosed!: () => void;
  const closedByClient = new Promise<void>((r) => (resolveClosed = r));
  const server = createServer((sock) => {
    onConnect?.(sock);
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const msg = JSON.parse(buf.slice(0, nl)) as Msg;
        buf = buf.slice(nl + 1);
        received.push(msg);
        handler(msg, sock);
      }
    });
    sock.on('close', () => resolveClosed());
    sock.on('error', () => undefined);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(path, r));
  return { path, server, received, closedByClient };
}

const send = (sock: Socket, obj: unknown) => sock.write(`${JSON.stringify(obj)}\n`);
const greet = (sock: Socket) => send(sock, { QMP: { version: { qemu: { major: 7 } }, capabilities: [] } });

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (error) {
    if (isLocalVmError(error)) return error.code;
    throw error;
  }
  return 'resolved';
}

describe('QMP client', () => {
  it('negotiates capabilities, matches replies by id and collects events', async () => {
    const f = await fake((msg, sock) => {
      if (msg.execute === 'qmp_capabilities') return send(sock, { return: {}, id: msg.id });
      if (msg.execute === 'query-status') {
        send(sock, { return: { status: 'wrong' }, id: 'someone-else' });
        send(sock, { event: 'RESUME', data: {}, timestamp: { seconds: 1, microseconds: 2 } });
        send(sock, { return: { status: 'running' }, id: msg.id });
      }
    }, greet);
    const result = await withQmp(f.path, async (qmp) => {
      const r = await qmp.execute('query-status');
      expect(qmp.events.map((e) => e.event)).toEqual(['RESUME']);
      return r;
    });
    expect(result).toEqual({ status: 'running' });
    expect(f.received.map((m) => m.execute)).toEqual(['qmp_capabilities', 'query-status']);
    expect(f.received.every((m) => typeof m.id === 'string' && m.id.length > 0)).toBe(true);
    await f.closedByClient;
  });

  it('turns an error reply into COMMAND_FAILED carrying class and description', async () => {
    const f = await fake((msg, sock) => {
      if (msg.execute === 'qmp_capabilities') return send(sock, { return: {}, id: msg.id });
      send(sock, { error: { class: 'CommandNotFound', desc: 'The command nope has not been found' }, id: msg.id });
    }, greet);
    const qmp = await QmpClient.connect(f.path);
    try {
      await qmp.execute('nope');
      expect.unreachable();
    } catch (error) {
      expect(isLocalVmError(error, 'COMMAND_FAILED')).toBe(true);
      expect((error as { details: Record<string, unknown> }).details).toMatchObject({
        class: 'CommandNotFound',
        command: 'nope',
      });
    } finally {
      qmp.close();
    }
  });

  it('rejects a peer that does not greet like QMP with PROTOCOL', async () => {
    const f = await fake(
      () => undefined,
      (sock) => send(sock, { hello: 'world' }),
    );
    expect(await codeOf(QmpClient.connect(f.path))).toBe('PROTOCOL');
  });

  it('times out when the greeting never comes, and when a command is never answered', async () => {
    const silent = await fake(() => undefined);
    expect(await codeOf(QmpClient.connect(silent.path, { connectTimeoutMs: 100 }))).toBe('TIMEOUT');
    await silent.closedByClient;
    const mute = await fake((msg, sock) => {
      if (msg.execute === 'qmp_capabilities') send(sock, { return: {}, id: msg.id });
    }, greet);
    const qmp = await QmpClient.connect(mute.path);
    const started = performance.now();
    expect(await codeOf(qmp.execute('query-status', undefined, 150))).toBe('TIMEOUT');
    expect(performance.now() - started).toBeLessThan(1_000);
    // The timed-out connection is dropped, so a late reply can never be misread.
    await mute.closedByClient;
    expect(await codeOf(qmp.execute('query-status', undefined, 150))).not.toBe('resolved');
  });

  it('fails with PROTOCOL (transient) when the server closes in the middle of a reply', async () => {
    const f = await fake((msg, sock) => {
      if (msg.execute === 'qmp_capabilities') return send(sock, { return: {}, id: msg.id });
      sock.end('{"return": {"status": "runn');
    }, greet);
    const qmp = await QmpClient.connect(f.path);
    try {
      await qmp.execute('query-status', undefined, 2_000);
      expect.unreachable();
    } catch (error) {
      expect(isLocalVmError(error, 'PROTOCOL')).toBe(true);
      expect((error as { transient: boolean }).transient).toBe(true);
    }
  });

  it('reports a socket nobody listens on as TRANSIENT', async () => {
    expect(await codeOf(QmpClient.connect(join(dir, 'absent.sock')))).toBe('TRANSIENT');
  });
});

/** A fake guest agent: no greeting, answers guest-sync and a few commands. */
function agentHandler(extra?: Handler): Handler {
  return (msg, sock) => {
    if (msg.execute === 'guest-sync') return send(sock, { return: msg.arguments?.id });
    if (msg.execute === 'guest-ping') return send(sock, { return: {}, id: msg.id });
    extra?.(msg, sock);
  };
}

describe('guest agent client', () => {
  it('drops stale replies and garbage that arrive before the sync reply', async () => {
    const f = await fake(agentHandler(), (sock) => {
      // Leftovers of an earlier client: an old sync reply, a torn line, a 0xFF sentinel.
      send(sock, { return: 12345 });
      sock.write('{"return": {"pid": 7}, "id": "qga-ol\n');
      sock.write(Buffer.from([0xff]));
      send(sock, { return: {}, id: 'qga-old' });
    });
    const qga = await QgaClient.connect(f.path, { timeoutMs: 1_000 });
    expect(await qga.execute('guest-ping')).toEqual({});
    qga.close();
    expect(f.received[0]?.execute).toBe('guest-sync');
    expect(typeof f.received[0]?.arguments?.id).toBe('number');
  });

  it('times out cleanly when the agent is not up (a sync nobody answers) and closes the connection', async () => {
    const f = await fake(() => undefined);
    const started = performance.now();
    expect(await codeOf(QgaClient.connect(f.path, { timeoutMs: 120 }))).toBe('TIMEOUT');
    expect(performance.now() - started).toBeLessThan(1_000);
    await f.closedByClient;
  });

  it('fails with PROTOCOL when the agent closes mid-reply', async () => {
    const f = await fake(
      agentHandler((msg, sock) => {
        if (msg.execute === 'guest-info') sock.end('{"return": {"version": "7.');
      }),
    );
    const qga = await QgaClient.connect(f.path, { timeoutMs: 1_000 });
    expect(await codeOf(qga.execute('guest-info', undefined, 2_000))).toBe('PROTOCOL');
  });

  it('runs guest-exec, polls status until exited, and decodes output bytes', async () => {
    let polls = 0;
    const f = await fake(
      agentHandler((msg, sock) => {
        if (msg.execute === 'guest-exec') return send(sock, { return: { pid: 42 }, id: msg.id });
        if (msg.execute === 'guest-exec-status') {
          polls++;
          if (polls < 3) return send(sock, { return: { exited: false }, id: msg.id });
          return send(sock, {
            return: {
              exited: true,
              exitcode: 3,
              'out-data': Buffer.from([0x68, 0x69, 0x00, 0xff]).toString('base64'),
              'err-data': Buffer.from('oops\n').toString('base64'),
            },
            id: msg.id,
          });
        }
      }),
    );
    const qga = await QgaClient.connect(f.path, { timeoutMs: 1_000 });
    const r = await guestExec(qga, ['cat'], { stdin: 'abc', env: { A: 'b c' }, cwd: '/tmp', timeoutMs: 2_000 });
    qga.close();
    expect(r.exitCode).toBe(3);
    expect([...r.stdoutBytes]).toEqual([0x68, 0x69, 0x00, 0xff]);
    expect(r.stderr).toBe('oops\n');
    expect(polls).toBe(3);
    const exec = f.received.find((m) => m.execute === 'guest-exec');
    expect(exec?.arguments).toMatchObject({
      path: '/bin/sh',
      arg: ['-c', 'cd "$1" || exit 126; shift; exec "$@"', 'sh', '/tmp', 'env', 'A=b c', 'cat'],
      'capture-output': true,
      'input-data': Buffer.from('abc').toString('base64'),
    });
  });

  it('kills the guest process and throws TIMEOUT when it does not finish in time', async () => {
    const f = await fake(
      agentHandler((msg, sock) => {
        if (msg.execute === 'guest-exec')
          return send(sock, { return: { pid: msg.arguments?.path === 'kill' ? 2 : 9 }, id: msg.id });
        if (msg.execute === 'guest-exec-status') return send(sock, { return: { exited: false }, id: msg.id });
      }),
    );
    const qga = await QgaClient.connect(f.path, { timeoutMs: 1_000 });
    expect(await codeOf(guestExec(qga, ['sleep', '100'], { timeoutMs: 150 }))).toBe('TIMEOUT');
    qga.close();
    const kill = f.received.find((m) => m.execute === 'guest-exec' && m.arguments?.path === 'kill');
    expect(kill?.arguments?.arg).toEqual(['-KILL', '9']);
  });

  it('moves binary files byte-exactly across chunk boundaries', async () => {
    const files = new Map<string, Buffer>();
    const handles = new Map<number, { path: string; pos: number }>();
    let next = 1000;
    const f = await fake(
      agentHandler((msg, sock) => {
        const a = msg.arguments ?? {};
        switch (msg.execute) {
          case 'guest-file-open': {
            const h = next++;
            handles.set(h, { path: String(a.path), pos: 0 });
            if (String(a.mode).startsWith('w')) files.set(String(a.path), Buffer.alloc(0));
            else if (!files.has(String(a.path)))
              return send(sock, { error: { class: 'GenericError', desc: 'No such file' }, id: msg.id });
            return send(sock, { return: h, id: msg.id });
          }
          case 'guest-file-write': {
            const h = handles.get(Number(a.handle));
            const data = Buffer.from(String(a['buf-b64']), 'base64');
            files.set(h!.path, Buffer.concat([files.get(h!.path)!, data]));
            return send(sock, { return: { count: data.length, eof: false }, id: msg.id });
          }
          case 'guest-file-read': {
            const h = handles.get(Number(a.handle))!;
            const data = files.get(h.path)!.subarray(h.pos, h.pos + Number(a.count));
            h.pos += data.length;
            return send(sock, {
              return: { count: data.length, 'buf-b64': data.toString('base64'), eof: data.length === 0 },
              id: msg.id,
            });
          }
          case 'guest-file-close':
            handles.delete(Number(a.handle));
            return send(sock, { return: {}, id: msg.id });
        }
      }),
    );
    const content = new Uint8Array(10_000).map((_, i) => (i * 7919) % 256);
    const qga = await QgaClient.connect(f.path, { timeoutMs: 1_000 });
    await guestPutFile(qga, '/tmp/x', content, 5_000, 3_000);
    const back = await guestGetFile(qga, '/tmp/x', 5_000, 4_096);
    expect(Buffer.from(back).equals(Buffer.from(content))).toBe(true);
    expect(f.received.filter((m) => m.execute === 'guest-file-write')).toHaveLength(4);
    expect(handles.size).toBe(0);
    const missing = await codeOf(guestGetFile(qga, '/nope', 1_000));
    expect(missing).toBe('COMMAND_FAILED');
    qga.close();
  });
});

describe('cancelling through a signal', () => {
  it('an aborted QMP command drops the connection and rejects with the abort reason, at once', async () => {
    const mute = await fake((msg, sock) => {
      if (msg.execute === 'qmp_capabilities') send(sock, { return: {}, id: msg.id });
    }, greet);
    const qmp = await QmpClient.connect(mute.path);
    const controller = new AbortController();
    const why = new Error('the caller gave up');
    setTimeout(() => controller.abort(why), 30);
    const started = performance.now();
    await expect(qmp.execute('query-status', undefined, 10_000, controller.signal)).rejects.toBe(why);
    expect(performance.now() - started).toBeLessThan(1_000);
    await mute.closedByClient;
    // Nothing more is sent on an abandoned connection.
    await expect(qmp.execute('query-status', undefined, 1_000)).rejects.toBe(why);
  });

  it('an already-aborted signal does not even connect', async () => {
    let connections = 0;
    const f = await fake(agentHandler(), () => connections++);
    const controller = new AbortController();
    controller.abort(new Error('no'));
    await expect(QgaClient.connect(f.path, { timeoutMs: 1_000, signal: controller.signal })).rejects.toThrow('no');
    await new Promise((r) => setTimeout(r, 20));
    expect(connections).toBe(0);
  });

  it('an aborted guest exec kills the guest process and rejects with the abort reason', async () => {
    const f = await fake(
      agentHandler((msg, sock) => {
        if (msg.execute === 'guest-exec')
          return send(sock, { return: { pid: msg.arguments?.path === 'kill' ? 2 : 9 }, id: msg.id });
        if (msg.execute === 'guest-exec-status') return send(sock, { return: { exited: false }, id: msg.id });
      }),
    );
    const qga = await QgaClient.connect(f.path, { timeoutMs: 1_000 });
    const controller = new AbortController();
    const why = new Error('cancelled');
    setTimeout(() => controller.abort(why), 50);
    await expect(guestExec(qga, ['sleep', '100'], { timeoutMs: 10_000, signal: controller.signal })).rejects.toBe(why);
    qga.close();
    const kill = f.received.find((m) => m.execute === 'guest-exec' && m.arguments?.path === 'kill');
    expect(kill?.arguments?.arg).toEqual(['-KILL', '9']);
  });

  it('timeouts say whole milliseconds, never raw floats', async () => {
    const f = await fake(() => undefined);
    const error = await QgaClient.connect(f.path, { timeoutMs: 120.4730389999895 }).catch((e: unknown) => e);
    expect(isLocalVmError(error, 'TIMEOUT')).toBe(true);
    expect((error as Error).message).toMatch(/ 120 ms/);
    expect((error as Error).message).not.toMatch(/\d\.\d/);
  });
});

describe('wrapArgv', () => {
  it('leaves a plain argv alone and never splices values into script text', () => {
    expect(wrapArgv(['ls', '-l'], {})).toEqual(['ls', '-l']);
    const hostile = '"; rm -rf / #';
    const out = wrapArgv(['echo'], { cwd: hostile, env: { X: hostile }, user: 'app' });
    expect(out.slice(0, 7)).toEqual(['su', '-s', '/bin/sh', 'app', '-c', 'exec "$@"', 'sh']);
    expect(out.filter((a) => a.includes('rm -rf'))).toEqual([hostile, `X=${hostile}`]);
    expect(wrapArgv(['id'], { user: 'root' })).toEqual(['id']);
  });
});

describe('AgentSessions', () => {
  it('reuses one synchronised connection for back-to-back sessions, then lets it go after the linger', async () => {
    let connections = 0;
    const f = await fake(agentHandler(), () => connections++);
    const lock = join(dir, 'vm.qga.lock');
    const sessions = new AgentSessions(100);
    for (let i = 0; i < 3; i++) {
      expect(await sessions.run(f.path, lock, 1_000, (qga) => qga.execute('guest-ping'))).toEqual({});
    }
    expect(connections).toBe(1);
    expect(f.received.filter((m) => m.execute === 'guest-sync')).toHaveLength(1);
    // While lingering, the cross-process lock is still held ...
    expect(existsSync(lock)).toBe(true);
    await f.closedByClient;
    // ... and released with the connection.
    await new Promise((r) => setTimeout(r, 20));
    expect(existsSync(lock)).toBe(false);
    await sessions.run(f.path, lock, 1_000, (qga) => qga.execute('guest-ping'));
    expect(connections).toBe(2);
    await sessions.drop(f.path);
    expect(existsSync(lock)).toBe(false);
  });

  it('keep: a VM used again later keeps its connection past the linger, until drop', async () => {
    let connections = 0;
    const f = await fake(agentHandler(), () => connections++);
    const lock = join(dir, 'vm.qga.lock');
    const sessions = new AgentSessions(50);
    await sessions.run(f.path, lock, 1_000, (qga) => qga.execute('guest-ping'));
    // Kept while already idle: the parked connection is re-armed with the longer linger.
    sessions.keep(f.path, 10_000);
    await new Promise((r) => setTimeout(r, 200));
    await sessions.run(f.path, lock, 1_000, (qga) => qga.execute('guest-ping'));
    await new Promise((r) => setTimeout(r, 200));
    await sessions.run(f.path, lock, 1_000, (qga) => qga.execute('guest-ping'));
    expect(connections).toBe(1);
    expect(existsSync(lock)).toBe(true);
    await sessions.drop(f.path);
    expect(existsSync(lock)).toBe(false);
    // After drop the socket is back to the default linger.
    await sessions.run(f.path, lock, 1_000, (qga) => qga.execute('guest-ping'));
    expect(connections).toBe(2);
    await new Promise((r) => setTimeout(r, 200));
    expect(existsSync(lock)).toBe(false);
  });

  it('never reuses a connection that broke, and serializes concurrent sessions', async () => {
    let connections = 0;
    let inside = 0;
    let maxInside = 0;
    const f = await fake(
      agentHandler((msg, sock) => {
        if (msg.execute === 'guest-info') return; // never answered
        if (msg.execute === 'slow') {
          inside++;
          maxInside = Math.max(maxInside, inside);
          setTimeout(() => {
            inside--;
            send(sock, { return: 'done', id: msg.id });
          }, 5);
        }
      }),
      () => connections++,
    );
    const lock = join(dir, 'vm.qga.lock');
    const sessions = new AgentSessions(1_000);
    await expect(
      sessions.run(f.path, lock, 1_000, (qga) => qga.execute('guest-info', undefined, 50)),
    ).rejects.toMatchObject({ code: 'TIMEOUT' });
    const results = await Promise.all(
      Array.from({ length: 5 }, () => sessions.run(f.path, lock, 2_000, (qga) => qga.execute('slow'))),
    );
    expect(results).toEqual(['done', 'done', 'done', 'done', 'done']);
    expect(maxInside).toBe(1);
    expect(connections).toBe(2);
    await sessions.drop(f.path);
  });
});
