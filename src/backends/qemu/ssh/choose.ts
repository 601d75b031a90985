/**
 * The transport `guest(name)` gives for a QEMU VM: the agent or SSH as the spec says, and
 * with `transport: 'auto'` (the default) whichever answers first — probed side by side,
 * then remembered in the record so later calls go straight to it. VMs without SSH (the
 * tiny image, clones, records from before SSH) always use the agent.
 */
import type { ProbeResult } from '../../../backend.js';
import { withLock } from '../../../host/lock.js';
import type { GuestTransport } from '../../../transport.js';
import { agentTransport } from '../guest.js';
import type { QemuHost } from '../host.js';
import { requireRecord } from '../observe.js';
import { readRecord, writeRecord, type VmRecord } from '../state.js';
import { isHostKeyRefusal, sshTransport } from './transport.js';

export type TransportKind = 'agent' | 'ssh';

/** What a record says to use, or `undefined` when auto still has to find out. Pure. */
export function decidedTransport(record: Pick<VmRecord, 'spec' | 'ssh' | 'transport'>): TransportKind | undefined {
  const wanted = record.spec.transport ?? 'auto';
  if (wanted !== 'auto') return wanted;
  if (!record.ssh) return 'agent';
  return record.transport;
}

/** How long auto waits for either transport before an exec falls back to the agent's answer. */
const CHOOSE_MS = 10_000;

/**
 * Probes both transports at once: the first ready one wins (the other's probe is left to
 * finish on its own); when neither is, both details. Pure apart from the probes.
 */
export async function raceProbes(
  probes: { kind: TransportKind; probe: () => Promise<ProbeResult> }[],
): Promise<{ winner?: TransportKind; result: ProbeResult }> {
  const details: string[] = [];
  return new Promise((resolve, reject) => {
    let pending = probes.length;
    for (const p of probes) {
      p.probe().then(
        (r) => {
          if (r.ready) resolve({ winner: p.kind, result: r });
          details.push(`${p.kind}: ${r.detail}`);
          if (--pending === 0) resolve({ result: { ready: false, detail: details.join('; ') } });
        },
        (error: unknown) => {
          // A refused host key is an answer, and not one to wait past.
          if (isHostKeyRefusal(error)) reject(error);
          details.push(`${p.kind}: ${(error as Error).message}`);
          if (--pending === 0) resolve({ result: { ready: false, detail: details.join('; ') } });
        },
      );
    }
  });
}

/** Remembers auto's choice, if the record can be updated now (a busy lifecycle lock skips it). */
async function remember(host: QemuHost, name: string, kind: TransportKind): Promise<void> {
  const path = host.paths(name).record;
  await withLock(host.lockPath(name, 'lifecycle'), { timeoutMs: 500, what: 'remember the transport' }, async () => {
    const record = await readRecord(path);
    if (record && record.ssh && record.transport === undefined) await writeRecord({ ...record, transport: kind });
  }).catch(() => undefined);
}

/** The QEMU VM's way in: agent, SSH, or auto's choice between them. */
export function qemuTransport(host: QemuHost, name: string): GuestTransport {
  const agent = agentTransport(host, name);
  const ssh = sshTransport(host, name);
  const of = (kind: TransportKind) => (kind === 'ssh' ? ssh : agent);

  async function choose(timeoutMs: number): Promise<{ kind?: TransportKind; result?: ProbeResult }> {
    const { record } = await requireRecord(host, name);
    const decided = decidedTransport(record);
    if (decided) return { kind: decided };
    const { winner, result } = await raceProbes([
      { kind: 'agent', probe: () => agent.probe(timeoutMs) },
      { kind: 'ssh', probe: () => ssh.probe(timeoutMs) },
    ]);
    if (winner) await remember(host, name, winner);
    return { kind: winner, result };
  }
  const pick = async () => of((await choose(CHOOSE_MS)).kind ?? 'agent');

  return {
    kind: 'auto',
    exec: async (argv, o) => (await pick()).exec(argv, o),
    putFile: async (path, content, o) => (await pick()).putFile(path, content, o),
    getFile: async (path) => (await pick()).getFile(path),
    keepOpen: async (ms) => (await pick()).keepOpen?.(ms),
    async probe(timeoutMs) {
      const { kind, result } = await choose(timeoutMs);
      if (result) return result;
      return of(kind ?? 'agent').probe(timeoutMs);
    },
  };
}

/** One transport by kind, for `ready.agent()`/`ready.ssh()` and the benchmark. */
export function qemuTransportOf(host: QemuHost, name: string, kind: string): GuestTransport | undefined {
  if (kind === 'agent') return agentTransport(host, name);
  if (kind === 'ssh') return sshTransport(host, name);
  return undefined;
}
