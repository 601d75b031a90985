/**
 * The `localvm` command line: the global options, the commands (one file each under
 * `commands/`), and errors turned into exit codes. `runCli` returns the exit code instead
 * of exiting, so tests drive it in-process with fake backends.
 */
import { backendChoices, backendDrivers } from '../backends/registry.js';
import { Command as Commander, CommanderError } from 'commander';
import { LocalVmError } from '../errors.js';
import { registerCleanup } from './commands/cleanup.js';
import { registerConsole } from './commands/console.js';
import { registerCp } from './commands/cp.js';
import { registerCreate } from './commands/create.js';
import { registerDemo } from './commands/demo.js';
import { registerDisk } from './commands/disk.js';
import { registerDoctor } from './commands/doctor.js';
import { registerExec } from './commands/exec.js';
import { registerImage } from './commands/image.js';
import { registerInfo } from './commands/info.js';
import { registerLifecycle } from './commands/lifecycle.js';
import { registerList } from './commands/list.js';
import { registerQmp } from './commands/qmp.js';
import { registerRun } from './commands/run.js';
import { registerPool } from './commands/pool.js';
import { registerShell } from './commands/shell.js';
import { registerSnapshot } from './commands/snapshot.js';
import { registerSsh } from './commands/ssh.js';
import { registerTemplate } from './commands/template.js';
import { EXIT_CODES, EXIT_CODES_HELP, exitCodeFor } from './exitCodes.js';
import { errorToJson, formatError } from './format.js';
import { CliSession, type CliDeps, type RegisterCommand } from './shared.js';

export type { CliDeps, CliStream } from './shared.js';

/** In the order `localvm --help` lists them. */
const COMMANDS: readonly RegisterCommand[] = [
  registerCreate,
  registerLifecycle,
  registerList,
  registerInfo,
  registerConsole,
  registerExec,
  registerShell,
  registerCp,
  registerSsh,
  registerQmp,
  registerCleanup,
  registerSnapshot,
  registerTemplate,
  registerDisk,
  registerImage,
  registerDoctor,
  registerDemo,
  registerRun,
  registerPool,
];

/** Runs one `localvm` invocation (`argv` without node and script) and returns its exit code. */
export async function runCli(argv: string[], deps: CliDeps): Promise<number> {
  const cli = new CliSession(argv, deps);
  const program = new Commander('localvm')
    .description(
      `Local virtual machines as code (backends: ${backendDrivers()
        .map((d) => d.name)
        .join(', ')}).`,
    )
    .option('--backend <backend>', `backend: ${backendChoices().join(', ')} (default auto)`)
    .option('--json', 'machine-readable output (errors as {"error": {...}} on stderr)')
    .option('--dry-run', 'print the commands that would run and run nothing')
    .option('-v, --verbose', 'debug logs on stderr, stack traces on errors')
    .option('--host <name>', 'libvirt: the host from the hosts list to act on (create: or auto)')
    .option('--connect <uri>', 'libvirt: the connection URI to act on, e.g. qemu+ssh://user@box/system')
    .addHelpText('after', `\n${EXIT_CODES_HELP}`)
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => cli.out(s),
      writeErr: (s) => cli.err(s),
      // Usage errors come out like every other error: code, message, hint.
      outputError: () => {},
    });
  for (const register of COMMANDS) register(program, cli);

  try {
    await program.parseAsync(argv, { from: 'user' });
    return cli.exitCode;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (
        error.code === 'commander.helpDisplayed' ||
        error.code === 'commander.version' ||
        error.code === 'commander.help'
      ) {
        return EXIT_CODES.OK;
      }
      if (error.code === 'commander.executeSubCommandAsync') return EXIT_CODES.FAILURE;
      const usage = new LocalVmError('VALIDATION', error.message.replace(/^error: /, ''), {
        hint: 'localvm --help lists the commands; localvm COMMAND --help their options',
      });
      cli.err(cli.wantsJson ? errorToJson(usage) : formatError(usage, false));
      return EXIT_CODES.VALIDATION;
    }
    cli.err(cli.wantsJson ? errorToJson(error) : formatError(error, cli.verbose));
    return exitCodeFor(error);
  }
}
