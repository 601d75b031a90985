/** `localvm demo`: the main job end to end on a tiny VM, one timed line per step. */
import type { Command as Commander } from 'commander';
import { runDemo } from '../../demo.js';
import { formatDuration } from '../format.js';
import type { CliSession } from '../shared.js';

export function registerDemo(program: Commander, cli: CliSession): void {
  program
    .command('demo')
    .description('the main job end to end on a tiny VM: create, wait, exec, copy in and out, delete')
    .option('--keep', 'keep the VM at the end')
    .action(async (opts: { keep?: boolean }, cmd: Commander) => {
      cli.noDryRun(cmd, 'demo');
      const steps = await runDemo(
        {
          keep: opts.keep,
          onStep: (s) => {
            if (!cli.json(cmd)) cli.out(`${s.step.padEnd(10)} ${formatDuration(s.ms).padStart(8)}  ${s.detail}\n`);
          },
        },
        cli.contextFor(cmd),
      );
      if (cli.json(cmd)) cli.out(JSON.stringify(steps) + '\n');
    });
}
