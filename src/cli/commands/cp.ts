/** `localvm cp SRC DST`: copy one file into or out of a VM, one side written NAME:/path. */
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command as Commander } from 'commander';
import { connect } from '../../connector.js';
import { baseName, parseCpArgs } from '../parse.js';
import type { CliSession } from '../shared.js';
import { readHostFile } from '../hostFiles.js';

export function registerCp(program: Commander, cli: CliSession): void {
  program
    .command('cp')
    .description('copy a file into or out of a VM: localvm cp ./f NAME:/tmp/f, localvm cp NAME:/etc/hostname .')
    .argument('<src>', 'host path or NAME:/path')
    .argument('<dst>', 'host path or NAME:/path')
    .action(async (src: string, dst: string, _opts: unknown, cmd: Commander) => {
      cli.noDryRun(cmd, 'cp');
      const plan = parseCpArgs(src, dst);
      const vm = await connect(plan.vm, cli.contextFor(cmd));
      let bytes: number;
      if (plan.direction === 'in') {
        const content = await readHostFile(plan.hostPath);
        const mode = (await stat(plan.hostPath)).mode & 0o777;
        await vm.putFile(plan.guestPath, content, { mode });
        bytes = content.length;
      } else {
        const content = await vm.getFile(plan.guestPath);
        const target = (await isDirectory(plan.hostPath))
          ? join(plan.hostPath, baseName(plan.guestPath))
          : plan.hostPath;
        await writeFile(target, content);
        bytes = content.length;
      }
      if (cli.json(cmd)) cli.out(JSON.stringify({ ...plan, bytes }) + '\n');
      else if (cli.verbose) cli.err(`copied ${bytes} bytes\n`);
    });
}

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isDirectory(),
    () => false,
  );
}
