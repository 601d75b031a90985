/**
 * The clone's side of a template: after QEMU starts with `-incoming defer`, x-ignore-shared
 * on, `migrate-incoming` on a unix socket that Node streams the template's device state
 * into, `query-migrate` until completed, `cont` (unless the clone is held: restored and
 * paused, see hold.ts). Before `cont` the agent connection and the identity port are opened,
 * so both are waiting when the guest wakes. Then the clone is made its own machine: clock,
 * hostname set to the VM name, and a MAC of its own (the migrated virtio-net state carries
 * the template's), through the helper parked in the template (identity.ts) or, for a
 * template without one, in one agent guest process. A failure removes the clone entirely,
 * so a bad state file leaves no half-created VM.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isLocalVmError, LocalVmError } from '../../../errors.js';
import type { QemuHost } from '../host.js';
import { killHard } from '../observe.js';
import { guestExec, type QgaClient } from '../qga.js';
import { identitySocketOf, readPidFile, type VmRecord } from '../state.js';
import { IdentityPort, identityLine, parseAnswer } from './identity.js';
import type { QmpClient } from '../qmp.js';
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
      /** `cont` a held clone, its agent connection opened first. */
      kind: 'resume';
      record: VmRecord;
    }
  | {
      /** A blank image the template made, copied into the clone (store.ts's blankPath). */
      kind: 'copy-blank';
      from: string;
      to: string;
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
  // Nothing runs yet when a blank is copied: a failure is the create's to clean up.
  if (a.kind === 'copy-blank') return copyFile(a.from, a.to, constants.COPYFILE_EXCL);
  try {
    if (a.kind === 'restore') await restore(host, a.record, a.stateFile, a.template, a.hold === true);
    else if (a.kind === 'resume') await resumeHeld(host, a.record);
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
      // No self-announce rounds: they make the guest send gratuitous ARPs (cold network code
      // competing with the clone's first answers) to switches a user-mode network does not have.
      await qmp.execute('migrate-set-parameters', { 'announce-rounds': 0 });
      await qmp.execute('migrate-incoming', { uri: unixUri(socket) });
      await startSending(socket, stateFile, RESTORE_TIMEOUT_MS);
      await awaitMigration(qmp, RESTORE_TIMEOUT_MS, failure);
      // The identity port is connected before the guest runs (see identity.ts for why), and
      // a held clone keeps it open in this process until it is resumed.
      if (record.template?.identityHelper)
        host.identity.set(name, await IdentityPort.connect(identitySocketOf(record.paths), 5_000));
      if (!hold) await run(host, record, qmp);
    });
  } catch (error) {
    if (isLocalVmError(error) && error.details?.template === template) throw error;
    throw failure((error as Error).message);
  } finally {
    await rm(socket, { force: true });
  }
}

/**
 * Lets a restored clone run: the agent connection is opened first, its sync in the channel
 * when the guest wakes (with a host attached at the freeze, the agent answers at once).
 */
async function run(host: QemuHost, record: VmRecord, qmp: QmpClient): Promise<void> {
  await host.sessions.prepare(record.paths.qgaSocket, host.lockPath(record.name, 'qga'), record.spec.timeouts.readyMs);
  await qmp.execute('cont');
}

/** Runs held clone `record` (see hold.ts): `run` in its own QMP session. */
export async function resumeHeld(host: QemuHost, record: VmRecord): Promise<void> {
  await host.qmpSession(record.name, record.paths, RESTORE_TIMEOUT_MS, (qmp) => run(host, record, qmp));
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
 * Makes clone `record` its own machine and waits until its agent has answered: through the
 * helper parked in its template when this process holds the clone's identity port (see
 * identity.ts: no guest process is started), else through one agent guest-exec of IDENTITY.
 * The agent session's guest-sync is the agent's first answer after `cont`, so when this
 * resolves the clone is ready.
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
  const port = host.identity.take(name);
  const agent = (fn: (qga: QgaClient) => Promise<void>) =>
    host.sessions.run(record.paths.qgaSocket, host.lockPath(name, 'qga'), timeoutMs, fn, signal);
  if (port) {
    try {
      port.send(identityLine(hostname, mac, Date.now()));
      const answered = agent(async () => undefined);
      // Awaited below once the helper has answered; a failure before that must not go unhandled.
      answered.catch(() => undefined);
      const line = await port.nextLine(timeoutMs, `setting clock, hostname and MAC in clone ${name}`);
      const answer = parseAnswer(line);
      if (!answer.ok)
        throw new LocalVmError(
          'COMMAND_FAILED',
          `setting clock, hostname and MAC in clone ${name} failed: ${answer.why}`,
          {
            vm: name,
          },
        );
      await answered;
    } finally {
      port.close();
    }
    return;
  }
  await agent(async (qga) => {
    const r = await guestExec(qga, identityArgv(hostname, mac, Date.now()), { timeoutMs: 10_000, signal });
    if (r.exitCode !== 0) {
      throw new LocalVmError(
        'COMMAND_FAILED',
        `setting clock, hostname and MAC in clone ${name} failed (exit ${r.exitCode}): ${r.stderr.trim()}`,
        { vm: name },
      );
    }
  });
}

/** Kills the clone's QEMU and removes all it has: nothing of a failed clone stays. */
export async function discardClone(host: QemuHost, record: VmRecord): Promise<void> {
  host.identity.drop(record.name);
  await host.sessions.drop(record.paths.qgaSocket).catch(() => undefined);
  await killHard(record.name, await readPidFile(record.paths.pidFile));
  const dirs = [record.paths.dir, ...(record.paths.socketDir ? [record.paths.socketDir] : [])];
  for (const d of dirs) await rm(d, { recursive: true, force: true });
}
