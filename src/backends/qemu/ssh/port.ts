/** The loopback port of a VM's SSH forward. */
import { createHash } from 'node:crypto';
import { createServer } from 'node:net';
import { LocalVmError } from '../../../errors.js';

/**
 * Where a VM's SSH port is looked for: below Linux's ephemeral range (32768+), so outgoing
 * connections never take it, and above the usual service ports.
 */
export const SSH_PORT_RANGE = { first: 20_000, count: 12_768 } as const;

/** The port a VM directory prefers: the same on every plan of the VM, spread over the range. Pure. */
export function preferredSshPort(dir: string): number {
  const h = createHash('sha256').update(dir).digest().readUInt32BE(0);
  return SSH_PORT_RANGE.first + (h % SSH_PORT_RANGE.count);
}

/**
 * The first port from the VM's preferred one that 127.0.0.1 can bind now. Deterministic, so a
 * dry run plans the port the create then uses (as long as nothing took it in between); QEMU
 * binds it a moment later, and a port taken in that moment fails the launch as TRANSIENT.
 */
export async function pickSshPort(dir: string, avoid?: number): Promise<number> {
  const start = preferredSshPort(dir) - SSH_PORT_RANGE.first;
  for (let i = 0; i < 200; i++) {
    const port = SSH_PORT_RANGE.first + ((start + i) % SSH_PORT_RANGE.count);
    if (port !== avoid && (await loopbackPortFree(port))) return port;
  }
  throw new LocalVmError('TRANSIENT', `no free 127.0.0.1 port for the SSH forward near ${preferredSshPort(dir)}`);
}

/** True when 127.0.0.1:`port` can be bound right now. */
export function loopbackPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}
