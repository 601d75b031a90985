/**
 * Templates of VMs with cloud-init user-data. The seed disk is part of the frozen machine
 * (a device of its layout), so it moves into the template and every clone attaches that same
 * file read-only. cloud-init has finished before the freeze (`cloud-init status --wait`
 * through the agent), so a clone never runs it again: restored clones do not boot, and a
 * clone that cold-boots later finds the template's instance-id in both its disk and its seed,
 * so per-instance modules (users, write_files, runcmd) stay done. Guests without cloud-init
 * (tiny) skip the wait.
 */
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { LocalVmError } from '../../../errors.js';
import type { QemuHost } from '../host.js';
import { agentTransport } from '../guest.js';
import type { VmRecord } from '../state.js';

// Exit 0 without cloud-init; otherwise cloud-init's own status: 0 done, 2 done with
// recoverable errors (cloud-init >= 23.4), 1 failed. Values are never part of the script.
const WAIT_SCRIPT =
  'command -v cloud-init >/dev/null 2>&1 || { echo absent; exit 0; }; cloud-init status --wait --long; exit $?';

/** What the guest's cloud-init said, from the wait script's exit code and output. Pure. */
export function cloudInitOutcome(exitCode: number, stdout: string): { ok: boolean; ran: boolean; detail: string } {
  const detail = stdout.trim().split('\n').slice(-6).join('; ');
  if (stdout.trim() === 'absent') return { ok: true, ran: false, detail: 'no cloud-init in the guest' };
  return { ok: exitCode === 0 || exitCode === 2, ran: true, detail };
}

/** Waits until cloud-init in VM `name` is done; COMMAND_FAILED when it failed (a broken machine is not frozen). */
export async function awaitCloudInit(host: QemuHost, name: string, timeoutMs: number): Promise<void> {
  const r = await agentTransport(host, name).exec(['/bin/sh', '-c', WAIT_SCRIPT], { timeoutMs });
  const outcome = cloudInitOutcome(r.exitCode, r.stdout);
  if (!outcome.ok) {
    throw new LocalVmError('COMMAND_FAILED', `cloud-init failed in ${name} before it was frozen: ${outcome.detail}`, {
      vm: name,
      hint: 'fix the user-data (see `cloud-init status --long` and /var/log/cloud-init.log in a VM booted from the same spec)',
      details: { exitCode: r.exitCode, stderr: r.stderr.slice(-2000) },
    });
  }
}

/** Moves the seed QEMU shows the guest (the ISO, else the directory) into the template directory. */
export async function freezeSeed(record: VmRecord, dir: string): Promise<{ seedImage?: string; seedDir?: string }> {
  if (record.seedImage !== undefined) {
    const to = join(dir, 'seed.iso');
    await rename(record.seedImage, to);
    return { seedImage: to };
  }
  if (record.seedDir !== undefined) {
    const to = join(dir, 'seed');
    await rename(record.seedDir, to);
    return { seedDir: to };
  }
  return {};
}
