/**
 * Where `host: 'auto'` puts a VM: on the answering host with the most free memory, if that is
 * enough for the VM. Free memory is libvirt's own figure (`virsh freecell`: the free memory of
 * every NUMA cell, what QEMU can be given). Pure.
 */
import { LocalVmError } from '../errors.js';

/** One host as placement sees it: its free memory, or why it did not answer. */
export type HostMemory = { host: string; freeBytes: number } | { host: string; error: string };

const MiB = 1024 * 1024;

/**
 * The host for a VM needing `memoryMiB`: the one with the most free memory among those that
 * answered, ties going to the earlier host in the list. UNSUPPORTED naming every host and its
 * free memory (or its error) when none has enough; a host that did not answer is passed over,
 * never fatal while another fits. Pure.
 */
export function chooseHost(hosts: readonly HostMemory[], memoryMiB: number): string {
  let best: { host: string; freeBytes: number } | undefined;
  for (const h of hosts) {
    if ('error' in h) continue;
    if (!best || h.freeBytes > best.freeBytes) best = h;
  }
  if (best && best.freeBytes >= memoryMiB * MiB) return best.host;
  const seen = hosts
    .map((h) =>
      'error' in h ? `${h.host}: unreachable (${h.error})` : `${h.host}: ${Math.floor(h.freeBytes / MiB)} MiB free`,
    )
    .join('; ');
  const why = hosts.length === 0 ? 'no hosts are configured' : seen;
  throw new LocalVmError('UNSUPPORTED', `no host has ${memoryMiB} MiB free for host: auto (${why})`, {
    hint: 'ask for less memory, free some on a host, or add a host to the hosts list',
    details: { hosts },
  });
}
