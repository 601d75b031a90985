/**
 * A Connector is bound to one VM and offers the same exec and file API whatever the
 * backend: what deploy scripts and tests use to work inside a guest.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { Backend, ExecOptions, ExecResult, PutFileOptions } from './backend.js';
import { withDefaults, type OperationContext } from './context.js';
import { LocalVmError } from './errors.js';
import { backendOf } from './operations/vm.js';
import { parseExec, parseShell, parseVmName } from './schema.js';

function guestPath(path: string): string {
  if (!path.startsWith('/') || path.includes('\0')) {
    throw new LocalVmError('VALIDATION', `guest path must be absolute and contain no NUL: ${JSON.stringify(path)}`, {
      issues: [{ property: 'path', reason: 'must be an absolute path' }],
    });
  }
  return path;
}

export class Connector {
  constructor(
    readonly name: string,
    private readonly backend: Backend,
  ) {}

  /** The backend this VM lives on. */
  get backendName(): string {
    return this.backend.name;
  }

  /** Runs `argv` in the guest (no shell). Resolves whatever the exit code; TIMEOUT past `timeoutMs`. */
  async exec(argv: string[], options?: ExecOptions): Promise<ExecResult> {
    const call = parseExec(argv, options);
    return this.backend.guest(this.name).exec(call.argv, call.options);
  }

  /** Runs a shell script in the guest as the explicit argv `/bin/sh -c script`. */
  async shell(script: string, options?: ExecOptions): Promise<ExecResult> {
    const call = parseShell(script, options);
    return this.backend.guest(this.name).exec(['/bin/sh', '-c', call.script], call.options);
  }

  /** Writes `content` to `path` in the guest, byte-exact. */
  async putFile(path: string, content: Uint8Array | string, options?: PutFileOptions): Promise<void> {
    const bytes = typeof content === 'string' ? new TextEncoder().encode(content) : content;
    return this.backend.guest(this.name).putFile(guestPath(path), bytes, options);
  }

  /** Copies a host file into the guest. */
  async putLocalFile(localPath: string, path: string, options?: PutFileOptions): Promise<void> {
    await this.putFile(path, await readFile(localPath), options);
  }

  /** Reads a file from the guest, byte-exact. */
  async getFile(path: string): Promise<Uint8Array> {
    return this.backend.guest(this.name).getFile(guestPath(path));
  }

  /** Copies a guest file to the host. */
  async getLocalFile(path: string, localPath: string): Promise<void> {
    await writeFile(localPath, await this.getFile(path));
  }
}

/** A Connector for the existing VM `name`. Throws NOT_FOUND. */
export async function connect(name: string, ctx?: Partial<OperationContext>): Promise<Connector> {
  const c = withDefaults(ctx);
  return new Connector(parseVmName(name), await backendOf(name, c));
}
