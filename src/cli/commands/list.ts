/** `localvm list`: the VMs of every available backend (and libvirt host), or of `--backend`. */
import type { Command as Commander } from 'commander';
import { listVmsByHost } from '../../operations/hosts.js';
import { formatVmTable, vmToJson } from '../format.js';
import { parseBackendArg } from '../parse.js';
import type { CliSession } from '../shared.js';

export function registerList(program: Commander, cli: CliSession): void {
  program
    .command('list')
    .description('list VMs (of every available backend, or of --backend)')
    .action(async (_opts: unknown, cmd: Commander) => {
      const ctx = cli.contextFor(cmd);
      const backend = parseBackendArg(cli.globals(cmd).backend);
      const listing = await listVmsByHost(ctx);
      const wanted = (b: string) => !backend || backend === 'auto' || b === backend;
      const vms = listing.vms.filter((vm) => wanted(vm.backend));
      const unreachable = listing.unreachable.filter((u) => wanted(u.backend));
      // A host that is down is reported, never fatal: the others' VMs are listed. Under --json
      // stdout stays the array of VMs; each unreachable host is a JSON line on stderr.
      if (cli.json(cmd)) {
        for (const u of unreachable)
          cli.err(
            JSON.stringify({ unreachable: { backend: u.backend, host: u.host, uri: u.uri, error: u.error.toJSON() } }) +
              '\n',
          );
      }
      cli.print(cmd, vms.map(vmToJson), formatVmTable(vms, unreachable));
    });
}
