/** `localvm exec NAME -- ARGV...`: run a command in the guest (no shell), with its exit code. */
import type { Command as Commander } from 'commander';
import { connect } from '../../connector.js';
import { parseIntArg } from '../parse.js';
import type { CliSession } from '../shared.js';

export function registerExec(program: Commander, cli: CliSession): void {
  program
    .command('exec')
    .description('run a command in the VM (no shell): localvm exec NAME -- ls -l /')
    .argument('<name>', 'VM name')
    .argument('<argv...>', 'the command and its arguments')
    .option('--timeout <ms>', 'kill the command after this many milliseconds')
    .option('-i, --stdin', "pass this command's stdin to the guest command")
    .action(async (name: string, command: string[], opts: { timeout?: string; stdin?: boolean }, cmd: Commander) => {
      cli.noDryRun(cmd, 'exec');
      const vm = await connect(name, cli.contextFor(cmd));
      const r = await vm.exec(command, {
        ...(opts.timeout ? { timeoutMs: parseIntArg('timeout', opts.timeout) } : {}),
        ...(opts.stdin ? { stdin: await cli.readInput() } : {}),
      });
      cli.guestResult(r);
    });
}
