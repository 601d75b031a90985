/** `localvm info NAME`: one VM's state and configuration. */
import type { Command as Commander } from 'commander';
import { vmInfo } from '../../operations/vm.js';
import { formatVmInfo, vmToJson } from '../format.js';
import type { CliSession } from '../shared.js';

export function registerInfo(program: Commander, cli: CliSession): void {
  program
    .command('info')
    .description("a VM's state and configuration")
    .argument('<name>', 'VM name')
    .action(async (name: string, _opts: unknown, cmd: Commander) => {
      const info = await vmInfo(name, cli.contextFor(cmd));
      cli.print(cmd, vmToJson(info), formatVmInfo(info));
    });
}
