/**
 * Byte-exact file transfer through the guest agent (`guest-file-*`), each transfer
 * bounded by one deadline whose signal every call shares.
 */
import { LocalVmError } from '../../errors.js';
import { deadline } from '../../time/deadline.js';
import type { AgentChannel } from './qga.js';

/** Bytes per guest-file-write; base64 makes the JSON line 4/3 of this. */
export const PUT_CHUNK = 48 * 1024;
/** Bytes per guest-file-read. */
export const GET_CHUNK = 1024 * 1024;

/** Writes `content` to `guestPath` (created or truncated) through guest-file-*. */
export async function guestPutFile(
  qga: AgentChannel,
  guestPath: string,
  content: Uint8Array,
  timeoutMs: number,
  chunk = PUT_CHUNK,
  signal?: AbortSignal,
): Promise<void> {
  const limit = deadline(timeoutMs, { what: `writing ${guestPath} in the guest`, parent: signal });
  try {
    await putChunks(qga, guestPath, content, chunk, (command, args) =>
      qga.execute(command, args, limit.remainingMs(), limit.signal),
    );
  } finally {
    limit.dispose();
  }
}

type AgentCall = (command: string, args: Record<string, unknown>) => Promise<unknown>;

async function putChunks(
  qga: AgentChannel,
  guestPath: string,
  content: Uint8Array,
  chunk: number,
  call: AgentCall,
): Promise<void> {
  const handle = await call('guest-file-open', { path: guestPath, mode: 'wb' });
  try {
    const buf = Buffer.from(content.buffer, content.byteOffset, content.byteLength);
    for (let off = 0; off < buf.length; off += chunk) {
      const piece = buf.subarray(off, off + chunk);
      const r = (await call('guest-file-write', { handle, 'buf-b64': piece.toString('base64') })) as {
        count?: number;
      };
      if (r.count !== piece.length) {
        throw new LocalVmError('COMMAND_FAILED', `short write to ${guestPath}: ${r.count} of ${piece.length} bytes`);
      }
    }
  } catch (error) {
    // The original failure matters, not whether the handle could still be closed.
    await qga.execute('guest-file-close', { handle }, 1_000).catch(() => undefined);
    throw error;
  }
  await call('guest-file-close', { handle });
}

/** Reads the whole of `guestPath` through guest-file-*. */
export async function guestGetFile(
  qga: AgentChannel,
  guestPath: string,
  timeoutMs: number,
  chunk = GET_CHUNK,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  const limit = deadline(timeoutMs, { what: `reading ${guestPath} in the guest`, parent: signal });
  try {
    return await getChunks(qga, guestPath, chunk, (command, args) =>
      qga.execute(command, args, limit.remainingMs(), limit.signal),
    );
  } finally {
    limit.dispose();
  }
}

async function getChunks(qga: AgentChannel, guestPath: string, chunk: number, call: AgentCall): Promise<Uint8Array> {
  const handle = await call('guest-file-open', { path: guestPath, mode: 'rb' });
  const parts: Buffer[] = [];
  try {
    while (true) {
      const r = (await call('guest-file-read', { handle, count: chunk })) as {
        'buf-b64'?: string;
        eof?: boolean;
        count?: number;
      };
      if (r['buf-b64']) parts.push(Buffer.from(r['buf-b64'], 'base64'));
      if (r.eof || !r.count) break;
    }
  } catch (error) {
    await qga.execute('guest-file-close', { handle }, 1_000).catch(() => undefined);
    throw error;
  }
  await call('guest-file-close', { handle });
  return new Uint8Array(Buffer.concat(parts));
}
