/** A free TCP port on 127.0.0.1 for a VM's SSH forward. */
import { createServer } from 'node:net';

/**
 * A port the kernel just handed out on 127.0.0.1 and that is free again. QEMU binds it a
 * moment later; a port taken in between makes the launch fail, never reach another service.
 */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
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
