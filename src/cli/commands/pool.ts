/**
 * `localvm pool list|clean`: the VMs of warm pools (library `createPool`, `localvm run`) as
 * their owners' session records list them. A pool whose process died hard is normally
 * reaped at once by its session's reaper; `clean` deletes what a dead pool left when the
 * reaper died with it (the next pool with that prefix sweeps them too).
 */
import type { Command as Commander } from 'commander';
import { poolSessions, sweepDeadPools } from '../../pool/sweep.js';
import type { CliSession } from '../shared.js';

/** Prefixes looked at without --prefix: createPool's default and `localvm run`'s. */
const DEFAULT_PREFIXES = ['pool-', 'run-'];

export function registerPool(program: Commander, cli: CliSession): void {
  const pool = program.command('pool').description('warm pools: list their VMs by owner, clean what dead pools left');
  pool
    .command('list')
    .description('pool VMs by owner process, alive or dead')
    .option('--prefix <prefix>', 'pool VM name prefix (default pool- and run-)')
    .action(async (opts: { prefix?: string }, cmd: Commander) => {
      const ctx = cli.contextFor(cmd);
      const rows = [];
      for (const prefix of opts.prefix ? [opts.prefix] : DEFAULT_PREFIXES) {
        for (const s of await poolSessions(prefix, ctx)) rows.push({ prefix, ...s });
      }
      if (cli.json(cmd)) {
        cli.out(JSON.stringify(rows) + '\n');
        return;
      }
      if (rows.length === 0) cli.out('no pool VMs\n');
      for (const r of rows) {
        cli.out(`${r.prefix} owner ${r.pid} ${r.alive ? 'alive' : 'dead'}: ${r.vms.join(', ')}\n`);
      }
    });
  pool
    .command('clean')
    .description('delete the VMs of pools whose owner process is gone (never those of a live pool)')
    .option('--prefix <prefix>', 'pool VM name prefix (default pool- and run-)')
    .action(async (opts: { prefix?: string }, cmd: Commander) => {
      const dryRun = Boolean(cli.globals(cmd).dryRun);
      const ctx = cli.contextFor(cmd);
      const deleted: string[] = [];
      for (const prefix of opts.prefix ? [opts.prefix] : DEFAULT_PREFIXES) {
        deleted.push(...(await sweepDeadPools(prefix, ctx, dryRun)));
      }
      if (cli.json(cmd)) {
        cli.out(JSON.stringify({ dryRun, deleted }) + '\n');
        return;
      }
      if (deleted.length === 0) cli.out('no VMs of dead pools\n');
      for (const name of deleted) cli.out(`${dryRun ? 'would delete' : 'deleted'} ${name}\n`);
    });
}
