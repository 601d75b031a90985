/**
 * The guest agent through libvirt: every agent command is one `virsh qemu-agent-command`,
 * so exec and files work on any host libvirt reaches, with no network path to the guest.
 * libvirt keeps the agent connection and does the guest-sync itself; the exec and file
 * logic is the QEMU backend's, over this channel (see AgentChannel).
 */
import type { ExecOptions, ProbeResult, PutFileOptions } from '../../backend.js';
import { isLocalVmError, LocalVmError } from '../../errors.js';
import { formatMs } from '../../time/format.js';
import { applyMode, type GuestTransport } from '../../transport.js';
import { guestExec, guestGetFile, guestPutFile, type AgentChannel } from '../qemu/qga.js';
import type { LibvirtHost } from './host.js';

/** The agent of domain `name` on `host` as an AgentChannel. */
export function virshAgentChannel(host: LibvirtHost, name: string): AgentChannel {
  return {
    open: true,
    async execute(command, args, timeoutMs = 10_000, signal) {
      const json = JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args });
      // virsh's --timeout is whole seconds; the runner's timeout is the real bound.
      const seconds = Math.max(1, Math.ceil(timeoutMs / 1000));
      const stdout = await host.virshOut(host.virsh.agentCommand(name, json, seconds), {
        vm: name,
        timeoutMs: timeoutMs + 2_000,
        signal,
        what: `guest agent ${command}`,
      });
      let reply: { return?: unknown };
      try {
        reply = JSON.parse(stdout) as { return?: unknown };
      } catch {
        throw new LocalVmError('PROTOCOL', `guest agent ${command} of ${name}: not JSON: ${stdout.slice(0, 200)}`, {
          vm: name,
        });
      }
      return reply.return;
    },
  };
}

/** The guest agent of libvirt VM `name` as a GuestTransport. */
export function libvirtAgentTransport(
  find: () => Promise<LibvirtHost>,
  name: string,
  execMs: () => Promise<number>,
): GuestTransport {
  const channelOf = async () => virshAgentChannel(await find(), name);
  return {
    kind: 'agent',
    async exec(argv, o: ExecOptions = {}) {
      if (argv.length === 0) throw new LocalVmError('VALIDATION', 'exec needs a command', { vm: name });
      const timeoutMs = o.timeoutMs ?? (await execMs());
      return guestExec(await channelOf(), argv, {
        env: o.env,
        cwd: o.cwd,
        user: o.user,
        stdin: o.stdin,
        timeoutMs,
        signal: o.signal,
      });
    },
    async putFile(path, content, o: PutFileOptions = {}) {
      const timeoutMs = await execMs();
      const channel = await channelOf();
      await guestPutFile(channel, path, content, timeoutMs, undefined, o.signal);
      if (o.mode !== undefined)
        await applyMode((argv) => guestExec(channel, argv, { timeoutMs: 10_000 }), name, path, o.mode);
    },
    async getFile(path) {
      return guestGetFile(await channelOf(), path, await execMs());
    },
    async probe(timeoutMs): Promise<ProbeResult> {
      const started = performance.now();
      try {
        const host = await find();
        const channel = virshAgentChannel(host, name);
        const state = await host.domstate(name);
        if (state.state !== 'running') return { ready: false, detail: `domain ${state.raw}` };
        await channel.execute('guest-ping', undefined, Math.max(1, timeoutMs - (performance.now() - started)));
        return { ready: true, detail: `agent answered through libvirt in ${formatMs(performance.now() - started)}` };
      } catch (error) {
        if (isLocalVmError(error, 'NOT_FOUND')) return { ready: false, detail: 'no such domain' };
        if (isLocalVmError(error) && (error.transient || error.code === 'TIMEOUT'))
          return { ready: false, detail: error.message };
        throw error;
      }
    },
  };
}
