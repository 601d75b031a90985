/** `localvm console NAME`: the tail of the guest's serial console, where boot problems show. */
import type { Command as Commander } from 'commander';
import { LocalVmError } from '../../errors.js';
import { backendOf } from '../../operations/vm.js';
import { parseVmName } from '../../schema.js';
import { parseIntArg } from '../parse.js';
import type { CliSession } from '../shared.js';

export function registerConsole(program: Commander, cli: CliSession): void {
  program
    .command('console')
    .description('the last lines the guest printed on its serial console (boot problems show here)')
    .argument('<name>', 'VM name')
    .option('-n, --lines <n>', 'how many lines', '40')
    .action(async (name: string, opts: { lines: string }, cmd: Commander) => {
      const ctx = cli.contextFor(cmd);
      const backend = await backendOf(parseVmName(name), ctx);
      if (!backend.consoleTail) {
        throw new LocalVmError('UNSUPPORTED', `the ${backend.name} backend has no serial console`, { vm: name });
      }
      const text = await backend.consoleTail(name, parseIntArg('lines', opts.lines));
      cli.print(cmd, { name, console: text }, text.endsWith('\n') || !text ? text : `${text}\n`);
    });
}
