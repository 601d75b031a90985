/** `localvm list`: the VMs of every available backend, or of `--backend`. */
import type { Command as Commander } from 'commander';
import { listVms } from '../../operations/vm.js';
import { formatVmTable, vmToJson } from '../format.js';
import { parseBackendArg } from '../parse.js';
import type { CliSession } from '../shared.js';

export function registerList(program: Commander, cli: CliSession): void {
  program
    .command('list')
    .description('list VMs (of every available backend, or of --backend)')
    .action(async (_opts: unknown, cmd: Commander) => {
      const ctx = cli.contextFor(cmd);
      const backend = parseBackendArg(cli.globals(cmd).backend);
      const vms = (await listVms(ctx)).filter((vm) => !backend || backend === 'auto' || vm.backend === backend);
      cli.print(cmd, vms.map(vmToJson), formatVmTable(vms));
    });
}
