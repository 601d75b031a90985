/**
 * `virsh` argv builders, pure: `virsh -c URI COMMAND ARGS...`, every value its own argv
 * element, and XML always by file path (written by the caller), never inside an argument.
 * `--` ends the options wherever a positional value could start with "-".
 */
import type { Command } from '../../runner.js';

export interface VirshBuilders {
  readonly uri: string;
  version(): Command;
  capabilities(): Command;
  nodeinfo(): Command;
  freecell(): Command;
  listNames(): Command;
  domstate(name: string): Command;
  dominfo(name: string): Command;
  dumpxml(name: string, options?: { inactive?: boolean }): Command;
  /** localvm's metadata element of the persistent definition (what list/info read). */
  metadata(name: string, namespace: string): Command;
  define(xmlFile: string): Command;
  start(name: string): Command;
  shutdown(name: string): Command;
  destroy(name: string): Command;
  reboot(name: string): Command;
  /** Removes the definition and its snapshots' metadata (volumes are deleted one by one). */
  undefine(name: string): Command;
  agentCommand(name: string, json: string, timeoutSec: number): Command;
  poolInfo(pool: string): Command;
  poolDumpxml(pool: string): Command;
  poolDefineDir(pool: string, target: string): Command;
  poolBuild(pool: string): Command;
  poolStart(pool: string): Command;
  poolAutostart(pool: string): Command;
  poolRefresh(pool: string): Command;
  volList(pool: string): Command;
  volCreate(pool: string, xmlFile: string): Command;
  volUpload(pool: string, volume: string, file: string): Command;
  volDownload(pool: string, volume: string, file: string): Command;
  volDelete(pool: string, volume: string): Command;
  volPath(pool: string, volume: string): Command;
  volInfo(pool: string, volume: string): Command;
  attachDevice(name: string, xmlFile: string, live: boolean): Command;
  detachDevice(name: string, xmlFile: string, live: boolean): Command;
  snapshotCreate(name: string, snapshot: string): Command;
  snapshotList(name: string): Command;
  snapshotRevert(name: string, snapshot: string): Command;
  snapshotDelete(name: string, snapshot: string): Command;
}

/** Builders for the daemon at `uri`, run with the `virsh` executable `file`. */
export function createVirsh(uri: string, file = 'virsh'): VirshBuilders {
  const c = (...args: string[]): Command => ({ file, args: ['-c', uri, ...args] });
  const on = (live: boolean) => (live ? ['--live', '--config'] : ['--config']);
  return {
    uri,
    version: () => c('version'),
    capabilities: () => c('capabilities'),
    nodeinfo: () => c('nodeinfo'),
    freecell: () => c('freecell', '--all'),
    listNames: () => c('list', '--all', '--name'),
    domstate: (name) => c('domstate', '--reason', '--domain', name),
    dominfo: (name) => c('dominfo', '--domain', name),
    dumpxml: (name, o = {}) => c('dumpxml', ...(o.inactive ? ['--inactive'] : []), '--domain', name),
    metadata: (name, namespace) => c('metadata', '--config', '--domain', name, '--uri', namespace),
    define: (xmlFile) => c('define', '--file', xmlFile),
    start: (name) => c('start', '--domain', name),
    shutdown: (name) => c('shutdown', '--mode', 'acpi', '--domain', name),
    destroy: (name) => c('destroy', '--domain', name),
    reboot: (name) => c('reboot', '--mode', 'acpi', '--domain', name),
    undefine: (name) => c('undefine', '--snapshots-metadata', '--domain', name),
    agentCommand: (name, json, timeoutSec) =>
      c('qemu-agent-command', '--timeout', String(timeoutSec), '--domain', name, '--cmd', json),
    poolInfo: (pool) => c('pool-info', '--pool', pool),
    poolDumpxml: (pool) => c('pool-dumpxml', '--pool', pool),
    poolDefineDir: (pool, target) => c('pool-define-as', '--name', pool, '--type', 'dir', '--target', target),
    poolBuild: (pool) => c('pool-build', '--pool', pool),
    poolStart: (pool) => c('pool-start', '--pool', pool),
    poolAutostart: (pool) => c('pool-autostart', '--pool', pool),
    poolRefresh: (pool) => c('pool-refresh', '--pool', pool),
    volList: (pool) => c('vol-list', '--pool', pool),
    volCreate: (pool, xmlFile) => c('vol-create', '--pool', pool, '--file', xmlFile),
    volUpload: (pool, volume, f) => c('vol-upload', '--pool', pool, '--vol', volume, '--file', f),
    volDownload: (pool, volume, f) => c('vol-download', '--pool', pool, '--vol', volume, '--file', f),
    volDelete: (pool, volume) => c('vol-delete', '--pool', pool, '--vol', volume),
    volPath: (pool, volume) => c('vol-path', '--pool', pool, '--vol', volume),
    volInfo: (pool, volume) => c('vol-info', '--pool', pool, '--vol', volume, '--bytes'),
    attachDevice: (name, xmlFile, live) => c('attach-device', '--domain', name, '--file', xmlFile, ...on(live)),
    detachDevice: (name, xmlFile, live) => c('detach-device', '--domain', name, '--file', xmlFile, ...on(live)),
    snapshotCreate: (name, snapshot) => c('snapshot-create-as', '--domain', name, '--name', snapshot, '--atomic'),
    snapshotList: (name) => c('snapshot-list', '--domain', name),
    snapshotRevert: (name, snapshot) => c('snapshot-revert', '--domain', name, '--snapshotname', snapshot),
    snapshotDelete: (name, snapshot) => c('snapshot-delete', '--domain', name, '--snapshotname', snapshot),
  };
}
