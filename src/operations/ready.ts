/**
 * Readiness as small strategies (after testcontainers' wait strategies): the backend's own
 * probe, a guest command that exits 0, a service answering through a port forward
 * (readyPort.ts), and `all` of them. `waitForVmReady` polls them with the injected clock until they all pass, the
 * deadline passes (TIMEOUT with the last probe and the console tail) or the VM stops.
 */
import { z } from 'zod';
import type { ProbeResult, VmInfo } from '../backend.js';
import { withDefaults, type OperationContext } from '../context.js';
import { LocalVmError, tail } from '../errors.js';
import { parseOrThrow, parseVmName, type Probe } from '../schema.js';
import { deadline, wholeMs } from '../time/deadline.js';
import { formatDuration } from '../time/format.js';
import { poll } from '../time/poll.js';
import { locate, notFound } from './locate.js';
import { probeLimit, type ReadinessStrategy, type ReadyCheck } from './readyCheck.js';
import { port } from './readyPort.js';
import { agentSilenceNote, cloudInit, readSshBanner, ssh } from './readyGuest.js';

/** Verdicts of a guest agent that did not answer: a TIMEOUT then looks for signs the guest is up. */
const agentSilence = new WeakSet<ProbeResult>();

/**
 * The backend's own probe through the transport it uses (the guest agent, SSH or whichever
 * answers first; OrbStack: running with an IP). The agent probe is event-driven (a
 * guest-sync sent before the agent is up is answered the moment it starts), so a long probe
 * timeout detects readiness with no polling delay. The default strategy.
 */
function guest(options: { timeoutMs?: number } = {}, kind?: string): ReadinessStrategy {
  return {
    description: kind ?? 'agent',
    async check(ctx) {
      ctx.countProbe();
      const transport = (kind ? ctx.backend.transport?.(ctx.name, kind) : undefined) ?? ctx.backend.guest(ctx.name);
      const result = await transport.probe(probeLimit(ctx, options.timeoutMs)).catch((error: unknown): ProbeResult => ({
        ready: false,
        detail: `probe failed: ${(error as Error).message}`,
      }));
      // Only evidence that the guest is up turns this into a note (see agentSilenceNote).
      if (!result.ready && transport.kind !== 'ssh') agentSilence.add(result);
      return result;
    },
  };
}

/** The guest agent itself answers, whatever transport the VM would choose (QEMU; elsewhere the backend's probe). */
function agent(options: { timeoutMs?: number } = {}): ReadinessStrategy {
  return guest(options, 'agent');
}

/** A guest command (an argv, no shell) that must exit 0. */
function command(argv: string[], options: { timeoutMs?: number | undefined } = {}): ReadinessStrategy {
  const shown = JSON.stringify(argv);
  return {
    description: `command ${shown}`,
    async check(ctx) {
      ctx.countProbe();
      try {
        const r = await ctx.backend.guest(ctx.name).exec(argv, { timeoutMs: probeLimit(ctx, options.timeoutMs) });
        if (r.exitCode === 0) return { ready: true, detail: `probe ${shown} exited 0` };
        return {
          ready: false,
          detail: `probe ${shown} exited ${r.exitCode}${r.stderr ? `: ${tail(r.stderr, 3, 300)}` : ''}`,
        };
      } catch (error) {
        return { ready: false, detail: `probe ${shown} failed: ${(error as Error).message}` };
      }
    },
  };
}

/** Every strategy, in order; the first that is not ready is the verdict. */
function all(...strategies: ReadinessStrategy[]): ReadinessStrategy {
  return {
    description: strategies.map((s) => s.description).join(' + '),
    async check(ctx) {
      let last: ProbeResult = { ready: true, detail: 'nothing to wait for' };
      for (const [i, strategy] of strategies.entries()) {
        const result = await strategy.check(ctx);
        if (!result.ready) return result;
        // The first strategy's detail says how the VM came up (the agent's answer time).
        if (i === 0) last = result;
      }
      return last;
    },
  };
}

export type { ReadinessStrategy, ReadyCheck } from './readyCheck.js';
export type { PortOptions } from './readyPort.js';

export const ready = { agent, ssh, cloudInit, command, port, all };

export interface ReadyOptions {
  /** Overall deadline (default: the VM spec's `timeouts.readyMs`, else 120 s). */
  timeoutMs?: number;
  /**
   * What "ready" means (default `ready.agent()`). The `probes` (or the spec's `readiness`
   * probes) are checked after these, as `ready.command` strategies.
   */
  strategies?: ReadinessStrategy | ReadinessStrategy[];
  /** Commands that must exit 0 in the guest after the strategies pass. */
  probes?: Probe[];
  /** First pause between probes; it grows by 1.5× up to `maxIntervalMs`. */
  initialIntervalMs?: number;
  maxIntervalMs?: number;
  /**
   * How long one probe may take (default 10 s, or the strategy's or probe's own
   * `timeoutMs`), never past the overall deadline. The agent probe is event-driven — a
   * guest-sync sent before the agent is up is answered the moment it starts — so a long
   * probe detects readiness with no polling delay, while reconnecting after a short one
   * costs time.
   */
  probeTimeoutMs?: number;
  /** Cancels the wait: it rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface ReadyResult {
  name: string;
  durationMs: number;
  /** Probes made, backend and user probes together. */
  probes: number;
  info: VmInfo;
}

const strategySchema = z.custom<ReadinessStrategy>(
  (v) => typeof v === 'object' && v !== null && typeof (v as ReadinessStrategy).check === 'function',
  'must be a readiness strategy (ready.agent(), ready.command(...), ready.port(...), ready.all(...))',
);

const readyOptionsSchema = z
  .object({
    timeoutMs: z.number().int().positive().optional(),
    strategies: z.union([strategySchema, z.array(strategySchema)]).optional(),
    probes: z
      .array(z.object({ argv: z.array(z.string()).min(1), timeoutMs: z.number().int().positive().optional() }))
      .optional(),
    initialIntervalMs: z.number().int().nonnegative().optional(),
    maxIntervalMs: z.number().int().positive().optional(),
    probeTimeoutMs: z.number().int().positive().optional(),
    signal: z.instanceof(AbortSignal).optional(),
  })
  .strict();

/**
 * Waits until the VM is ready by `strategies` then `probes`. Polling starts fast and
 * backs off to a cap; every probe has its own timeout, never past the deadline. A TIMEOUT
 * says what the last probe saw and carries the console tail; a VM that stops while we
 * wait fails at once.
 */
export async function waitForVmReady(
  name: string,
  options: ReadyOptions = {},
  ctx?: Partial<OperationContext>,
): Promise<ReadyResult> {
  parseVmName(name);
  const opts = parseOrThrow(readyOptionsSchema, options, 'ready options');
  const c = withDefaults(ctx);
  const found = await locate(name, c);
  if (!found) throw notFound(name);
  const { backend } = found;
  const timeoutMs = opts.timeoutMs ?? found.info.spec?.timeouts.readyMs ?? 120_000;
  const probes = opts.probes ?? found.info.spec?.readiness ?? [];
  const strategy = all(
    ...(opts.strategies === undefined ? [guest()] : [opts.strategies].flat()),
    ...probes.map((p) => command(p.argv, { timeoutMs: p.timeoutMs })),
  );

  const started = c.clock.now();
  const limit = deadline(timeoutMs, { what: `readiness of VM ${name}`, clock: c.clock, parent: opts.signal });
  let count = 0;
  let last: ProbeResult = { ready: false, detail: 'no probe has run yet' };
  let verdict = false;
  const check: ReadyCheck = {
    name,
    backend,
    info: found.info,
    clock: c.clock,
    deadline: limit,
    probeTimeoutMs: opts.probeTimeoutMs ?? 10_000,
    countProbe: () => count++,
  };

  try {
    return await poll(
      async () => {
        const result = await strategy.check(check);
        // A probe that the overall deadline cut short says less than the one before it
        // (its guest command timed out): the error shows the last verdict that finished.
        if (result.ready || !limit.expired() || !verdict) last = result;
        verdict = true;
        if (result.ready) {
          return { name, durationMs: c.clock.now() - started, probes: count, info: await backend.info(name) };
        }
        const info = await backend.info(name);
        if (info.state === 'stopped') {
          const consoleTail = await backend.consoleTail?.(name, 20).catch(() => '');
          throw new LocalVmError(
            'COMMAND_FAILED',
            `VM ${name} stopped while waiting for it to be ready${info.reason ? ` (${info.reason})` : ''}${info.lastError ? `: ${info.lastError}` : ''}`,
            { vm: name, transient: true, details: { lastProbe: last.detail, consoleTail } },
          );
        }
        return undefined;
      },
      {
        what: `readiness of VM ${name}`,
        deadline: limit,
        clock: c.clock,
        initialMs: opts.initialIntervalMs ?? 20,
        factor: 1.5,
        maxMs: opts.maxIntervalMs ?? 500,
        onTimeout: async () => {
          const consoleTail = (await backend.consoleTail?.(name, 15).catch(() => '')) ?? '';
          // The agent was silent: say so when the guest is up all the same.
          const silent = agentSilence.has(last)
            ? agentSilenceNote({
                consoleTail,
                sshBanner: found.info.ssh ? await readSshBanner(found.info.ssh.port) : undefined,
              })
            : undefined;
          return new LocalVmError(
            'TIMEOUT',
            `VM ${name} was not ready after ${formatDuration(timeoutMs)} (${count} probes); last probe: ${last.detail}` +
              (silent ? `; ${silent}` : '') +
              (consoleTail ? `\nconsole tail:\n${consoleTail}` : ''),
            {
              vm: name,
              ...(silent ? { hint: silent } : {}),
              details: { lastProbe: last.detail, probes: count, consoleTail, timeoutMs: wholeMs(timeoutMs) },
            },
          );
        },
      },
    );
  } finally {
    limit.dispose();
  }
}
