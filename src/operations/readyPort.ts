/**
 * `ready.port(guestPort)`: a service in the guest answers through the VM's port forward.
 *
 * A host-side TCP connect alone proves nothing with QEMU's user-mode network: it accepts
 * on the host whatever the guest does. Measured on tiny (TCG): with the guest's network
 * up and nothing listening the connection is reset within ~15 ms; with the network not
 * up yet (tiny brings it up after the agent answers) it is accepted and then just hangs,
 * exactly like a connection to a server that waits for the client to speak. So, like
 * testcontainers' listening-ports wait, the strategy checks both sides: in the guest, a
 * listener on the port and a network interface with a route; on the host, a connection
 * through the forward that is not reset within the settle time.
 */
import { createConnection } from 'node:net';
import type { ProbeResult } from '../backend.js';
import { LocalVmError, tail } from '../errors.js';
import { deadline, onAbort } from '../time/deadline.js';
import { probeLimit, type ReadinessStrategy, type ReadyCheck } from './readyCheck.js';

export interface PortOptions {
  /** How long one probe may take (default: the wait's probe timeout). */
  timeoutMs?: number;
  /** How long a connection must stay open to count (default 250 ms). */
  settleMs?: number;
  /** Check the guest side too: a listener and a network (default true). */
  inGuest?: boolean;
}

/** The local TCP ports in LISTEN state in `/proc/net/tcp` (and tcp6) text. Pure. */
export function listeningPorts(procNetTcp: string): Set<number> {
  const ports = new Set<number>();
  for (const line of procNetTcp.split('\n')) {
    // "  0: 00000000:0050 00000000:0000 0A ..." (local address, remote address, state)
    const m = /^\s*\d+:\s+[0-9A-Fa-f]+:([0-9A-Fa-f]{4})\s+[0-9A-Fa-f]+:[0-9A-Fa-f]{4}\s+0A\s/.exec(line);
    if (m?.[1]) ports.add(parseInt(m[1], 16));
  }
  return ports;
}

/** True when `/proc/net/route` text has a route through an interface other than `lo`. Pure. */
export function hasNetwork(procNetRoute: string): boolean {
  return procNetRoute
    .split('\n')
    .slice(1)
    .some((line) => {
      const iface = line.split(/\s+/)[0];
      return Boolean(iface) && iface !== 'lo' && iface !== 'Iface';
    });
}

// One exec reads all three files; markers split them (tcp6 is absent without IPv6).
const GUEST_SCRIPT =
  'cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; echo @@route; cat /proc/net/route 2>/dev/null; true';

async function guestSide(ctx: ReadyCheck, guestPort: number, timeoutMs: number): Promise<ProbeResult | undefined> {
  let r;
  try {
    r = await ctx.backend.guest(ctx.name).exec(['/bin/sh', '-c', GUEST_SCRIPT], { timeoutMs });
  } catch (error) {
    return {
      ready: false,
      detail: `guest port ${guestPort}: cannot look inside the guest: ${(error as Error).message}`,
    };
  }
  if (r.exitCode !== 0) {
    return { ready: false, detail: `guest port ${guestPort}: reading /proc/net failed: ${tail(r.stderr, 3, 300)}` };
  }
  const [tcp = '', route = ''] = r.stdout.split('@@route');
  if (!listeningPorts(tcp).has(guestPort)) {
    return { ready: false, detail: `nothing listens on guest port ${guestPort}` };
  }
  if (!hasNetwork(route)) {
    return { ready: false, detail: `guest port ${guestPort} listens, but the guest network is not up yet` };
  }
  return undefined;
}

function hostSide(host: string, hostPort: number, where: string, settleMs: number, signal: AbortSignal) {
  return new Promise<ProbeResult>((resolve) => {
    const why = (reason: unknown) => (reason as Error | undefined)?.message ?? 'cancelled';
    if (signal.aborted) {
      resolve({ ready: false, detail: `${where}: ${why(signal.reason)}` });
      return;
    }
    let settled: NodeJS.Timeout | undefined;
    let detach = () => {};
    const socket = createConnection({ host, port: hostPort });
    const done = (result: ProbeResult) => {
      clearTimeout(settled);
      detach();
      socket.destroy();
      resolve(result);
    };
    detach = onAbort(signal, (reason) => done({ ready: false, detail: `${where}: ${why(reason)}` }));
    socket.once('connect', () => {
      settled = setTimeout(() => done({ ready: true, detail: `${where} accepted a connection` }), settleMs);
    });
    socket.once('data', () => done({ ready: true, detail: `${where} answered` }));
    socket.once('error', (err: NodeJS.ErrnoException) =>
      done({ ready: false, detail: `${where}: ${err.code ?? err.message}` }),
    );
    socket.once('close', () => done({ ready: false, detail: `${where} closed the connection at once` }));
  });
}

export function port(guestPort: number, options: PortOptions = {}): ReadinessStrategy {
  const settleMs = options.settleMs ?? 250;
  return {
    description: `port ${guestPort}`,
    async check(ctx) {
      const forward = ctx.info.ports.find((p) => p.guest === guestPort && p.protocol === 'tcp');
      if (!forward) {
        const have = ctx.info.ports.map((p) => `${p.host}->${p.guest}/${p.protocol}`).join(', ') || 'none';
        throw new LocalVmError('VALIDATION', `VM ${ctx.name} has no TCP port forward for guest port ${guestPort}`, {
          vm: ctx.name,
          issues: [{ property: 'port', reason: `no forward to guest port ${guestPort} (forwards: ${have})` }],
          hint: `add one to the spec, e.g. ports: [{ host: 8080, guest: ${guestPort} }]`,
        });
      }
      ctx.countProbe();
      const limit = deadline(probeLimit(ctx, options.timeoutMs), {
        what: `probe of guest port ${guestPort}`,
        clock: ctx.clock,
        parent: ctx.deadline.signal,
      });
      try {
        if (options.inGuest ?? true) {
          const inside = await guestSide(ctx, guestPort, Math.max(1, limit.remainingMs()));
          if (inside) return inside;
        }
        const host = forward.bind === '0.0.0.0' ? '127.0.0.1' : forward.bind;
        const where = `${host}:${forward.host} (guest port ${guestPort})`;
        return await hostSide(host, forward.host, where, settleMs, limit.signal);
      } finally {
        limit.dispose();
      }
    },
  };
}
