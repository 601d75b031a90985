/**
 * The clone's side of a template: after QEMU starts with `-incoming defer`, x-ignore-shared
 * on, `migrate-incoming` on a unix socket that Node streams the template's device state
 * into, `query-migrate` until completed, `cont` (unless the clone is held: restored and
 * paused, see hold.ts). Then the clone is made its own machine in one guest process: clock,
 * hostname set to the VM name, and a MAC of its own (the migrated virtio-net state carries
 * the template's). A failure removes the clone entirely, so a bad state file leaves no
 * half-created VM.
 */
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isLocalVmError, LocalVmError } from '../../../errors.js';
import type { QemuHost } from '../host.js';
import { killHard } from '../observe.js';
import { guestExec } from '../qga.js';
import { readPidFile, type VmRecord } from '../state.js';
import { awaitMigration, ignoreShared, startSending, unixUri } from './migrate.js';

/** The plan actions of a clone create (see plan.ts's QemuAction). */
export type CloneAction =
  | {
      kind: 'restore';
      record: VmRecord;
      stateFile: string;
      template: string;
      /** Stay paused after the restore (no `cont`): a held clone, resumed later (hold.ts). */
      hold?: boolean | undefined;
    }
  | {
      kind: 'personalize';
      record: VmRecord;
      hostname: string;
      /** Undefined: keep the template's MAC (see hold.ts: nobody else sees it). */
      mac: string | undefined;
    };

/** A locally administered unicast MAC derived from the VM name (stable across its restarts). Pure. */
export function macFor(name: string): string {
  const h = createHash('sha256').update(name).digest();
  // 0x02: locally administered, unicast.
  const bytes = [0x02, h[0] ?? 0, h[1] ?? 0, h[2] ?? 0, h[3] ?? 0, h[4] ?? 0];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

const RESTORE_TIMEOUT_MS = 30_000;

export async function applyCloneAction(host: QemuHost, vm: string, a: CloneAction): Promise<void> {
  try {
    if (a.kind === 'restore') await restore(host, a.record, a.stateFile, a.template, a.hold === true);
    else await personalize(host, a.record, a.hostname, a.mac);
  } catch (error) {
    await discardClone(host, a.record);
    throw error;
  }
}

async function restore(
  host: QemuHost,
  record: VmRecord,
  stateFile: string,
  template: string,
  hold: boolean,
): Promise<void> {
  const name = record.name;
  const socket = join(dirname(record.paths.qmpSocket), 'mig.sock');
  const failure = (why: string) =>
    new LocalVmError('COMMAND_FAILED', `restoring ${name} from template ${template} failed: ${why}`, {
      vm: name,
      hint: `the template's state may be damaged: rebuild it (localvm template delete ${template} && localvm template create ${template} ...)`,
      details: { template },
    });
  try {
    await host.qmpSession(name, record.paths, RESTORE_TIMEOUT_MS, async (qmp) => {
      await ignoreShared(qmp);
      await qmp.execute('migrate-incoming', { uri: unixUri(socket) });
      const sending = await startSending(socket, stateFile, RESTORE_TIMEOUT_MS);
      await awaitMigration(qmp, RESTORE_TIMEOUT_MS, failure);
      await sending;
      if (!hold) await qmp.execute('cont');
    });
  } catch (error) {
    if (isLocalVmError(error) && error.details?.template === template) throw error;
    throw failure((error as Error).message);
  } finally {
    await rm(socket, { force: true });
  }
}

// One guest process makes the clone its own machine: the clock to "$3" (epoch seconds), the
// hostname to "$1" (written to /proc: no process for it), then, unless "$2" is empty, the
// first non-loopback interface's MAC to "$2" (the slowest part: ~130 ms of the virtio-net
// control queue under TCG). Each further agent command or guest process costs a round trip
// or a fork under emulation (guest-set-time alone forks `hwclock -w`: ~120 ms), so it is
// all one guest-exec; the values travel as arguments, never as script text. `date -s @N`
// has whole seconds: the clock lands within half a second of the host's.
const IDENTITY =
  'date -s "@$3" >/dev/null || exit; echo "$1" >/proc/sys/kernel/hostname || exit; [ -n "$2" ] || exit 0; ' +
  'for n in /sys/class/net/*; do n=${n##*/}; [ "$n" = lo ] && continue; ip link set dev "$n" address "$2"; exit $?; done; exit 0';

/** The argv that personalises a clone (`mac` undefined: the MAC stays). Pure. */
export function identityArgv(hostname: string, mac: string | undefined, epochMs: number): string[] {
  return ['/bin/sh', '-c', IDENTITY, 'sh', hostname, mac ?? '', String(Math.round(epochMs / 1000))];
}

/**
 * Makes clone `record` its own machine (see IDENTITY) in one agent session: the session's
 * guest-sync is the agent's first answer after `cont`, so when this resolves the clone has
 * answered and is ready.
 */
export async function personalize(
  host: QemuHost,
  record: VmRecord,
  hostname: string,
  mac: string | undefined,
  signal?: AbortSignal,
): Promise<void> {
  const name = record.name;
  const timeoutMs = record.spec.timeouts.readyMs;
  await host.sessions.run(
    record.paths.qgaSocket,
    host.lockPath(name, 'qga'),
    timeoutMs,
    async (qga) => {
      const r = await guestExec(qga, identityArgv(hostname, mac, Date.now()), { timeoutMs: 10_000, signal });
      if (r.exitCode !== 0) {
        throw new LocalVmError(
          'COMMAND_FAILED',
          `setting clock, hostname and MAC in clone ${name} failed (exit ${r.exitCode}): ${r.stderr.trim()}`,
          { vm: name },
        );
      }
    },
    signal,
  );
}

/** Kills the clone's QEMU and removes all it has: nothing of a failed clone stays. */
export async function discardClone(host: QemuHost, record: VmRecord): Promise<void> {
  await host.sessions.drop(record.paths.qgaSocket).catch(() => undefined);
  await killHard(record.name, await readPidFile(record.paths.pidFile));
  const dirs = [record.paths.dir, ...(record.paths.socketDir ? [record.paths.socketDir] : [])];
  for (const d of dirs) await rm(d, { recursive: true, force: true });
}
