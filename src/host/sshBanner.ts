/** Whether an SSH server answers behind a loopback port: its banner line. */
import { connect as tcpConnect } from 'node:net';

/**
 * The first line an SSH server sends on 127.0.0.1:`port`, or undefined within `timeoutMs`.
 * QEMU's user-mode forward accepts any connection, even with nothing listening in the guest,
 * so only the banner says sshd is there.
 */
export function readSshBanner(port: number, timeoutMs = 2_000): Promise<string | undefined> {
  return new Promise((resolve) => {
    let data = '';
    const socket = tcpConnect({ host: '127.0.0.1', port });
    const done = (value: string | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(value);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      data += chunk;
      if (data.includes('\n')) {
        const line = (data.split('\n')[0] ?? '').trim();
        done(line.startsWith('SSH-') ? line : undefined);
      }
    });
    socket.on('error', () => done(undefined));
    socket.on('close', () => done(undefined));
  });
}
