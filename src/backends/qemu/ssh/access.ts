/**
 * `localvm ssh` and `localvm ssh-config` for QEMU VMs: the command line or the ssh_config
 * stanza that reaches the guest with the VM's key and its pinned host key. The host key is
 * learned (one `true` over SSH) before either is handed out, so plain ssh with
 * `StrictHostKeyChecking yes` works from the first call.
 */
import { stat } from 'node:fs/promises';
import type { SshCapable } from '../../../backend.js';
import { LocalVmError } from '../../../errors.js';
import type { QemuHost } from '../host.js';
import { requireRunning } from '../observe.js';
import { sshConfigStanza, sshInteractiveCommand, type SshTarget } from './argv.js';
import { sshTarget, sshTransport } from './transport.js';

/** How long learning the host key may take before `localvm ssh` gives up. */
const PIN_TIMEOUT_MS = 30_000;

async function pinnedTarget(host: QemuHost, name: string): Promise<SshTarget> {
  const { record } = await requireRunning(host, name);
  const t = sshTarget(host, record);
  if ((await stat(t.knownHosts).catch(() => undefined))?.size) return t;
  const probe = await sshTransport(host, name).probe(PIN_TIMEOUT_MS);
  if (!probe.ready) {
    throw new LocalVmError('TRANSIENT', `VM ${name}: SSH does not answer yet: ${probe.detail}`, {
      vm: name,
      hint: `wait until it is ready (localvm create waits), or see localvm console ${name}`,
    });
  }
  return t;
}

export function createSshAccess(host: QemuHost): SshCapable {
  return {
    async sshCommand(name, argv, options) {
      return sshInteractiveCommand(await pinnedTarget(host, name), argv, { pinned: true, tty: options.tty });
    },
    async sshConfig(name) {
      return sshConfigStanza(await pinnedTarget(host, name));
    },
  };
}
