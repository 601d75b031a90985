/**
 * `localvm disk ...`: extra qcow2 disks of a QEMU VM (`add|remove`, `list VM`), and
 * standalone disks that outlive VMs (`create|attach|detach|resize|delete`, `list` without
 * a VM). Both are hot-plugged while the VM runs.
 */
import type { Command as Commander } from 'commander';
import { addDisk, listDisks, removeDisk } from '../../operations/disk.js';
import {
  attachDisk,
  createDisk,
  deleteDisk,
  detachDisk,
  listStandaloneDisks,
  resizeDisk,
} from '../../operations/standaloneDisk.js';
import { formatBytes, formatDiskTable, formatRemoval, formatStandaloneDiskTable } from '../format.js';
import type { CliSession } from '../shared.js';

export function registerDisk(program: Commander, cli: CliSession): void {
  const disk = program
    .command('disk')
    .description(
      'disks: standalone ones (create, attach, detach, resize, delete) and extra disks of one VM (add, remove)',
    );
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
    .description("without a VM: the standalone disks; with one: that VM's extra disks")
    .argument('[name]', 'VM name')
    .action(async (name: string | undefined, _opts: unknown, cmd: Commander) => {
      if (name === undefined) {
        const all = await listStandaloneDisks(cli.contextFor(cmd));
        cli.print(cmd, all, formatStandaloneDiskTable(all));
        return;
      }
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
  disk
    .command('create')
    .description('create a standalone qcow2 disk (empty, or a copy of an image)')
    .argument('<disk>', 'disk name')
    .argument('<size>', 'size, e.g. 512M or 10G')
    .option('--from <image>', 'copy this disk image (qcow2, raw, ...) into it')
    .action(async (diskName: string, size: string, opts: { from?: string }, cmd: Commander) => {
      cli.noDryRun(cmd, 'disk create');
      const d = await createDisk(diskName, size, { from: opts.from }, cli.contextFor(cmd));
      cli.print(cmd, d, `created disk ${d.name} (${formatBytes(d.sizeBytes)})\n`);
    });
  disk
    .command('attach')
    .description('attach a standalone disk to a VM (hot-plugged when it runs, kept across restarts)')
    .argument('<name>', 'VM name')
    .argument('<disk>', 'disk name')
    .option('--readonly', 'attach read-only (read-only attachments may share a disk)')
    .action(async (name: string, diskName: string, opts: { readonly?: boolean }, cmd: Commander) => {
      cli.noDryRun(cmd, 'disk attach');
      const d = await attachDisk(name, diskName, { readonly: Boolean(opts.readonly) }, cli.contextFor(cmd));
      cli.print(cmd, d, `attached disk ${d.name} to ${name}${opts.readonly ? ' (read-only)' : ''}\n`);
    });
  disk
    .command('detach')
    .description('detach a standalone disk from a VM (waits until the guest lets go)')
    .argument('<name>', 'VM name')
    .argument('<disk>', 'disk name')
    .action(async (name: string, diskName: string, _opts: unknown, cmd: Commander) => {
      cli.noDryRun(cmd, 'disk detach');
      const { detached } = await detachDisk(name, diskName, {}, cli.contextFor(cmd));
      const text = detached
        ? `detached disk ${diskName} from ${name}\n`
        : `disk ${diskName} was not attached to ${name}\n`;
      cli.print(cmd, { name, disk: diskName, detached }, text);
    });
  disk
    .command('resize')
    .description('grow a standalone disk (online when attached to a running VM)')
    .argument('<disk>', 'disk name')
    .argument('<size>', 'new size, e.g. 2G (never smaller)')
    .action(async (diskName: string, size: string, _opts: unknown, cmd: Commander) => {
      cli.noDryRun(cmd, 'disk resize');
      const d = await resizeDisk(diskName, size, cli.contextFor(cmd));
      cli.print(cmd, d, `disk ${d.name} is ${formatBytes(d.sizeBytes)}\n`);
    });
  disk
    .command('delete')
    .description('delete a standalone disk (refused while attached; succeeds when it does not exist)')
    .argument('<disk>', 'disk name')
    .action(async (diskName: string, _opts: unknown, cmd: Commander) => {
      cli.noDryRun(cmd, 'disk delete');
      const { deleted } = await deleteDisk(diskName, cli.contextFor(cmd));
      cli.print(cmd, { disk: diskName, deleted }, formatRemoval('deleted', `disk ${diskName}`, deleted));
    });
}
