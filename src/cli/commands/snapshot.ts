/** `localvm snapshot create|list|restore|delete`: snapshots of a running QEMU VM. */
import type { Command as Commander } from 'commander';
import { deleteSnapshot, listSnapshots, restoreSnapshot, snapshotVm } from '../../operations/snapshot.js';
import { formatRemoval, formatSnapshotTable } from '../format.js';
import type { CliSession } from '../shared.js';

export function registerSnapshot(program: Commander, cli: CliSession): void {
  const snapshot = program
    .command('snapshot')
    .description('snapshots of a running QEMU VM: RAM, devices and disks, restored in well under a second');
  snapshot
    .command('create')
    .description('save the running VM under a snapshot name')
    .argument('<name>', 'VM name')
    .argument('<snapshot>', 'snapshot name')
    .action(async (name: string, snap: string, _opts: unknown, cmd: Commander) => {
      cli.noDryRun(cmd, 'snapshot create');
      const s = await snapshotVm(name, snap, cli.contextFor(cmd));
      cli.print(cmd, s, `saved ${name}@${s.name}\n`);
    });
  snapshot
    .command('list')
    .description("list a VM's snapshots, oldest first")
    .argument('<name>', 'VM name')
    .action(async (name: string, _opts: unknown, cmd: Commander) => {
      const list = await listSnapshots(name, cli.contextFor(cmd));
      cli.print(cmd, list, formatSnapshotTable(list));
    });
  snapshot
    .command('restore')
    .description('bring the running VM back to a snapshot')
    .argument('<name>', 'VM name')
    .argument('<snapshot>', 'snapshot name')
    .action(async (name: string, snap: string, _opts: unknown, cmd: Commander) => {
      cli.noDryRun(cmd, 'snapshot restore');
      await restoreSnapshot(name, snap, cli.contextFor(cmd));
      cli.print(cmd, { name, snapshot: snap, restored: true }, `restored ${name}@${snap}\n`);
    });
  snapshot
    .command('delete')
    .description('delete a snapshot (succeeds when it does not exist)')
    .argument('<name>', 'VM name')
    .argument('<snapshot>', 'snapshot name')
    .action(async (name: string, snap: string, _opts: unknown, cmd: Commander) => {
      cli.noDryRun(cmd, 'snapshot delete');
      const { deleted } = await deleteSnapshot(name, snap, cli.contextFor(cmd));
      cli.print(cmd, { name, snapshot: snap, deleted }, formatRemoval('deleted', `${name}@${snap}`, deleted));
    });
}
