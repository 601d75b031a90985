/**
 * SSH access to a VM from the host, whatever the backend: the command `localvm ssh` runs and
 * the ssh_config stanza `localvm ssh-config` prints. UNSUPPORTED on a backend without it
 * (OrbStack: `orbctl run` and its own `ssh` need none of localvm's).
 */
import { requireCapability } from '../backend.js';
import type { OperationContext } from '../context.js';
import type { Command } from '../runner.js';
import { parseVmName } from '../schema.js';
import { backendOf } from './vm.js';

type Ctx = Partial<OperationContext> | undefined;

/** The `ssh` command line into VM `name`: a login shell, or `argv` there (quoted for the guest's shell). */
export async function sshCommand(name: string, argv: string[], options: { tty: boolean }, ctx?: Ctx): Promise<Command> {
  parseVmName(name);
  return requireCapability(await backendOf(name, ctx), 'ssh').sshCommand(name, argv, options);
}

/** An ssh_config stanza (`Host localvm-NAME`) that reaches VM `name` with plain `ssh -F`. */
export async function sshConfig(name: string, ctx?: Ctx): Promise<string> {
  parseVmName(name);
  return requireCapability(await backendOf(name, ctx), 'ssh').sshConfig(name);
}
