/** `localvm shell NAME SCRIPT`: run `/bin/sh -c SCRIPT` in the guest, with its exit code. */
import type { Command as Commander } from 'commander';
import { connect } from '../../connector.js';
import type { CliSession } from '../shared.js';

export function registerShell(program: Commander, cli: CliSession): void {
  program
    .command('shell')
    .description("run a shell script in the VM as /bin/sh -c SCRIPT: localvm shell NAME 'echo $HOSTNAME'")
    .argument('<name>', 'VM name')
    .argument('<script>', 'the script')
    .option('-i, --stdin', "pass this command's stdin to the script")
    .action(async (name: string, script: string, opts: { stdin?: boolean }, cmd: Commander) => {
      cli.noDryRun(cmd, 'shell');
      const vm = await connect(name, cli.contextFor(cmd));
      cli.guestResult(await vm.shell(script, opts.stdin ? { stdin: await cli.readInput() } : {}));
    });
}
