/** `localvm create NAME`: create a VM (retrying transient failures) and wait until it is ready. */
import type { Command as Commander } from 'commander';
import { planCreateVm } from '../../operations/plan.js';
import { createVmWithRetry, waitForVmReady } from '../../operations/vm.js';
import { parseVmSpec } from '../../schema.js';
import { formatCreated, formatPlan, vmToJson } from '../format.js';
import { buildCreateSpec, parseBackendArg } from '../parse.js';
import type { CliSession } from '../shared.js';

interface CreateOptions {
  image?: string;
  memory?: string;
  cpus?: string;
  port?: string[];
  template?: string;
  wait: boolean;
}

export function registerCreate(program: Commander, cli: CliSession): void {
  program
    .command('create')
    .description('create a VM and wait until it is ready')
    .argument('<name>', 'VM name (a-z, 0-9, "-")')
    .option('--image <image>', 'tiny (default), a qcow2/raw path, or distro[:version] on OrbStack')
    .option('--memory <memory>', 'memory in MiB, or 512M / 2G')
    .option('--cpus <n>', 'virtual CPUs')
    .option('--port <H:G>', 'forward host port H to guest port G (repeatable)', (v: string, prev: string[] = []) => [
      ...prev,
      v,
    ])
    .option('--template <T>', 'restore template T instead of booting (see `localvm template`)')
    .option('--no-wait', 'return once the VM is started, without waiting for the guest agent')
    .action(async (name: string, opts: CreateOptions, cmd: Commander) => {
      const ctx = cli.contextFor(cmd);
      const backendArg = parseBackendArg(cli.globals(cmd).backend);
      const spec = parseVmSpec({
        ...buildCreateSpec(name, opts, backendArg),
        ...(opts.template !== undefined ? { template: opts.template } : {}),
      });
      if (cli.globals(cmd).dryRun) {
        cli.out(formatPlan(await planCreateVm(spec, ctx), cli.json(cmd)));
        return;
      }
      const result = await cli.withProgress(
        `creating ${spec.name}`,
        () =>
          createVmWithRetry(
            spec,
            { onRetry: (e, n) => cli.err(`attempt ${n} failed (${e.message}), retrying\n`) },
            ctx,
          ),
        (r) => (r.adopted ? 'adopted an existing VM with the same spec' : `started (pid ${r.info.pid ?? '?'})`),
      );
      let readyMs: number | null = null;
      let info = result.info;
      if (opts.wait) {
        const ready = await cli.withProgress(
          `waiting for ${spec.name} to be ready`,
          () => waitForVmReady(spec.name, {}, ctx),
          () => 'ready',
        );
        readyMs = Math.round(ready.durationMs);
        info = ready.info;
      }
      cli.print(
        cmd,
        { vm: vmToJson(info), adopted: result.adopted, attempts: result.attempts, readyMs },
        formatCreated(info, result.adopted, readyMs),
      );
    });
}
