/**
 * `localvm create NAME`: create a VM (retrying transient failures) and wait until it is ready.
 * A VM that is not ready in time is kept, not deleted: a first boot on a loaded machine may
 * just be slow, and the console shows what it is doing. The error says so and how to delete it.
 */
import type { Command as Commander } from 'commander';
import type { OperationContext } from '../../context.js';
import { isLocalVmError, LocalVmError } from '../../errors.js';
import { planCreateVm } from '../../operations/plan.js';
import { createVmWithRetry, findVm, waitForVmReady } from '../../operations/vm.js';
import { parseVmSpec } from '../../schema.js';
import { formatCreated, formatPlan, vmToJson } from '../format.js';
import { readHostFile } from '../hostFiles.js';
import { buildCreateSpec, mergeCreateSpec, parseBackendArg, parseDurationArg, type CreateExtras } from '../parse.js';
import { checkUserData, parseSpecFile } from '../specFile.js';
import type { CliSession } from '../shared.js';

interface CreateOptions extends CreateExtras {
  file?: string;
  image?: string;
  memory?: string;
  cpus?: string;
  port?: string[];
  userData?: string;
  template?: string;
  wait: boolean;
  readyTimeout?: string;
}

const repeat = (v: string, prev: string[] = []) => [...prev, v];

/** The spec a create command line asks for: `-f` file, flags over it, `--user-data` read and checked. */
async function requestedSpec(
  cli: CliSession,
  name: string | undefined,
  opts: CreateOptions,
  backend: string | undefined,
  place: { host?: string | undefined; connect?: string | undefined },
) {
  const base = opts.file ? parseSpecFile((await readHostFile(opts.file, 'file')).toString('utf8'), opts.file) : {};
  const vmName = name ?? (typeof base.name === 'string' ? base.name : undefined);
  if (vmName === undefined) {
    throw new LocalVmError('VALIDATION', "missing required argument 'name': give NAME, or name: in the -f file", {
      issues: [{ property: 'name', reason: 'missing' }],
    });
  }
  let userData: string | undefined;
  if (opts.userData !== undefined) {
    userData = (await readHostFile(opts.userData, 'userData')).toString('utf8');
    const warning = checkUserData(userData, opts.userData);
    if (warning) cli.err(`warning: ${warning}\n`);
  }
  const flags = {
    ...buildCreateSpec(vmName, opts, backend),
    ...(opts.template !== undefined ? { template: opts.template } : {}),
    ...(place.host !== undefined ? { host: place.host } : {}),
    ...(place.connect !== undefined ? { connect: place.connect } : {}),
  };
  return parseVmSpec(mergeCreateSpec(base, flags, opts, userData));
}

const KEPT_HELP = `
If the VM is not ready in time (--ready-timeout, default the spec's timeouts.readyMs,
120 s), it is kept as it is — a first boot may just be slow — and the error (exit 4 on a
timeout) says so: see its console with \`localvm console NAME\`, remove it with
\`localvm delete NAME\`. With --json the error carries "vm" and "details.left"
("running" or "stopped").`;

/**
 * The error of a readiness wait that failed, saying that the VM `name` is kept in state
 * `left` and how to look at it or delete it. Same code, so the exit code stays (4 on TIMEOUT).
 */
export function keptError(error: LocalVmError, name: string, left: string): LocalVmError {
  const [first = '', ...rest] = error.message.split('\n');
  const kept = left === 'running' ? `${name} is kept and still running` : `${name} is kept (${left})`;
  return new LocalVmError(error.code, [`${first}; ${kept}`, ...rest].join('\n'), {
    cause: error,
    vm: name,
    hint: `see what it is doing with \`localvm console ${name}\`; remove it with \`localvm delete ${name}\``,
    transient: error.transient,
    details: { ...error.details, left },
  });
}

/** `error` of the readiness wait, with what was left of the VM when something was. */
async function afterFailedWait(error: unknown, name: string, ctx: OperationContext): Promise<unknown> {
  if (!isLocalVmError(error)) return error;
  const info = await findVm(name, ctx).catch(() => undefined);
  return info ? keptError(error, name, info.state) : error;
}

export function registerCreate(program: Commander, cli: CliSession): void {
  program
    .command('create')
    .description('create a VM and wait until it is ready')
    .argument('[name]', 'VM name (a-z, 0-9, "-"); may come from the -f file instead')
    .option('-f, --file <spec>', 'a whole VM spec in YAML or JSON (flags given too override it)')
    .option(
      '--image <image>',
      'tiny (default), a qcow2/raw path, an https:// URL of one, or distro[:version] on OrbStack',
    )
    .option(
      '--image-checksum <algo:hex>',
      'with an image URL: verify the download against sha256:<hex> or sha512:<hex> (as published in SHA256SUMS)',
    )
    .option(
      '--image-checksum-url <url>',
      'with an image URL, instead of --image-checksum: the SHA256SUMS/SHA512SUMS URL listing it',
    )
    .option('--memory <memory>', 'memory in MiB, or 512M / 2G')
    .option('--cpus <n>', 'virtual CPUs')
    .option('--port <H:G>', 'forward host port H to guest port G: [BIND:]HOST:GUEST[/udp] (repeatable)', repeat)
    .option('--user-data <file>', 'cloud-init user-data (#cloud-config YAML, a script, or MIME multipart)')
    .option('--disk-size <size>', 'grow the root disk overlay of an image to SIZE, e.g. 20G')
    .option('--disk <name:size>', 'an extra qcow2 disk, e.g. data:10G (repeatable)', repeat)
    .option('--kernel <file>', 'boot this kernel directly (with --image: the image is the root disk)')
    .option('--initrd <file>', 'the initrd for --kernel')
    .option('--append <cmdline>', 'the kernel command line for --kernel')
    .option('--arch <arch>', "guest architecture: x86_64 (amd64) or aarch64 (arm64); default the host's")
    .option('--accel <accel>', 'auto (default), kvm, hvf or tcg')
    .option('--label <key=value>', 'a label on the VM (repeatable)', repeat)
    .option('--isolated', 'cut the guest off from every network but the host')
    .option(
      '--probe <argv>',
      'a command that must exit 0 before the VM is ready: words, or a JSON array (repeatable)',
      repeat,
    )
    .option(
      '--transport <kind>',
      'how localvm reaches the guest: auto (default: the guest agent or SSH, whichever answers), agent or ssh',
    )
    .option('--template <T>', 'restore template T instead of booting (see `localvm template`)')
    .option('--no-wait', 'return once the VM is started, without waiting for the guest agent')
    .option('--ready-timeout <duration>', "how long to wait until ready: 500ms, 30s, 2m (default the spec's, 120 s)")
    .addHelpText('after', KEPT_HELP)
    .action(async (name: string | undefined, opts: CreateOptions, cmd: Commander) => {
      const ctx = cli.contextFor(cmd);
      const g = cli.globals(cmd);
      const spec = await requestedSpec(cli, name, opts, parseBackendArg(g.backend), g);
      const readyTimeoutMs =
        opts.readyTimeout === undefined ? undefined : parseDurationArg('ready-timeout', opts.readyTimeout);
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
        const ready = await cli
          .withProgress(
            `waiting for ${spec.name} to be ready`,
            () => waitForVmReady(spec.name, readyTimeoutMs === undefined ? {} : { timeoutMs: readyTimeoutMs }, ctx),
            () => 'ready',
          )
          .catch(async (error: unknown) => {
            throw await afterFailedWait(error, spec.name, ctx);
          });
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
