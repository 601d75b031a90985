/**
 * What the QEMU backend lends its capability modules (snapshots, disks): the runner, the
 * per-VM lifecycle lock, the VM's record, and a locked QMP session. One interface, so every
 * capability reaches a VM the same way.
 */
import type { CommandRunner } from '../../runner.js';
import type { QmpClient } from './qmp.js';
import type { VmPaths, VmRecord } from './state.js';

export interface VmAccess {
  runner: CommandRunner;
  /** Runs `fn` under the VM's lifecycle lock. */
  lifecycle<T>(name: string, what: string, fn: () => Promise<T>): Promise<T>;
  /** The VM's record and whether its QEMU runs; NOT_FOUND/CONFLICT as the backend says them. */
  load(name: string): Promise<{ record: VmRecord; running: boolean }>;
  /** One QMP connection under the VM's QMP lock. */
  qmpSession<T>(name: string, paths: VmPaths, timeoutMs: number, fn: (qmp: QmpClient) => Promise<T>): Promise<T>;
  log?: ((msg: string) => void) | undefined;
}
