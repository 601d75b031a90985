/**
 * The clone's side of a template: after QEMU starts with `-incoming defer`, x-ignore-shared
 * on, `migrate-incoming` on a unix socket that Node streams the template's device state
 * into, `query-migrate` until completed, `cont`. Then the clone is made its own machine
 * through the agent: clock set (`guest-set-time`), hostname set to the VM name, and a MAC
 * of its own (the migrated virtio-net state carries the template's). A failure removes the
 * clone entirely, so a bad state file leaves no half-created VM.
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
  | { kind: 'restore'; record: VmRecord; stateFile: string; template: string }
  | { kind: 'personalize'; record: VmRecord; hostname: string; mac: string };

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
    if (a.kind === 'restore') await restore(host, a.record, a.stateFile, a.template);
    else await personalize(host, a.record, a.hostname, a.mac);
  } catch (error) {
    await discardClone(host, a.record);
    throw error;
  }
}

async function restore(host: QemuHost, record: VmRecord, stateFile: string, template: string): Promise<void> {
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
      await qmp.execute('cont');
    });
  } catch (error) {
    if (isLocalVmError(error) && error.details?.template === template) throw error;
    throw failure((error as Error).message);
  } finally {
    await rm(socket, { force: true });
  }
}

// Hostname "$1", then the first non-loopback interface gets MAC "$2": one guest process for
// both (each costs a fork under emulation), values as arguments, never as script text.
const IDENTITY =
  'hostname "$1" || exit; for n in /sys/class/net/*; do n=${n##*/}; [ "$n" = lo ] && continue; ip link set dev "$n" address "$2"; exit $?; done; exit 0';

async function personalize(host: QemuHost, record: VmRecord, hostname: string, mac: string): Promise<void> {
  const name = record.name;
  const timeoutMs = record.spec.timeouts.readyMs;
  await host.sessions.run(record.paths.qgaSocket, host.lockPath(name, 'qga'), timeoutMs, async (qga) => {
    try {
      await qga.execute('guest-set-time', { time: Date.now() * 1_000_000 }, 10_000);
    } catch (error) {
      // qemu-ga sets the clock, then runs `hwclock -w`; a guest without an RTC device fails
      // only that second part, and its clock is set.
      if (!isLocalVmError(error, 'COMMAND_FAILED') || !/hwclock/i.test(error.message)) throw error;
    }
    const r = await guestExec(qga, ['/bin/sh', '-c', IDENTITY, 'sh', hostname, mac], { timeoutMs: 10_000 });
    if (r.exitCode !== 0) {
      throw new LocalVmError(
        'COMMAND_FAILED',
        `setting hostname and MAC in clone ${name} failed (exit ${r.exitCode}): ${r.stderr.trim()}`,
        { vm: name },
      );
    }
  });
}

/** Kills the clone's QEMU and removes all it has: nothing of a failed clone stays. */
async function discardClone(host: QemuHost, record: VmRecord): Promise<void> {
  await host.sessions.drop(record.paths.qgaSocket).catch(() => undefined);
  await killHard(record.name, await readPidFile(record.paths.pidFile));
  const dirs = [record.paths.dir, ...(record.paths.socketDir ? [record.paths.socketDir] : [])];
  for (const d of dirs) await rm(d, { recursive: true, force: true });
}
