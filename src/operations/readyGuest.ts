/**
 * Readiness that knows the guest: `ready.ssh()` (the VM's SSH transport answers),
 * `ready.cloudInit()` (`cloud-init status --wait` reports done), and what a wait says when
 * the guest agent stays silent although the guest is up (a login prompt on the console, or
 * an SSH server answering on the forwarded port 22).
 */
import type { ProbeResult } from '../backend.js';
import { isLocalVmError, LocalVmError, tail } from '../errors.js';
export { AGENT_SILENT, agentSilenceNote, consoleShowsLogin } from '../transport.js';
export { readSshBanner } from '../host/sshBanner.js';
import { probeLimit, type ReadinessStrategy, type ReadyCheck } from './readyCheck.js';

/** The backend's transport of `kind`; UNSUPPORTED (misuse) when it has none. */
function transportOf(ctx: ReadyCheck, kind: string) {
  const t = ctx.backend.transport?.(ctx.name, kind);
  if (!t) {
    throw new LocalVmError('UNSUPPORTED', `the ${ctx.backend.name} backend has no ${kind} transport`, {
      vm: ctx.name,
      hint: 'use ready.agent() (the backend’s own probe) instead',
    });
  }
  return t;
}

/** The VM's SSH transport answers: a `true` over SSH with the VM's key and pinned host key. */
export function ssh(options: { timeoutMs?: number } = {}): ReadinessStrategy {
  return {
    description: 'ssh',
    async check(ctx) {
      const t = transportOf(ctx, 'ssh');
      ctx.countProbe();
      try {
        return await t.probe(probeLimit(ctx, options.timeoutMs));
      } catch (error) {
        // A refused host key does not get better by waiting.
        if (isLocalVmError(error, 'CONFLICT') && error.details?.hostKeyRefused === true) throw error;
        return { ready: false, detail: `ssh probe failed: ${(error as Error).message}` };
      }
    },
  };
}

/** What `cloud-init status` printed: `status: done` is ready. Pure. */
export function cloudInitVerdict(exitCode: number, stdout: string, stderr: string): ProbeResult {
  const status = /^status:\s*(\S+)/m.exec(stdout)?.[1];
  if (exitCode === 0 && status === 'done') return { ready: true, detail: 'cloud-init status: done' };
  const said = tail(stderr || stdout, 3, 300);
  return { ready: false, detail: `cloud-init status: ${status ?? `exit ${exitCode}`}${said ? ` (${said})` : ''}` };
}

/**
 * cloud-init has finished (`cloud-init status --wait` says done), through whichever
 * transport the VM uses. `--wait` returns the moment it is done, so a long probe costs nothing.
 */
export function cloudInit(options: { timeoutMs?: number } = {}): ReadinessStrategy {
  return {
    description: 'cloud-init',
    async check(ctx) {
      ctx.countProbe();
      try {
        const r = await ctx.backend
          .guest(ctx.name)
          .exec(['cloud-init', 'status', '--wait'], { timeoutMs: probeLimit(ctx, options.timeoutMs ?? 60_000) });
        return cloudInitVerdict(r.exitCode, r.stdout, r.stderr);
      } catch (error) {
        return { ready: false, detail: `cloud-init status failed: ${(error as Error).message}` };
      }
    },
  };
}
