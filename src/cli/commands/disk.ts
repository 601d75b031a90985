/** `localvm disk add|list|remove`: extra qcow2 disks of a QEMU VM, hot-plugged while it runs. */
import type { Command as Commander } from 'commander';
import { addDisk, listDisks, removeDisk } from '../../operations/disk.js';
import { formatBytes, formatDiskTable, formatRemoval } from '../format.js';
import type { CliSession } from '../shared.js';

export function registerDisk(program: Commander, cli: CliSession): void {
  const disk = program.command('disk').description('extra disks of a QEMU VM, hot-plugged while it runs');
  disk
    .command('add')
    .description('create a qcow2 disk and attach it (the guest sees a new /dev/vdX)')
    .argument('<name>', 'VM name')
    .argument('<disk>', 'disk name')
    .argument('<size>', 'size, e.g. 512M or 10G')
    .action(async (name: string, diskName: string, size: string, _opts: unknown, cmd: Commander) => {
      cli.noDryRun(cmd, 'disk add');
      const d = await addDisk(name, { name: diskName, size }, cli.contextFor(cmd));
      cli.print(cmd, d, `added ${name}:${d.name} (${formatBytes(d.sizeBytes)})\n`);
    });
  disk
    .command('list')
    .description("list a VM's extra disks")
    .argument('<name>', 'VM name')
    .action(async (name: string, _opts: unknown, cmd: Commander) => {
      const list = await listDisks(name, cli.contextFor(cmd));
      cli.print(cmd, list, formatDiskTable(list));
    });
  disk
    .command('remove')
    .description('detach a disk and delete its file (succeeds when it does not exist)')
    .argument('<name>', 'VM name')
    .argument('<disk>', 'disk name')
    .action(async (name: string, diskName: string, _opts: unknown, cmd: Commander) => {
      cli.noDryRun(cmd, 'disk remove');
      const { removed } = await removeDisk(name, diskName, cli.contextFor(cmd));
      cli.print(cmd, { name, disk: diskName, removed }, formatRemoval('removed', `${name}:${diskName}`, removed));
    });
}
