/**
 * The guest agent as a GuestTransport for QEMU VMs: exec, files and readiness over the
 * agent's virtio-serial socket, one session at a time per VM (AgentSessions), with errors
 * said in terms of the VM. Also the console tail that readiness errors show.
 */
import { open } from 'node:fs/promises';
import type { ExecOptions, ProbeResult, PutFileOptions } from '../../backend.js';
import { isLocalVmError, LocalVmError, tail } from '../../errors.js';
import { readSshBanner } from '../../host/sshBanner.js';
import { formatMs } from '../../time/format.js';
import { agentSilenceNote, applyMode, type GuestTransport } from '../../transport.js';
import type { QemuHost } from './host.js';
import { observe, requireRecord, requireRunning } from './observe.js';
import { guestExec, guestGetFile, guestPutFile, type QgaClient } from './qga.js';

/** One guest-agent session (see AgentSessions), with errors said in terms of the VM. */
async function withAgent<T>(
  host: QemuHost,
  name: string,
  timeoutMs: number,
  fn: (qga: QgaClient) => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  const { record } = await requireRunning(host, name);
  try {
    return await host.sessions.run(record.paths.qgaSocket, host.lockPath(name, 'qga'), timeoutMs, fn, signal);
  } catch (error) {
    if (isLocalVmError(error, 'COMMAND_FAILED') || isLocalVmError(error, 'VALIDATION')) throw error;
    const now = await observe(host, name);
    if (now.state.state !== 'running') {
      throw new LocalVmError('CONFLICT', `VM ${name} stopped (${now.state.reason ?? 'stopped'})`, {
        vm: name,
        cause: error,
      });
    }
    if (isLocalVmError(error) && error.vm === undefined) {
      const silentAgent = error.code === 'TIMEOUT' && error.details?.guestPid === undefined;
      // An agent that never answered a guest that is up: say what to do instead of "booting?".
      const note = silentAgent
        ? agentSilenceNote({
            consoleTail: await consoleTail(host, name).catch(() => ''),
            sshBanner: record.ssh ? await readSshBanner(record.ssh.port) : undefined,
          })
        : undefined;
      throw new LocalVmError(error.code, `${name}: ${error.message}`, {
        vm: name,
        cause: error,
        details: error.details,
        transient: error.transient,
        // A guest command that ran too long carries its guest pid; anything else timed
        // out before the agent answered at all.
        hint: silentAgent ? (note ?? 'is the guest still booting? see `localvm console`') : error.hint,
      });
    }
    throw error;
  }
}

/** The guest agent of QEMU VM `name`. */
export function agentTransport(host: QemuHost, name: string): GuestTransport {
  const execTimeout = async () => (await requireRecord(host, name)).record.spec.timeouts.execMs;
  return {
    kind: 'agent',

    async exec(argv, o: ExecOptions = {}) {
      if (argv.length === 0) throw new LocalVmError('VALIDATION', 'exec needs a command', { vm: name });
      const timeoutMs = o.timeoutMs ?? (await execTimeout());
      return withAgent(
        host,
        name,
        timeoutMs,
        (qga) =>
          guestExec(qga, argv, { env: o.env, cwd: o.cwd, user: o.user, stdin: o.stdin, timeoutMs, signal: o.signal }),
        o.signal,
      );
    },

    async putFile(path, content, o: PutFileOptions = {}) {
      const timeoutMs = await execTimeout();
      await withAgent(host, name, timeoutMs, async (qga) => {
        await guestPutFile(qga, path, content, timeoutMs);
        if (o.mode !== undefined)
          await applyMode((argv) => guestExec(qga, argv, { timeoutMs: 10_000 }), name, path, o.mode);
      });
    },

    async getFile(path) {
      const timeoutMs = await execTimeout();
      return withAgent(host, name, timeoutMs, (qga) => guestGetFile(qga, path, timeoutMs));
    },

    async keepOpen(ms) {
      host.sessions.keep((await requireRecord(host, name)).record.paths.qgaSocket, ms);
    },

    async probe(timeoutMs): Promise<ProbeResult> {
      const o = await observe(host, name);
      if (!o.exists) return { ready: false, detail: 'no such VM' };
      if (o.state.state !== 'running')
        return { ready: false, detail: `process not running (${o.state.reason ?? o.state.state})` };
      const started = performance.now();
      try {
        await host.sessions.run(o.paths.qgaSocket, host.lockPath(name, 'qga'), timeoutMs, (qga) =>
          qga.execute('guest-ping', undefined, Math.max(1, timeoutMs - (performance.now() - started))),
        );
        return { ready: true, detail: `agent answered in ${formatMs(performance.now() - started)}` };
      } catch (error) {
        const now = await observe(host, name);
        if (now.state.state !== 'running')
          return { ready: false, detail: `process not running (${now.state.reason ?? 'crashed'})` };
        if (isLocalVmError(error, 'TRANSIENT')) {
          const errno = error.details?.errno as string | undefined;
          return { ready: false, detail: `agent socket not accepting${errno ? ` (${errno})` : ''}` };
        }
        if (isLocalVmError(error, 'TIMEOUT') && error.details?.lock === undefined) {
          return { ready: false, detail: `no reply in ${formatMs(timeoutMs)}` };
        }
        return { ready: false, detail: (error as Error).message };
      }
    },
  };
}

/** The last `lines` lines of the VM's serial console ('' when it has none yet). */
export async function consoleTail(host: QemuHost, name: string, lines = 20): Promise<string> {
  const p = (await requireRecord(host, name)).record.paths;
  let fh;
  try {
    fh = await open(p.consoleLog, 'r');
  } catch {
    return '';
  }
  try {
    const size = (await fh.stat()).size;
    const length = Math.min(size, 64 * 1024);
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, size - length);
    return tail(buf.toString('utf8').replace(/\r/g, ''), lines, 16_000);
  } finally {
    await fh.close();
  }
}
