/**
 * The SSH part of a QEMU plan: whether a VM gets SSH access, the steps that set it up at
 * create, and a free port for a stopped VM whose recorded one was taken.
 */
import { join } from 'node:path';
import { LocalVmError } from '../../../errors.js';
import type { Command } from '../../../runner.js';
import type { VmSpec } from '../../../schema.js';
import type { QemuStep } from '../plan.js';
import type { SshRecord, VmRecord } from '../state.js';
import { keygenCommand } from './argv.js';
import { loopbackPortFree, pickSshPort } from './port.js';
import { SSH_USER } from './userData.js';

/**
 * The VM's SSH access, when it gets one: asked for (`transport: 'ssh'`), or by default for
 * a VM that boots a disk image (a cloud image with cloud-init and sshd; the tiny image has
 * neither). Guest port 22 is forwarded to a loopback port free now (see pickSshPort).
 */
export async function planSsh(spec: VmSpec, dir: string, bootsDisk: boolean): Promise<SshRecord | undefined> {
  const wanted = spec.transport ?? 'auto';
  if (wanted === 'agent' || (wanted === 'auto' && !bootsDisk)) return undefined;
  if (spec.image === 'tiny' && !spec.kernel) {
    throw new LocalVmError('VALIDATION', 'the tiny image has no SSH server', {
      vm: spec.name,
      issues: [{ property: 'transport', reason: "the tiny image is reached through its agent: use 'agent' or 'auto'" }],
    });
  }
  return {
    port: await pickSshPort(dir),
    user: SSH_USER,
    keyFile: join(dir, 'ssh_key'),
    knownHosts: join(dir, 'known_hosts'),
  };
}

/**
 * The record with a free SSH port: a stopped VM's recorded port may have been taken in the
 * meantime, and QEMU would refuse to start over it. The launch records the new one.
 */
export async function withFreeSshPort(record: VmRecord): Promise<VmRecord> {
  if (!record.ssh || (await loopbackPortFree(record.ssh.port))) return record;
  return { ...record, ssh: { ...record.ssh, port: await pickSshPort(record.paths.dir, record.ssh.port) } };
}

/** The create steps of SSH access: the key pair, and the known_hosts the first connect fills. */
export function sshSteps(name: string, ssh: SshRecord, run: (command: Command) => QemuStep): QemuStep[] {
  return [
    run(keygenCommand(ssh.keyFile, `localvm-${name}`)),
    // Empty until the first connect pins the guest's host key.
    { summary: `create ${ssh.knownHosts} (mode 0600)`, action: { kind: 'touch', path: ssh.knownHosts } },
  ];
}
