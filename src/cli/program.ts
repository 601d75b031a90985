/**
 * The `localvm` command line: argument parsing (commander), one library call per command,
 * and output through the pure formatters. `runCli` returns the exit code instead of
 * exiting, so tests drive it in-process with fake backends.
 */
import { stat, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command as Commander, CommanderError } from 'commander';
import { requireCapability } from '../backend.js';
import { loadConfig, type LocalVmConfig } from '../config.js';
import { connect } from '../connector.js';
import { findTool, type OperationContext } from '../context.js';
import { runDemo } from '../demo.js';
import { LocalVmError } from '../errors.js';
import {
  backendOf,
  cleanupVms,
  createVmWithRetry,
  deleteVm,
  findVm,
  listVms,
  restartVm,
  startVm,
  stopVm,
  vmInfo,
  waitForVmReady,
  defaultContext,
} from '../operations/vm.js';
import { createExecaRunner, type CommandRunner } from '../runner.js';
import { parseVmName, parseVmSpec, type BackendName } from '../schema.js';
import { planCreate, planLifecycle, type LifecycleVerb } from './dryRun.js';
import { deleteSnapshot, listSnapshots, restoreSnapshot, snapshotVm } from '../operations/snapshot.js';
import { addDisk, listDisks, removeDisk } from '../operations/disk.js';
import { EXIT_CODES, EXIT_CODES_HELP, exitCodeFor } from './exitCodes.js';
import {
  errorToJson,
  formatCommand,
  formatDuration,
  formatError,
  formatImageTable,
  formatSnapshotTable,
  formatDiskTable,
  formatBytes,
  formatVmInfo,
  formatVmTable,
  vmToJson,
} from './format.js';
import {
  baseName,
  buildCreateSpec,
  guestExitCode,
  parseBackendArg,
  parseCpArgs,
  parseIntArg,
  parseJsonArgs,
} from './parse.js';
import { startProgress } from './progress.js';

export interface CliStream {
  write(chunk: string | Uint8Array): unknown;
  isTTY?: boolean | undefined;
}

export interface CliDeps {
  stdout: CliStream;
  stderr: CliStream;
  /** The environment the configuration is read from. */
  env: NodeJS.ProcessEnv;
  /** Overrides for the operation context (tests inject fake backends and runners). */
  context?: Partial<OperationContext> | undefined;
  /** Reads all of this process's stdin (for `exec -i` and `shell -i`). */
  stdin?: (() => Promise<Uint8Array>) | undefined;
}

interface GlobalOptions {
  backend?: string;
  json?: boolean;
  dryRun?: boolean;
  verbose?: boolean;
}

/** Runs one `localvm` invocation (`argv` without node and script) and returns its exit code. */
export async function runCli(argv: string[], deps: CliDeps): Promise<number> {
  const { stdout, stderr } = deps;
  const out = (text: string | Uint8Array) => stdout.write(text);
  const err = (text: string | Uint8Array) => stderr.write(text);
  const readInput = async (): Promise<Uint8Array> => {
    if (!deps.stdin) throw new LocalVmError('UNSUPPORTED', 'no stdin to read in this context');
    return deps.stdin();
  };
  let exitCode: number = EXIT_CODES.OK;
  // Known before commander parses, so usage errors honour --json and -v as well.
  const wantsJson = argv.includes('--json');
  let verbose = argv.includes('-v') || argv.includes('--verbose');

  let config: LocalVmConfig | undefined;
  const globals = (cmd: Commander): GlobalOptions => cmd.optsWithGlobals<GlobalOptions>();
  const contextFor = (cmd: Commander): OperationContext => {
    const g = globals(cmd);
    verbose = Boolean(g.verbose) || verbose;
    config ??= deps.context?.config ?? loadConfig(deps.env);
    if (config.verbose) verbose = true;
    const runner: CommandRunner = deps.context?.runner ?? createExecaRunner();
    return defaultContext({
      ...deps.context,
      config,
      runner,
      log: verbose ? (msg: string) => err(`debug: ${msg}\n`) : deps.context?.log,
    });
  };
  const json = (cmd: Commander) => Boolean(globals(cmd).json);
  const progress = (label: string) => startProgress(label, { write: (t) => err(t) }, Boolean(stdout.isTTY));
  const noDryRun = (cmd: Commander, what: string) => {
    if (globals(cmd).dryRun) {
      throw new LocalVmError('UNSUPPORTED', `--dry-run is not supported by ${what}`, {
        hint: 'create, start, stop, restart, delete and cleanup support --dry-run',
      });
    }
  };
  /** `--dry-run` of a lifecycle verb: the plan, with notes for steps that run no process. */
  const printPlan = async (cmd: Commander, verb: LifecycleVerb, name: string, force?: boolean) => {
    const ctx = contextFor(cmd);
    const info = verb === 'delete' ? await findVm(parseVmName(name), ctx) : await vmInfo(name, ctx);
    const steps = info
      ? await planLifecycle(verb, info, ctx.config, info.spec?.timeouts.stopMs ?? 15_000, { force })
      : [{ note: `${name} does not exist: nothing to do` }];
    for (const step of steps) {
      if ('command' in step) out(formatCommand(step.command, json(cmd)) + '\n');
      else out(json(cmd) ? JSON.stringify({ note: step.note }) + '\n' : `# ${step.note}\n`);
    }
  };
  const printVm = (cmd: Commander, info: Parameters<typeof vmToJson>[0]) =>
    out(json(cmd) ? JSON.stringify(vmToJson(info)) + '\n' : formatVmInfo(info));

  const program = new Commander('localvm')
    .description('Local virtual machines as code (QEMU and OrbStack backends).')
    .option('--backend <backend>', 'backend: qemu, orbstack or auto (default auto)')
    .option('--json', 'machine-readable output (errors as {"error": {...}} on stderr)')
    .option('--dry-run', 'print the commands that would run and run nothing')
    .option('-v, --verbose', 'debug logs on stderr, stack traces on errors')
    .addHelpText('after', `\n${EXIT_CODES_HELP}`)
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => out(s),
      writeErr: (s) => err(s),
      // Usage errors come out like every other error: code, message, hint.
      outputError: () => {},
    });

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
    .option('--no-wait', 'return once the VM is started, without waiting for the guest agent')
    .action(
      async (
        name: string,
        opts: { image?: string; memory?: string; cpus?: string; port?: string[]; wait: boolean },
        cmd: Commander,
      ) => {
        const ctx = contextFor(cmd);
        const backendArg = parseBackendArg(globals(cmd).backend);
        const spec = parseVmSpec(buildCreateSpec(name, opts, backendArg));
        if (globals(cmd).dryRun) {
          const backend = concreteBackend(spec.backend, ctx.config);
          for (const c of await planCreate(spec, backend, ctx.config)) out(formatCommand(c, json(cmd)) + '\n');
          return;
        }
        const creating = progress(`creating ${spec.name}`);
        let result;
        try {
          result = await createVmWithRetry(
            spec,
            { onRetry: (e, n) => err(`attempt ${n} failed (${e.message}), retrying\n`) },
            ctx,
          );
          creating.done(
            result.adopted ? 'adopted an existing VM with the same spec' : `started (pid ${result.info.pid ?? '?'})`,
          );
        } catch (error) {
          creating.fail(errorCode(error));
          throw error;
        }
        let readyMs: number | null = null;
        let info = result.info;
        if (opts.wait) {
          const waiting = progress(`waiting for ${spec.name} to be ready`);
          try {
            const ready = await waitForVmReady(spec.name, {}, ctx);
            waiting.done('ready');
            readyMs = Math.round(ready.durationMs);
            info = ready.info;
          } catch (error) {
            waiting.fail(errorCode(error));
            throw error;
          }
        }
        if (json(cmd)) {
          out(
            JSON.stringify({ vm: vmToJson(info), adopted: result.adopted, attempts: result.attempts, readyMs }) + '\n',
          );
        } else {
          out(
            `${result.adopted ? 'adopted' : 'created'} ${info.name} (${info.backend}${info.accel ? `, ${info.accel}` : ''}, ${info.state})${readyMs !== null ? `, ready in ${formatDuration(readyMs)}` : ''}\n`,
          );
        }
      },
    );

  const lifecycle = (verb: 'start' | 'stop' | 'restart', describe: string) => {
    const c = program.command(verb).description(describe).argument('<name>', 'VM name');
    if (verb === 'stop') c.option('--force', 'power off without a graceful shutdown');
    c.action(async (name: string, opts: { force?: boolean }, cmd: Commander) => {
      if (globals(cmd).dryRun) return printPlan(cmd, verb, name, opts.force);
      const ctx = contextFor(cmd);
      const info =
        verb === 'start'
          ? await startVm(name, ctx)
          : verb === 'stop'
            ? await stopVm(name, { force: opts.force }, ctx)
            : await restartVm(name, ctx);
      if (json(cmd)) out(JSON.stringify(vmToJson(info)) + '\n');
      else out(`${info.name}: ${info.state}\n`);
    });
  };
  lifecycle('start', 'start a stopped VM (a running VM is left alone)');
  lifecycle('stop', 'stop a VM (graceful, forced after a timeout)');
  lifecycle('restart', 'restart a VM');

  program
    .command('delete')
    .description('delete a VM and everything it owns (succeeds when it does not exist)')
    .argument('<name>', 'VM name')
    .action(async (name: string, _opts: unknown, cmd: Commander) => {
      if (globals(cmd).dryRun) return printPlan(cmd, 'delete', name);
      const { deleted } = await deleteVm(name, contextFor(cmd));
      out(
        json(cmd)
          ? JSON.stringify({ name, deleted }) + '\n'
          : deleted
            ? `deleted ${name}\n`
            : `${name} did not exist\n`,
      );
    });

  program
    .command('list')
    .description('list VMs (of every available backend, or of --backend)')
    .action(async (_opts: unknown, cmd: Commander) => {
      const ctx = contextFor(cmd);
      const backend = parseBackendArg(globals(cmd).backend);
      const vms = (await listVms(ctx)).filter((vm) => !backend || backend === 'auto' || vm.backend === backend);
      out(json(cmd) ? JSON.stringify(vms.map(vmToJson)) + '\n' : formatVmTable(vms));
    });

  program
    .command('info')
    .description("a VM's state and configuration")
    .argument('<name>', 'VM name')
    .action(async (name: string, _opts: unknown, cmd: Commander) => {
      printVm(cmd, await vmInfo(name, contextFor(cmd)));
    });

  program
    .command('console')
    .description('the last lines the guest printed on its serial console (boot problems show here)')
    .argument('<name>', 'VM name')
    .option('-n, --lines <n>', 'how many lines', '40')
    .action(async (name: string, opts: { lines: string }, cmd: Commander) => {
      const ctx = contextFor(cmd);
      const backend = await backendOf(parseVmName(name), ctx);
      if (!backend.consoleTail) {
        throw new LocalVmError('UNSUPPORTED', `the ${backend.name} backend has no serial console`, { vm: name });
      }
      const text = await backend.consoleTail(name, parseIntArg('lines', opts.lines));
      out(
        json(cmd) ? JSON.stringify({ name, console: text }) + '\n' : text.endsWith('\n') || !text ? text : `${text}\n`,
      );
    });

  program
    .command('exec')
    .description('run a command in the VM (no shell): localvm exec NAME -- ls -l /')
    .argument('<name>', 'VM name')
    .argument('<argv...>', 'the command and its arguments')
    .option('--timeout <ms>', 'kill the command after this many milliseconds')
    .option('-i, --stdin', "pass this command's stdin to the guest command")
    .action(async (name: string, command: string[], opts: { timeout?: string; stdin?: boolean }, cmd: Commander) => {
      noDryRun(cmd, 'exec');
      const vm = await connect(name, contextFor(cmd));
      const r = await vm.exec(command, {
        ...(opts.timeout ? { timeoutMs: parseIntArg('timeout', opts.timeout) } : {}),
        ...(opts.stdin ? { stdin: await readInput() } : {}),
      });
      out(r.stdoutBytes);
      err(r.stderrBytes);
      exitCode = guestExitCode(r);
    });

  program
    .command('shell')
    .description("run a shell script in the VM as /bin/sh -c SCRIPT: localvm shell NAME 'echo $HOSTNAME'")
    .argument('<name>', 'VM name')
    .argument('<script>', 'the script')
    .option('-i, --stdin', "pass this command's stdin to the script")
    .action(async (name: string, script: string, opts: { stdin?: boolean }, cmd: Commander) => {
      noDryRun(cmd, 'shell');
      const vm = await connect(name, contextFor(cmd));
      const r = await vm.shell(script, opts.stdin ? { stdin: await readInput() } : {});
      out(r.stdoutBytes);
      err(r.stderrBytes);
      exitCode = guestExitCode(r);
    });

  program
    .command('cp')
    .description('copy a file into or out of a VM: localvm cp ./f NAME:/tmp/f, localvm cp NAME:/etc/hostname .')
    .argument('<src>', 'host path or NAME:/path')
    .argument('<dst>', 'host path or NAME:/path')
    .action(async (src: string, dst: string, _opts: unknown, cmd: Commander) => {
      noDryRun(cmd, 'cp');
      const plan = parseCpArgs(src, dst);
      const vm = await connect(plan.vm, contextFor(cmd));
      let bytes: number;
      if (plan.direction === 'in') {
        const content = await readHostFile(plan.hostPath);
        const mode = (await stat(plan.hostPath)).mode & 0o777;
        await vm.putFile(plan.guestPath, content, { mode });
        bytes = content.length;
      } else {
        const content = await vm.getFile(plan.guestPath);
        const target = (await isDirectory(plan.hostPath))
          ? join(plan.hostPath, baseName(plan.guestPath))
          : plan.hostPath;
        await writeFile(target, content);
        bytes = content.length;
      }
      if (json(cmd)) out(JSON.stringify({ ...plan, bytes }) + '\n');
      else if (verbose) err(`copied ${bytes} bytes\n`);
    });

  program
    .command('qmp')
    .description('send a raw QMP command to a QEMU VM: localvm qmp NAME query-status')
    .argument('<name>', 'VM name')
    .argument('<command>', 'QMP command, e.g. query-status')
    .argument('[json-args]', 'arguments as a JSON object')
    .action(async (name: string, command: string, rawArgs: string | undefined, _opts: unknown, cmd: Commander) => {
      noDryRun(cmd, 'qmp');
      const args = parseJsonArgs(rawArgs);
      if (!/^[a-z][a-z0-9_-]*$/i.test(command)) {
        throw new LocalVmError('VALIDATION', `invalid QMP command name ${JSON.stringify(command)}`, {
          issues: [{ property: 'command', reason: 'must be a QMP command name such as query-status' }],
        });
      }
      const ctx = contextFor(cmd);
      const backend = requireCapability(await backendOf(parseVmName(name), ctx), 'qmp');
      const result = await backend.qmp(name, command, args);
      out(JSON.stringify(result ?? null, null, json(cmd) ? undefined : 2) + '\n');
    });

  program
    .command('cleanup')
    .description('delete every VM whose name starts with --prefix, and only those')
    .requiredOption('--prefix <prefix>', 'VM name prefix, e.g. pytest-test-')
    .action(async (opts: { prefix: string }, cmd: Commander) => {
      const dryRun = Boolean(globals(cmd).dryRun);
      const r = await cleanupVms({ prefix: opts.prefix, dryRun }, contextFor(cmd));
      if (json(cmd))
        out(JSON.stringify({ prefix: opts.prefix, dryRun, matched: r.matched, deleted: r.deleted }) + '\n');
      else if (r.matched.length === 0) out(`no VMs start with ${opts.prefix}\n`);
      else for (const name of r.matched) out(`${dryRun ? 'would delete' : 'deleted'} ${name}\n`);
    });

  const snapshot = program
    .command('snapshot')
    .description('snapshots of a running QEMU VM: RAM, devices and disks, restored in well under a second');
  snapshot
    .command('create')
    .description('save the running VM under a snapshot name')
    .argument('<name>', 'VM name')
    .argument('<snapshot>', 'snapshot name')
    .action(async (name: string, snap: string, _opts: unknown, cmd: Commander) => {
      noDryRun(cmd, 'snapshot create');
      const s = await snapshotVm(name, snap, contextFor(cmd));
      out(json(cmd) ? JSON.stringify(s) + '\n' : `saved ${name}@${s.name}\n`);
    });
  snapshot
    .command('list')
    .description("list a VM's snapshots, oldest first")
    .argument('<name>', 'VM name')
    .action(async (name: string, _opts: unknown, cmd: Commander) => {
      const list = await listSnapshots(name, contextFor(cmd));
      out(json(cmd) ? JSON.stringify(list) + '\n' : formatSnapshotTable(list));
    });
  snapshot
    .command('restore')
    .description('bring the running VM back to a snapshot')
    .argument('<name>', 'VM name')
    .argument('<snapshot>', 'snapshot name')
    .action(async (name: string, snap: string, _opts: unknown, cmd: Commander) => {
      noDryRun(cmd, 'snapshot restore');
      await restoreSnapshot(name, snap, contextFor(cmd));
      out(json(cmd) ? JSON.stringify({ name, snapshot: snap, restored: true }) + '\n' : `restored ${name}@${snap}\n`);
    });
  snapshot
    .command('delete')
    .description('delete a snapshot (succeeds when it does not exist)')
    .argument('<name>', 'VM name')
    .argument('<snapshot>', 'snapshot name')
    .action(async (name: string, snap: string, _opts: unknown, cmd: Commander) => {
      noDryRun(cmd, 'snapshot delete');
      const { deleted } = await deleteSnapshot(name, snap, contextFor(cmd));
      out(
        json(cmd)
          ? JSON.stringify({ name, snapshot: snap, deleted }) + '\n'
          : deleted
            ? `deleted ${name}@${snap}\n`
            : `${name}@${snap} did not exist\n`,
      );
    });

  const disk = program.command('disk').description('extra disks of a QEMU VM, hot-plugged while it runs');
  disk
    .command('add')
    .description('create a qcow2 disk and attach it (the guest sees a new /dev/vdX)')
    .argument('<name>', 'VM name')
    .argument('<disk>', 'disk name')
    .argument('<size>', 'size, e.g. 512M or 10G')
    .action(async (name: string, diskName: string, size: string, _opts: unknown, cmd: Commander) => {
      noDryRun(cmd, 'disk add');
      const d = await addDisk(name, { name: diskName, size }, contextFor(cmd));
      out(json(cmd) ? JSON.stringify(d) + '\n' : `added ${name}:${d.name} (${formatBytes(d.sizeBytes)})\n`);
    });
  disk
    .command('list')
    .description("list a VM's extra disks")
    .argument('<name>', 'VM name')
    .action(async (name: string, _opts: unknown, cmd: Commander) => {
      const list = await listDisks(name, contextFor(cmd));
      out(json(cmd) ? JSON.stringify(list) + '\n' : formatDiskTable(list));
    });
  disk
    .command('remove')
    .description('detach a disk and delete its file (succeeds when it does not exist)')
    .argument('<name>', 'VM name')
    .argument('<disk>', 'disk name')
    .action(async (name: string, diskName: string, _opts: unknown, cmd: Commander) => {
      noDryRun(cmd, 'disk remove');
      const { removed } = await removeDisk(name, diskName, contextFor(cmd));
      out(
        json(cmd)
          ? JSON.stringify({ name, disk: diskName, removed }) + '\n'
          : removed
            ? `removed ${name}:${diskName}\n`
            : `${name}:${diskName} did not exist\n`,
      );
    });

  const image = program.command('image').description('guest images');
  image
    .command('build')
    .description('build the embedded tiny image into the cache (a no-op when it is current)')
    .option('--force', 'rebuild even when the cached image is current')
    .action(async (opts: { force?: boolean }, cmd: Commander) => {
      noDryRun(cmd, 'image build');
      const ctx = contextFor(cmd);
      const { buildTinyImage } = await import('../backends/qemu/image/index.js');
      const building = progress('tiny image (built once, then cached by content hash)');
      try {
        const tiny = await buildTinyImage({ config: ctx.config, runner: ctx.runner, force: opts.force, log: ctx.log });
        building.done(`tiny-${tiny.hash.slice(0, 12)}`);
        out(
          json(cmd)
            ? JSON.stringify(tiny) + '\n'
            : `tiny ${tiny.hash.slice(0, 12)} (kernel ${tiny.kernelVersion}) in ${tiny.dir}\n`,
        );
      } catch (error) {
        building.fail(errorCode(error));
        throw error;
      }
    });
  image
    .command('list')
    .description('images in the cache')
    .action(async (_opts: unknown, cmd: Commander) => {
      const ctx = contextFor(cmd);
      const { listImages } = await import('../backends/qemu/image/index.js');
      const images = await listImages(ctx.config);
      out(json(cmd) ? JSON.stringify(images) + '\n' : formatImageTable(images));
    });

  program
    .command('demo')
    .description('the main job end to end on a tiny VM: create, wait, exec, copy in and out, delete')
    .option('--keep', 'keep the VM at the end')
    .action(async (opts: { keep?: boolean }, cmd: Commander) => {
      noDryRun(cmd, 'demo');
      const steps = await runDemo(
        {
          keep: opts.keep,
          onStep: (s) => {
            if (!json(cmd)) out(`${s.step.padEnd(10)} ${formatDuration(s.ms).padStart(8)}  ${s.detail}\n`);
          },
        },
        contextFor(cmd),
      );
      if (json(cmd)) out(JSON.stringify(steps) + '\n');
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
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
      err(wantsJson ? errorToJson(usage) : formatError(usage, false));
      return EXIT_CODES.VALIDATION;
    }
    err(wantsJson ? errorToJson(error) : formatError(error, verbose));
    return exitCodeFor(error);
  }
}

function errorCode(error: unknown): string {
  return (error as { code?: string }).code ?? 'error';
}

/** The concrete backend a create would use, decided without constructing backends. */
function concreteBackend(requested: BackendName, config: LocalVmConfig): 'qemu' | 'orbstack' {
  if (requested !== 'auto') return requested;
  return config.platform === 'darwin' && findTool(config, 'orbctl') ? 'orbstack' : 'qemu';
}

async function readHostFile(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new LocalVmError(
      code === 'ENOENT' ? 'NOT_FOUND' : 'VALIDATION',
      `cannot read ${path}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
}

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isDirectory(),
    () => false,
  );
}
