/** `localvm doctor [--fix] [--force]`: is what localvm records what exists? Exit 0 coherent, 1 findings left. */
import type { Command as Commander } from 'commander';
import { LocalVmError } from '../../errors.js';
import { doctor, doctorExitCode, type DoctorFinding, type DoctorReport } from '../../operations/doctor.js';
import { formatTable } from '../format.js';
import type { CliSession } from '../shared.js';

function fixColumn(f: DoctorFinding, fixed: boolean): string {
  if (fixed && f.outcome) return f.outcome;
  const how = !f.fixable ? ' (by hand)' : f.needsForce ? ' (--fix --force)' : ' (--fix)';
  return `${f.fix}${how}`;
}

/** The findings as a table for people; `fixed`: doctor ran with --fix. Pure. */
export function formatDoctor(report: DoctorReport, fixed: boolean): string {
  if (report.findings.length === 0) return 'no findings: what is recorded is what exists\n';
  const header = [...(fixed ? ['STATUS'] : []), 'CODE', 'VM', 'SEEN', fixed ? 'DONE / FIX' : 'FIX'];
  const rows = report.findings.map((f) => [
    ...(fixed ? [f.status] : []),
    f.code,
    f.vm ?? '-',
    f.seen,
    fixColumn(f, fixed),
  ]);
  const left = report.left.filter((f) => f.severity !== 'info').length;
  const summary = fixed
    ? `${report.findings.filter((f) => f.status === 'fixed').length} fixed, ${left} left`
    : `${report.findings.length} finding(s)${left ? '' : ', none that makes the home incoherent'}`;
  return `${formatTable(header, rows)}${summary}\n`;
}

export function registerDoctor(program: Commander, cli: CliSession): void {
  program
    .command('doctor')
    .description('compare what is recorded with what exists (processes, files, locks, sockets, sessions)')
    .option(
      '--fix',
      'repair what is safe: reconcile records, remove stale locks/sockets, kill orphan QEMUs, delete half-created VMs',
    )
    .option('--force', "with --fix, also delete what may hold a user's data (orphan disks, VMs with data)")
    .action(async (opts: { fix?: boolean; force?: boolean }, cmd: Commander) => {
      if (opts.force && !opts.fix) {
        throw new LocalVmError('VALIDATION', '--force only means something with --fix', {
          hint: 'localvm doctor --fix --force',
        });
      }
      if (opts.fix) cli.noDryRun(cmd, 'doctor --fix');
      const report = await doctor({ fix: opts.fix, force: opts.force }, cli.contextFor(cmd));
      cli.print(cmd, report.findings, formatDoctor(report, Boolean(opts.fix)));
      cli.exitCode = doctorExitCode(report);
    });
}
