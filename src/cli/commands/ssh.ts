/**
 * `localvm ssh NAME [-- CMD...]`: a shell (or CMD) in the VM over SSH on this terminal, like
 * `limactl shell`; its exit code is ours. `localvm ssh-config NAME`: an ssh_config stanza,
 * like `vagrant ssh-config`, for plain ssh, Ansible or pyinfra.
 */
import type { Command as Commander } from 'commander';
import { LocalVmError } from '../../errors.js';
import { sshCommand, sshConfig } from '../../operations/ssh.js';
import type { CliSession } from '../shared.js';

export function registerSsh(program: Commander, cli: CliSession): void {
  program
    .command('ssh')
    .description('log in to the VM over SSH (or run a command there): localvm ssh NAME [-- CMD...]')
    .argument('<name>', 'VM name')
    .argument('[argv...]', 'a command to run instead of a login shell (after --)')
    .addHelpText(
      'after',
      "\nThe VM's own key and pinned host key are used; the command runs as the VM's SSH user (sudo works without a password).",
    )
    .action(async (name: string, argv: string[], _opts: unknown, cmd: Commander) => {
      cli.noDryRun(cmd, 'ssh');
      const ctx = cli.contextFor(cmd);
      // A TTY only when this is one: `localvm ssh NAME -- cmd | grep` stays a plain pipe.
      const tty = Boolean(process.stdin.isTTY) && cli.isTty();
      const command = await sshCommand(name, argv, { tty }, ctx);
      if (!ctx.runner.runInteractive) {
        throw new LocalVmError('UNSUPPORTED', 'this runner cannot run an interactive command');
      }
      cli.exitCode = await ctx.runner.runInteractive(command);
    });

  program
    .command('ssh-config')
    .description('an ssh_config stanza for the VM: localvm ssh-config NAME >> ~/.ssh/config; ssh localvm-NAME')
    .argument('<name>', 'VM name')
    .action(async (name: string, _opts: unknown, cmd: Commander) => {
      const text = await sshConfig(name, cli.contextFor(cmd));
      cli.print(cmd, { config: text }, text);
    });
}
