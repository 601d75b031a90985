/**
 * `doctor`: compares what localvm records with what exists (QEMU processes, files, locks,
 * sockets, fixture sessions, cached images) and, with `fix`, repairs what is safe. The
 * parts live in ./doctor/: gather.ts (read-only facts), classify*.ts (pure findings),
 * fix.ts (repairs under the lifecycle locks). It looks at the QEMU backend's state: the
 * backend whose records and files live on this host.
 */
import { createQemuHost } from '../backends/qemu/host.js';
import { withDefaults, type OperationContext } from '../context.js';
import { classifyHome, isProblem, lifecycleLockPath } from './doctor/classify.js';
import { classifyDisks, fixDisks, gatherDisks, isDiskFinding } from './doctor/disks.js';
import { applyFixes, findingKey } from './doctor/fix.js';
import { gatherHome } from './doctor/gather.js';
import type { DoctorFinding, Finding } from './doctor/types.js';

const open = (fs: Finding[]): DoctorFinding[] => fs.map((f) => ({ ...f, status: 'open' }));

export type { DoctorAction, DoctorCode, DoctorFinding, Severity as DoctorSeverity } from './doctor/types.js';

export interface DoctorOptions {
  /** Repair what is safe (and with `force` also what may lose data); default: only report. */
  fix?: boolean | undefined;
  /** Let `fix` delete what may hold a user's data: orphan disks, unknown files, VMs with data. */
  force?: boolean | undefined;
  /** How long a fix waits for a VM another operation holds before leaving its findings (default 10 s). */
  lockTimeoutMs?: number | undefined;
}

export interface DoctorReport {
  /** What was found, each with its status (`open` unless `fix` ran). */
  findings: DoctorFinding[];
  /** What is still seen at the end (after `fix`: looked at again). */
  left: DoctorFinding[];
  /** No finding left but `info` ones. */
  coherent: boolean;
}

/**
 * Checks the home of `ctx.config` (and repairs it with `options.fix`). Without `fix` it
 * writes nothing and takes no lock. Idempotent: a second run after a fix finds nothing the
 * fix could repair.
 */
export async function doctor(options: DoctorOptions = {}, ctx?: Partial<OperationContext>): Promise<DoctorReport> {
  const c = withDefaults(ctx);
  const look = async () => {
    const home = await gatherHome(c.config);
    // The VM records doctor has read already: standalone disks are checked against them.
    return [...classifyHome(home), ...classifyDisks(await gatherDisks(c.config, home.vms))];
  };
  const found = await look();
  if (!options.fix) {
    return { findings: open(found), left: open(found), coherent: !found.some(isProblem) };
  }
  const host = createQemuHost({ config: c.config, runner: c.runner, log: c.log });
  const lockTimeoutMs = options.lockTimeoutMs ?? 10_000;
  // Disk findings first, under the disk's lock and then the VM's (the disk operations' order).
  const fixedDisks = await fixDisks(
    c.config,
    (vm) => lifecycleLockPath(c.config.stateDir, vm),
    found.filter(isDiskFinding),
    lockTimeoutMs,
  );
  const fixed = [
    ...fixedDisks,
    ...(await applyFixes(
      host,
      found.filter((f) => !isDiskFinding(f)),
      { force: Boolean(options.force), lockTimeoutMs },
    )),
  ];
  const left = await look();
  const leftKeys = new Set(left.map(findingKey));
  // A fix that ran but whose finding is still seen did not work: say so.
  const findings = fixed.map((f): DoctorFinding =>
    f.status === 'fixed' && leftKeys.has(findingKey(f))
      ? { ...f, status: 'failed', outcome: `${f.outcome ?? 'fixed'}, but still seen` }
      : f,
  );
  // What a fix revealed (or what appeared meanwhile) is said too, so the output explains the exit code.
  const seen = new Set(fixed.map(findingKey));
  const revealed = open(left.filter((f) => !seen.has(findingKey(f))));
  return { findings: [...findings, ...revealed], left: open(left), coherent: !left.some(isProblem) };
}

/** The exit code of `localvm doctor`: 0 when coherent, 1 when findings are left. Pure. */
export const doctorExitCode = (report: DoctorReport): 0 | 1 => (report.coherent ? 0 : 1);
