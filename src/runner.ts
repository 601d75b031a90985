/**
 * The one place that launches processes. Everything that runs a tool receives a
 * CommandRunner, so unit tests pass a fake and `--dry-run` passes a recorder.
 */
import { LocalVmError, tail } from './errors.js';

/** A command as built by the pure builders: an executable and an argv array, never a shell string. */
export interface Command {
  file: string;
  args: string[];
}

export interface RunOptions {
  /** Bytes or text written to stdin, then stdin is closed. */
  input?: string | Uint8Array | undefined;
  /** Kills the process after this long; the result then says `timedOut` (it does not reject). */
  timeoutMs?: number | undefined;
  /** Added to the inherited environment. */
  env?: Record<string, string | undefined> | undefined;
  cwd?: string | undefined;
  /**
   * Cancels the run: the process is killed (SIGTERM, then SIGKILL) and `run` rejects with
   * the signal's reason, e.g. the TIMEOUT of a deadline (see src/time/deadline.ts).
   */
  signal?: AbortSignal | undefined;
  /** Keep stdout and stderr as bytes too (`stdoutBytes`/`stderrBytes`), for byte-exact transfers. */
  binary?: boolean | undefined;
}

export interface RunResult {
  file: string;
  args: string[];
  /** -1 when the process was killed by a signal or timed out. */
  exitCode: number;
  signal?: string | undefined;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  durationMs: number;
  /** With `binary`: the output exactly as the process wrote it. */
  stdoutBytes?: Uint8Array | undefined;
  stderrBytes?: Uint8Array | undefined;
}

export interface CommandRunner {
  /**
   * Runs `cmd` to completion. Resolves with the result whatever the exit code; rejects
   * only when the process could not be started (TOOL_NOT_FOUND) or the run was aborted.
   */
  run(cmd: Command, options?: RunOptions): Promise<RunResult>;
  /**
   * Starts `cmd` detached in its own session with stdio ignored, and returns its pid
   * without waiting (for the fixture reaper).
   */
  spawnDetached?(cmd: Command, options?: Pick<RunOptions, 'env' | 'cwd'>): Promise<number>;
  /**
   * Runs `cmd` on this process's own terminal (stdin, stdout and stderr inherited: `localvm
   * ssh`) and resolves with its exit code (128 + n when a signal ended it).
   */
  runInteractive?(cmd: Command): Promise<number>;
}

/** Runs `cmd` and throws COMMAND_FAILED (or TIMEOUT) unless it exits 0. */
export async function runChecked(runner: CommandRunner, cmd: Command, options?: RunOptions): Promise<RunResult> {
  const result = await runner.run(cmd, options);
  if (result.exitCode === 0 && !result.timedOut) return result;
  throw commandError(result);
}

/** The error for a finished command that failed; carries argv, exit code and stderr tail. */
export function commandError(result: RunResult, message?: string): LocalVmError {
  const code = result.timedOut ? 'TIMEOUT' : 'COMMAND_FAILED';
  const why = result.timedOut
    ? 'timed out'
    : result.signal
      ? `was killed by ${result.signal}`
      : `exited with code ${result.exitCode}`;
  const stderrTail = tail(result.stderr, 10, 2000);
  return new LocalVmError(
    code,
    message ?? `${[result.file, ...result.args].join(' ')} ${why}${stderrTail ? `: ${stderrTail}` : ''}`,
    {
      command: {
        file: result.file,
        args: result.args,
        exitCode: result.exitCode,
        signal: result.signal,
        stderrTail,
        stdoutTail: tail(result.stdout, 5, 1000),
        timedOut: result.timedOut,
      },
    },
  );
}

/** The default runner, backed by execa. Loaded lazily so pure modules stay light. */
export function createExecaRunner(): CommandRunner {
  return {
    async run(cmd, options = {}) {
      // An aborted operation starts nothing new.
      options.signal?.throwIfAborted();
      const { execa } = await import('execa');
      const started = performance.now();
      try {
        const r = await execa(cmd.file, cmd.args, {
          reject: false,
          stripFinalNewline: false,
          encoding: options.binary ? ('buffer' as const) : ('utf8' as const),
          input: options.input,
          ...(options.input === undefined ? { stdin: 'ignore' as const } : {}),
          timeout: options.timeoutMs,
          env: options.env,
          cwd: options.cwd,
          cancelSignal: options.signal,
          // QEMU daemonizes: its grandchild keeps no handle on our pipes, so waiting is safe.
          windowsHide: true,
        });
        // execa killed it for the signal: the caller's reason is the answer, not an exit code.
        if (r.isCanceled && options.signal?.aborted) throw options.signal.reason;
        const errno = (r as { code?: string }).code;
        if (errno === 'ENOENT' && r.exitCode === undefined) {
          throw new LocalVmError('TOOL_NOT_FOUND', `${cmd.file} was not found on PATH`, {
            hint: `install ${cmd.file}, or put it on PATH`,
            command: { file: cmd.file, args: cmd.args },
          });
        }
        const bytes = (v: unknown) => (v instanceof Uint8Array ? v : new Uint8Array());
        const text = (v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : String(v ?? ''));
        return {
          file: cmd.file,
          args: cmd.args,
          exitCode: r.timedOut || r.exitCode === undefined ? -1 : r.exitCode,
          signal: r.signal,
          stdout: text(r.stdout),
          stderr: text(r.stderr),
          timedOut: Boolean(r.timedOut),
          durationMs: performance.now() - started,
          ...(options.binary ? { stdoutBytes: bytes(r.stdout), stderrBytes: bytes(r.stderr) } : {}),
        };
      } catch (error) {
        if (error instanceof LocalVmError) throw error;
        if (options.signal?.aborted && error === options.signal.reason) throw error;
        throw new LocalVmError('COMMAND_FAILED', `could not run ${cmd.file}: ${(error as Error).message}`, {
          cause: error,
          command: { file: cmd.file, args: cmd.args },
        });
      }
    },
    async spawnDetached(cmd, options = {}) {
      const { spawn } = await import('node:child_process');
      const child = spawn(cmd.file, cmd.args, {
        detached: true,
        stdio: 'ignore',
        env: { ...process.env, ...options.env },
        cwd: options.cwd,
      });
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', () => resolve());
        child.once('error', reject);
      });
      child.unref();
      if (child.pid === undefined) throw new LocalVmError('COMMAND_FAILED', `could not start ${cmd.file}`);
      return child.pid;
    },
    async runInteractive(cmd) {
      const { spawn } = await import('node:child_process');
      const { constants } = await import('node:os');
      const child = spawn(cmd.file, cmd.args, { stdio: 'inherit' });
      return new Promise<number>((resolve, reject) => {
        child.once('error', (error: NodeJS.ErrnoException) =>
          reject(
            error.code === 'ENOENT'
              ? new LocalVmError('TOOL_NOT_FOUND', `${cmd.file} was not found on PATH`, {
                  hint: `install ${cmd.file}, or put it on PATH`,
                  command: { file: cmd.file, args: cmd.args },
                })
              : error,
          ),
        );
        child.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0)));
      });
    },
  };
}

/**
 * A runner that records what would run and runs nothing (`--dry-run`). Every command
 * "succeeds" with empty output, so callers that parse output must not use it for reads.
 */
export function createRecordingRunner(): CommandRunner & { commands: Command[] } {
  const commands: Command[] = [];
  return {
    commands,
    async run(cmd) {
      commands.push({ file: cmd.file, args: [...cmd.args] });
      return { file: cmd.file, args: cmd.args, exitCode: 0, stdout: '', stderr: '', timedOut: false, durationMs: 0 };
    },
  };
}
