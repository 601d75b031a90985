/** `localvm cleanup --prefix P`: delete every VM whose name starts with P, and only those. */
import type { Command as Commander } from 'commander';
import { cleanupVms } from '../../operations/vm.js';
import type { CliSession } from '../shared.js';

export function registerCleanup(program: Commander, cli: CliSession): void {
  program
    .command('cleanup')
    .description('delete every VM (then template) whose name starts with --prefix, and only those')
    .requiredOption('--prefix <prefix>', 'VM name prefix, e.g. pytest-test-')
    .action(async (opts: { prefix: string }, cmd: Commander) => {
      const dryRun = Boolean(cli.globals(cmd).dryRun);
      const r = await cleanupVms({ prefix: opts.prefix, dryRun }, cli.contextFor(cmd));
      if (cli.json(cmd)) {
        const { matched, deleted, templates } = r;
        const unreachable = r.unreachable.map((u) => ({ host: u.host, uri: u.uri, error: u.error.toJSON() }));
        cli.out(
          JSON.stringify({
            prefix: opts.prefix,
            dryRun,
            matched,
            deleted,
            templates,
            ...(unreachable.length ? { unreachable } : {}),
          }) + '\n',
        );
        return;
      }
      for (const u of r.unreachable) cli.err(`warning: not cleaned (unreachable): ${u.error.message}\n`);
      if (r.matched.length === 0 && r.templates.matched.length === 0) cli.out(`no VMs start with ${opts.prefix}\n`);
      for (const name of r.matched) cli.out(`${dryRun ? 'would delete' : 'deleted'} ${name}\n`);
      for (const name of r.templates.matched) {
        const kept = r.templates.kept.includes(name);
        cli.out(
          `${dryRun ? 'would delete' : kept ? 'kept (a clone outside the prefix uses it)' : 'deleted'} template ${name}\n`,
        );
      }
    });
}
