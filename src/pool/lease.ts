/**
 * A lease: one pool VM, running and answered, for one job. Releasing it destroys the VM
 * (it is never handed to another job); release is idempotent.
 */
import type { Connector } from '../connector.js';

export class Lease {
  private released: Promise<void> | undefined;

  constructor(
    /** The VM's name (`<prefix><session id>-<n>`). */
    readonly name: string,
    /** exec, shell and files inside the leased VM. */
    readonly vm: Connector,
    /** Milliseconds the acquire took. */
    readonly acquireMs: number,
    private readonly destroy: (name: string) => Promise<void>,
  ) {}

  /** Destroys the VM and frees its place in the pool. Safe to call more than once. */
  release(): Promise<void> {
    this.released ??= this.destroy(this.name);
    return this.released;
  }

  /** True once release was called. */
  get isReleased(): boolean {
    return this.released !== undefined;
  }
}
