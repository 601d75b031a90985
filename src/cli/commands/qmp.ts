/** `localvm qmp NAME COMMAND [JSON]`: one raw QMP command to a QEMU VM, its reply as JSON. */
import type { Command as Commander } from 'commander';
import { requireCapability } from '../../backend.js';
import { LocalVmError } from '../../errors.js';
import { backendOf } from '../../operations/vm.js';
import { parseVmName } from '../../schema.js';
import { parseJsonArgs } from '../parse.js';
import type { CliSession } from '../shared.js';

export function registerQmp(program: Commander, cli: CliSession): void {
  program
    .command('qmp')
    .description('send a raw QMP command to a QEMU VM: localvm qmp NAME query-status')
    .argument('<name>', 'VM name')
    .argument('<command>', 'QMP command, e.g. query-status')
    .argument('[json-args]', 'arguments as a JSON object')
    .action(async (name: string, command: string, rawArgs: string | undefined, _opts: unknown, cmd: Commander) => {
      cli.noDryRun(cmd, 'qmp');
      const args = parseJsonArgs(rawArgs);
      if (!/^[a-z][a-z0-9_-]*$/i.test(command)) {
        throw new LocalVmError('VALIDATION', `invalid QMP command name ${JSON.stringify(command)}`, {
          issues: [{ property: 'command', reason: 'must be a QMP command name such as query-status' }],
        });
      }
      const ctx = cli.contextFor(cmd);
      const backend = requireCapability(await backendOf(parseVmName(name), ctx), 'qmp');
      const result = await backend.qmp(name, command, args);
      // People get it indented; scripts get one line.
      cli.out(JSON.stringify(result ?? null, null, cli.json(cmd) ? undefined : 2) + '\n');
    });
}
