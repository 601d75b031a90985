/**
 * `localvm start|stop|restart|delete NAME`: one lifecycle call each. Under `--dry-run` each
 * prints the plan instead, with notes for the steps that run no process.
 */
import type { Command as Commander } from 'commander';
import { planVmOperation } from '../../operations/plan.js';
import { deleteVm, restartVm, startVm, stopVm } from '../../operations/vm.js';
import { formatPlan, formatRemoval, vmToJson } from '../format.js';
import type { CliSession } from '../shared.js';

export function registerLifecycle(program: Commander, cli: CliSession): void {
  const lifecycle = (verb: 'start' | 'stop' | 'restart', describe: string) => {
    const c = program.command(verb).description(describe).argument('<name>', 'VM name');
    if (verb === 'stop') c.option('--force', 'power off without a graceful shutdown');
    c.action(async (name: string, opts: { force?: boolean }, cmd: Commander) => {
      if (cli.globals(cmd).dryRun) return printPlan(cli, cmd, verb, name, opts.force);
      const ctx = cli.contextFor(cmd);
      const info =
        verb === 'start'
          ? await startVm(name, ctx)
          : verb === 'stop'
            ? await stopVm(name, { force: opts.force }, ctx)
            : await restartVm(name, ctx);
      cli.print(cmd, vmToJson(info), `${info.name}: ${info.state}\n`);
    });
  };
  lifecycle('start', 'start a stopped VM (a running VM is left alone)');
  lifecycle('stop', 'stop a VM (graceful, forced after a timeout)');
  lifecycle('restart', 'restart a VM');

  program
    .command('delete')
    .description('delete a VM and everything it owns (succeeds when it does not exist)')
    .argument('<name>', 'VM name')
    .action(async (name: string, _opts: unknown, cmd: Commander) => {
      if (cli.globals(cmd).dryRun) return printPlan(cli, cmd, 'delete', name);
      const { deleted } = await deleteVm(name, cli.contextFor(cmd));
      cli.print(cmd, { name, deleted }, formatRemoval('deleted', name, deleted));
    });
}

/** `--dry-run` of a lifecycle verb: the backend's plan, with notes for steps that run no process. */
async function printPlan(
  cli: CliSession,
  cmd: Commander,
  verb: 'start' | 'stop' | 'restart' | 'delete',
  name: string,
  force?: boolean,
) {
  cli.out(formatPlan(await planVmOperation(verb, name, { force }, cli.contextFor(cmd)), cli.json(cmd)));
}
