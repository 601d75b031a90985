/**
 * Snapshots of QEMU VMs. A running VM snapshots with HMP `savevm`/`loadvm`/`delvm` (RAM,
 * device state and every writable qcow2 disk at once; the RAM image goes to the first
 * snapshot-capable disk, normally the per-VM `state.qcow2`). A stopped VM can only list
 * and delete, with `qemu-img` on each disk: its snapshots hold RAM state that `qemu-img`
 * cannot restore, and a disk-only revert would leave the disks and a later RAM restore
 * disagreeing, so create and restore need the VM running (CONFLICT otherwise).
 *
 * The parsers and builders at the top are pure; `createSnapshotOps` does the I/O.
 */
import { z } from 'zod';
import type { Snapshot, SnapshotCapable } from '../../backend.js';
import { qemuImg } from './qemuImg.js';
import { LocalVmError, tail, type ErrorCode } from '../../errors.js';
import { parseQemuImgInfo } from '../../parsers.js';
import { commandError, runChecked, type CommandRunner } from '../../runner.js';
import type { QmpClient } from './qmp.js';
import type { VmPaths, VmRecord } from './state.js';
import type { VmAccess } from './vmAccess.js';

/** Snapshot names: what the operations layer accepts, re-checked before anything reaches HMP. */
export const SNAPSHOT_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** One snapshot as one disk holds it. */
export interface DiskSnapshot {
  name: string;
  /** Bytes of RAM/device state stored on this disk (0: disk-only, or the RAM went elsewhere). */
  vmStateSize: number;
  dateSec: number;
  dateNsec?: number | undefined;
}

export interface DiskSnapshots {
  path: string;
  snapshots: DiskSnapshot[];
}

export type HmpSnapshotVerb = 'savevm' | 'loadvm' | 'delvm';

/**
 * The HMP command line for `verb` on `snapshot`. HMP splits its line on spaces and reads
 * quotes, so the name is checked against SNAPSHOT_NAME here too. Pure.
 */
export function hmpSnapshotCommand(verb: HmpSnapshotVerb, snapshot: string): string {
  if (typeof snapshot !== 'string' || !SNAPSHOT_NAME.test(snapshot)) {
    throw new LocalVmError('VALIDATION', `invalid snapshot name: ${JSON.stringify(snapshot)}`, {
      issues: [{ property: 'snapshot', reason: 'must match ^[a-z0-9][a-z0-9._-]{0,62}$' }],
    });
  }
  return `${verb} ${snapshot}`;
}

// What QEMU 7.2 says when it refuses, and what that means for the caller.
const HMP_ERROR_CODES: [RegExp, ErrorCode][] = [
  [/does not exist|not found/i, 'NOT_FOUND'],
  [/disk-only snapshot|does not support snapshots|can store vmstate|read-only|is in use|locked|migration/i, 'CONFLICT'],
];

/**
 * The error in an HMP reply, or undefined when it reports success. HMP answers a failed
 * command with a successful QMP reply whose text says `Error: ...`; `savevm`/`loadvm`/
 * `delvm` print nothing on success, so any other text (warnings aside) is a failure too. Pure.
 */
export function hmpError(commandLine: string, output: string, vm?: string): LocalVmError | undefined {
  const lines = output
    .replace(/\r/g, '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  const errors = lines.filter((l) => /^error:/i.test(l)).map((l) => l.replace(/^error:\s*/i, ''));
  const other = lines.filter((l) => !/^(error|warning):/i.test(l));
  if (errors.length === 0 && other.length === 0) return undefined;
  const text = (errors.length > 0 ? errors : other).join('; ');
  const code = HMP_ERROR_CODES.find(([re]) => re.test(text))?.[1] ?? 'COMMAND_FAILED';
  return new LocalVmError(code, `${vm ? `${vm}: ` : ''}HMP ${commandLine} failed: ${text}`, {
    vm,
    details: { hmp: commandLine, output: output.slice(0, 2000) },
  });
}

const blockNodesSchema = z.array(
  z.looseObject({
    drv: z.string(),
    file: z.string(),
    image: z
      .looseObject({
        snapshots: z
          .array(
            z.looseObject({
              name: z.string(),
              'vm-state-size': z.number().nonnegative(),
              'date-sec': z.number().nonnegative(),
              'date-nsec': z.number().nonnegative().optional(),
            }),
          )
          .optional(),
      })
      .optional(),
  }),
);

/**
 * The snapshots on the disks `paths` from a QMP `query-named-block-nodes` reply; only
 * qcow2 nodes count (the protocol node below each has the same file name, and a backing
 * image's snapshots are not the VM's). Throws PROTOCOL on an unexpected shape. Pure.
 */
export function snapshotsFromBlockNodes(reply: unknown, paths: readonly string[]): DiskSnapshots[] {
  const parsed = blockNodesSchema.safeParse(reply);
  if (!parsed.success) {
    throw new LocalVmError('PROTOCOL', `unexpected query-named-block-nodes reply: ${parsed.error.message}`, {
      cause: parsed.error,
    });
  }
  const out: DiskSnapshots[] = [];
  for (const path of paths) {
    const node = parsed.data.find((n) => n.drv === 'qcow2' && n.file === path);
    if (!node) continue;
    out.push({
      path,
      snapshots: (node.image?.snapshots ?? []).map((s) => ({
        name: s.name,
        vmStateSize: s['vm-state-size'],
        dateSec: s['date-sec'],
        dateNsec: s['date-nsec'],
      })),
    });
  }
  return out;
}

/**
 * One entry per snapshot name across the VM's disks: `sizeBytes` is the saved RAM/device
 * state (summed, since only one disk holds it), `createdAt` the earliest disk's time,
 * ordered oldest first. Pure.
 */
export function mergeSnapshots(disks: readonly DiskSnapshots[]): Snapshot[] {
  const byName = new Map<string, { size: number; ms: number }>();
  for (const disk of disks) {
    for (const s of disk.snapshots) {
      const ms = s.dateSec * 1000 + Math.floor((s.dateNsec ?? 0) / 1e6);
      const seen = byName.get(s.name);
      if (seen) {
        seen.size += s.vmStateSize;
        seen.ms = Math.min(seen.ms, ms);
      } else {
        byName.set(s.name, { size: s.vmStateSize, ms });
      }
    }
  }
  return [...byName.entries()]
    .sort((a, b) => a[1].ms - b[1].ms || a[0].localeCompare(b[0]))
    .map(([name, v]) => ({ name, createdAt: new Date(v.ms).toISOString(), sizeBytes: v.size }));
}

/** The writable qcow2 files a VM owns, vmstate disk first: the ones its snapshots live on. Pure. */
export function snapshotDisks(record: VmRecord): string[] {
  const out: string[] = [];
  if (record.stateDisk) out.push(record.stateDisk);
  if (record.boot.kind === 'disk' && record.boot.format === 'qcow2') out.push(record.boot.image);
  for (const d of record.disks) if (d.format === 'qcow2') out.push(d.path);
  // A standalone disk attached read-write is written by savevm too; a read-only one is not.
  for (const d of record.attachedDisks ?? []) if (!d.readonly) out.push(d.path);
  return out;
}

export interface SnapshotDeps extends VmAccess {
  /** Closes a lingering guest-agent connection (before and after the guest's state jumps). */
  dropAgent(paths: VmPaths): Promise<void>;
}

/** `savevm` pauses the guest while RAM is written; generous because TCG hosts are slow. */
const SAVEVM_TIMEOUT_MS = 300_000;
const QUICK_TIMEOUT_MS = 30_000;

/** The snapshots each disk of a stopped VM holds, read with `qemu-img info` (disks that are not there hold none). */
export async function readDiskSnapshots(runner: CommandRunner, record: VmRecord): Promise<DiskSnapshots[]> {
  const out: DiskSnapshots[] = [];
  for (const path of snapshotDisks(record)) {
    const result = await runner.run(qemuImg.info(path), { timeoutMs: QUICK_TIMEOUT_MS });
    // A disk that is not there (never created, or deleted by hand) holds no snapshots.
    if (result.exitCode !== 0 && /No such file/i.test(result.stderr)) continue;
    if (result.exitCode !== 0 || result.timedOut) {
      throw commandError(result, `qemu-img info ${path} failed: ${tail(result.stderr, 3, 500)}`);
    }
    out.push({ path, snapshots: parseQemuImgInfo(result.stdout).snapshots });
  }
  return out;
}

/** The snapshot methods of the QEMU backend. */
export function createSnapshotOps(deps: SnapshotDeps): SnapshotCapable {
  const { runner } = deps;

  function notRunning(name: string, what: string): LocalVmError {
    return new LocalVmError('CONFLICT', `VM ${name} must be running to ${what} a snapshot`, {
      vm: name,
      hint: `snapshots hold the guest's RAM, which only a running VM can save or load: localvm start ${name}`,
    });
  }

  function missing(name: string, snapshot: string): LocalVmError {
    return new LocalVmError('NOT_FOUND', `VM ${name} has no snapshot named ${snapshot}`, {
      vm: name,
      hint: `see \`localvm snapshot list ${name}\``,
      details: { snapshot },
    });
  }

  async function hmp(qmp: QmpClient, name: string, commandLine: string, timeoutMs: number): Promise<void> {
    const reply = await qmp.execute('human-monitor-command', { 'command-line': commandLine }, timeoutMs);
    const error = hmpError(commandLine, typeof reply === 'string' ? reply : JSON.stringify(reply), name);
    if (error) throw error;
  }

  async function listRunning(qmp: QmpClient, record: VmRecord): Promise<Snapshot[]> {
    const nodes = await qmp.execute('query-named-block-nodes', undefined, QUICK_TIMEOUT_MS);
    return mergeSnapshots(snapshotsFromBlockNodes(nodes, snapshotDisks(record)));
  }

  const offlineDisks = (record: VmRecord) => readDiskSnapshots(runner, record);

  async function list(name: string): Promise<Snapshot[]> {
    const { record, running } = await deps.load(name);
    if (running) {
      return deps.qmpSession(name, record.paths, QUICK_TIMEOUT_MS, (qmp) => listRunning(qmp, record));
    }
    return mergeSnapshots(await offlineDisks(record));
  }

  return {
    async snapshotList(name) {
      return deps.lifecycle(name, 'snapshot list', () => list(name));
    },

    async snapshotCreate(name, snapshot) {
      const commandLine = hmpSnapshotCommand('savevm', snapshot);
      await deps.lifecycle(name, 'snapshot create', async () => {
        const { record, running } = await deps.load(name);
        if (!record.stateDisk) {
          throw new LocalVmError('UNSUPPORTED', `VM ${name} was created without a vmstate disk`, {
            vm: name,
            hint: `VMs created by an older localvm cannot take snapshots; recreate it (localvm delete ${name}, then create)`,
          });
        }
        if (!running) throw notRunning(name, 'take');
        await deps.dropAgent(record.paths);
        await deps.qmpSession(name, record.paths, SAVEVM_TIMEOUT_MS, async (qmp) => {
          // savevm silently replaces a snapshot of the same name: refuse instead.
          if ((await listRunning(qmp, record)).some((s) => s.name === snapshot)) {
            throw new LocalVmError('ALREADY_EXISTS', `VM ${name} already has a snapshot named ${snapshot}`, {
              vm: name,
              hint: `delete it first (localvm snapshot delete ${name} ${snapshot}) or choose another name`,
              details: { snapshot },
            });
          }
          const started = performance.now();
          await hmp(qmp, name, commandLine, SAVEVM_TIMEOUT_MS);
          deps.log?.(`${name}: savevm ${snapshot} took ${Math.round(performance.now() - started)} ms`);
          if (!(await listRunning(qmp, record)).some((s) => s.name === snapshot)) {
            throw new LocalVmError('COMMAND_FAILED', `${name}: savevm ${snapshot} reported success but no snapshot`, {
              vm: name,
            });
          }
        });
      });
    },

    async snapshotRestore(name, snapshot) {
      const commandLine = hmpSnapshotCommand('loadvm', snapshot);
      await deps.lifecycle(name, 'snapshot restore', async () => {
        const { record, running } = await deps.load(name);
        if (!running) throw notRunning(name, 'restore');
        await deps.dropAgent(record.paths);
        try {
          await deps.qmpSession(name, record.paths, SAVEVM_TIMEOUT_MS, async (qmp) => {
            const found = (await listRunning(qmp, record)).find((s) => s.name === snapshot);
            if (!found) throw missing(name, snapshot);
            if (!found.sizeBytes) {
              throw new LocalVmError('CONFLICT', `snapshot ${snapshot} of VM ${name} holds no RAM state`, {
                vm: name,
                hint: 'it was made offline with qemu-img; revert it offline with `qemu-img snapshot -a`',
                details: { snapshot },
              });
            }
            const started = performance.now();
            try {
              await hmp(qmp, name, commandLine, SAVEVM_TIMEOUT_MS);
            } catch (error) {
              // A failed loadvm leaves the guest paused (status restore-vm): resume it, so a
              // refused restore does not also freeze the VM.
              const status = (await qmp.execute('query-status', undefined, QUICK_TIMEOUT_MS).catch(() => undefined)) as
                { running?: boolean } | undefined;
              if (status && status.running === false) await qmp.execute('cont', undefined, QUICK_TIMEOUT_MS);
              throw error;
            }
            deps.log?.(`${name}: loadvm ${snapshot} took ${Math.round(performance.now() - started)} ms`);
          });
        } finally {
          // The guest agent jumped back in time with the guest: start the next exec afresh.
          await deps.dropAgent(record.paths);
        }
      });
    },

    async snapshotDelete(name, snapshot) {
      const commandLine = hmpSnapshotCommand('delvm', snapshot);
      await deps.lifecycle(name, 'snapshot delete', async () => {
        const { record, running } = await deps.load(name);
        if (running) {
          await deps.qmpSession(name, record.paths, QUICK_TIMEOUT_MS, async (qmp) => {
            // delvm of a missing snapshot says nothing: look first, so a typo is NOT_FOUND.
            if (!(await listRunning(qmp, record)).some((s) => s.name === snapshot)) throw missing(name, snapshot);
            await hmp(qmp, name, commandLine, QUICK_TIMEOUT_MS);
          });
          return;
        }
        const holders = (await offlineDisks(record)).filter((d) => d.snapshots.some((s) => s.name === snapshot));
        if (holders.length === 0) throw missing(name, snapshot);
        for (const d of holders) {
          await runChecked(runner, qemuImg.snapshot({ path: d.path, op: 'delete', name: snapshot }), {
            timeoutMs: QUICK_TIMEOUT_MS,
          });
        }
      });
    },
  };
}
