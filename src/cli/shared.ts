/**
 * What every command file shares: the streams and dependencies `runCli` is given, and one
 * session per invocation that turns a parsed command into an operation context and writes
 * its output. Commands receive the session; none of them reads the environment itself.
 */
import type { Command as Commander } from 'commander';
import type { ExecResult } from '../backend.js';
import { loadConfig, type LocalVmConfig } from '../config.js';
import type { OperationContext } from '../context.js';
import { LocalVmError } from '../errors.js';
import { defaultContext } from '../operations/vm.js';
import { createExecaRunner, type CommandRunner } from '../runner.js';
import { EXIT_CODES } from './exitCodes.js';
import { guestExitCode } from './parse.js';
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

/** The options `localvm` takes before (or after) any command. */
export interface GlobalOptions {
  backend?: string;
  json?: boolean;
  dryRun?: boolean;
  verbose?: boolean;
  /** libvirt: a host of the hosts list, or `auto` (create only). */
  host?: string;
  /** libvirt: a connection URI. */
  connect?: string;
}

/**
 * `--host NAME` and `--connect URI` narrow every libvirt operation to that host (`--host auto`
 * is create's placement and narrows nothing).
 */
function withHostOptions(config: LocalVmConfig, g: GlobalOptions): LocalVmConfig {
  if ((g.host === undefined || g.host === 'auto') && g.connect === undefined) return config;
  return {
    ...config,
    ...(g.host !== undefined && g.host !== 'auto' ? { libvirtHost: g.host } : {}),
    ...(g.connect !== undefined ? { libvirtConnect: g.connect } : {}),
  };
}

/** A command's registration: adds it (and its subcommands) to the program. */
export type RegisterCommand = (program: Commander, cli: CliSession) => void;

/**
 * One `localvm` invocation's state: the configuration (loaded once, on first use), whether
 * it is verbose, and the exit code a guest command asked for.
 */
export class CliSession {
  exitCode: number = EXIT_CODES.OK;
  /** Known before commander parses, so usage errors honour --json and -v as well. */
  readonly wantsJson: boolean;
  verbose: boolean;
  private config: LocalVmConfig | undefined;

  constructor(
    argv: readonly string[],
    private readonly deps: CliDeps,
  ) {
    this.wantsJson = argv.includes('--json');
    this.verbose = argv.includes('-v') || argv.includes('--verbose');
  }

  out(text: string | Uint8Array): void {
    this.deps.stdout.write(text);
  }

  err(text: string | Uint8Array): void {
    this.deps.stderr.write(text);
  }

  /** True when output goes to a terminal (progress lines redraw in place). */
  isTty(): boolean {
    return Boolean(this.deps.stdout.isTTY);
  }

  globals(cmd: Commander): GlobalOptions {
    return cmd.optsWithGlobals<GlobalOptions>();
  }

  json(cmd: Commander): boolean {
    return Boolean(this.globals(cmd).json);
  }

  /** `value` as one JSON line under `--json`, else `text` as it is. */
  print(cmd: Commander, value: unknown, text: string): void {
    this.out(this.json(cmd) ? JSON.stringify(value) + '\n' : text);
  }

  /** The operation context for `cmd`, with debug logs on stderr when verbose. */
  contextFor(cmd: Commander): OperationContext {
    const g = this.globals(cmd);
    this.verbose = Boolean(g.verbose) || this.verbose;
    this.config ??= withHostOptions(this.deps.context?.config ?? loadConfig(this.deps.env), g);
    if (this.config.verbose) this.verbose = true;
    const runner: CommandRunner = this.deps.context?.runner ?? createExecaRunner();
    return defaultContext({
      ...this.deps.context,
      config: this.config,
      runner,
      log: this.verbose ? (msg: string) => this.err(`debug: ${msg}\n`) : this.deps.context?.log,
    });
  }

  /** Refuses `--dry-run` for a command that cannot honour it. */
  noDryRun(cmd: Commander, what: string): void {
    if (this.globals(cmd).dryRun) {
      throw new LocalVmError('UNSUPPORTED', `--dry-run is not supported by ${what}`, {
        hint: 'create, start, stop, restart, delete and cleanup support --dry-run',
      });
    }
  }

  /** Runs `work` under a progress line on stderr that ends with `done(result)` or the error's code. */
  async withProgress<T>(label: string, work: () => Promise<T>, done: (result: T) => string): Promise<T> {
    const progress = startProgress(label, { write: (t) => this.err(t) }, Boolean(this.deps.stdout.isTTY));
    let result: T;
    try {
      result = await work();
    } catch (error) {
      progress.fail((error as { code?: string }).code ?? 'error');
      throw error;
    }
    progress.done(done(result));
    return result;
  }

  /** A guest command's output passed through as bytes; its exit code becomes ours. */
  guestResult(r: ExecResult): void {
    this.out(r.stdoutBytes);
    this.err(r.stderrBytes);
    this.exitCode = guestExitCode(r);
  }

  /** All of stdin, for `-i`. */
  async readInput(): Promise<Uint8Array> {
    if (!this.deps.stdin) throw new LocalVmError('UNSUPPORTED', 'no stdin to read in this context');
    return this.deps.stdin();
  }
}
