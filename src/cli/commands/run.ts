/**
 * `localvm run [--template T | --image I] [--file LOCAL:GUEST]... [--collect GUEST[:LOCAL]]...
 * [--timeout 10s] -- ARGV...`: a one-shot sandbox. A fresh VM (a template clone, or a boot
 * of the image) runs the command, its output is printed and the collected files written,
 * and the VM is deleted: nothing is left behind. The exit code is the command's; a command
 * that ran past --timeout exits 4 (TIMEOUT) and its VM is destroyed at once.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import type { Command as Commander } from 'commander';
import { LocalVmError } from '../../errors.js';
import { createPool } from '../../pool/pool.js';
import { EXIT_CODES } from '../exitCodes.js';
import { parseDurationArg, parseIntArg, parseMemoryArg } from '../parse.js';
import type { CliSession } from '../shared.js';

const collectArg = (v: string, all: string[] = []) => [...all, v];

function bad(property: string, reason: string): LocalVmError {
  return new LocalVmError('VALIDATION', `invalid ${property}: ${reason}`, { issues: [{ property, reason }] });
}

/** `--file LOCAL:GUEST`: the guest path is after the last ":" that starts an absolute path. Pure. */
export function parseFileArg(value: string): { local: string; guest: string } {
  const at = value.lastIndexOf(':/');
  if (at <= 0) throw bad('--file', `must be LOCAL:GUEST with an absolute guest path, got ${JSON.stringify(value)}`);
  return { local: value.slice(0, at), guest: value.slice(at + 1) };
}

/** `--collect GUEST[:LOCAL]`: LOCAL defaults to the guest path's last part, in the current directory. Pure. */
export function parseCollectArg(value: string): { guest: string; local: string } {
  if (!value.startsWith('/'))
    throw bad('--collect', `must start with an absolute guest path, got ${JSON.stringify(value)}`);
  const at = value.indexOf(':');
  const guest = at === -1 ? value : value.slice(0, at);
  const local = at === -1 ? basename(guest) : value.slice(at + 1);
  if (!local) throw bad('--collect', `names no local path: ${JSON.stringify(value)}`);
  return { guest, local };
}

/**
 * Where collected guest file `path` goes on the host: `local` itself for a collected file,
 * `local/<path below the directory>` for a file of a collected directory. Pure.
 */
export function localTarget(c: { guest: string; local: string }, path: string): string | undefined {
  if (path === c.guest) return c.local;
  const dir = c.guest.endsWith('/') ? c.guest : `${c.guest}/`;
  if (!path.startsWith(dir)) return undefined;
  const target = join(c.local, path.slice(dir.length));
  // executor.requested already refused `..`; this keeps the host side honest on its own.
  return relative(c.local, target).startsWith('..') ? undefined : target;
}

interface RunOpts {
  template?: string;
  image?: string;
  memory?: string;
  file?: string[];
  collect?: string[];
  timeout?: string;
  maxOutput?: string;
  stdin?: boolean;
}

export function registerRun(program: Commander, cli: CliSession): void {
  program
    .command('run')
    .description('run a command in a throwaway VM and delete it: localvm run --template T -- python3 /job/main.py')
    .argument('<argv...>', 'the command and its arguments (no shell)')
    .option('--template <T>', 'clone template T (fast: see `localvm template`)')
    .option('--image <I>', 'boot image I instead (default tiny when no template is given)')
    .option('--memory <memory>', 'memory of a booted VM, in MiB or 512M / 2G')
    .option('--file <LOCAL:GUEST>', 'copy a host file into the guest first (repeatable)', collectArg)
    .option(
      '--collect <GUEST[:LOCAL]>',
      'copy a guest file, or a directory ending in "/", back (repeatable)',
      collectArg,
    )
    .option('--timeout <duration>', 'destroy the VM when the command runs longer (default 60s)')
    .option('--max-output <bytes>', 'cut stdout, stderr and collected files at this many bytes (default 1 MiB)')
    .option('-i, --stdin', "pass this command's stdin to the guest command")
    .action(async (argv: string[], opts: RunOpts, cmd: Commander) => {
      cli.noDryRun(cmd, 'run');
      if (opts.template && (opts.image || opts.memory)) {
        throw bad('--template', 'a clone runs its template’s image and memory: give --template or --image/--memory');
      }
      const files: Record<string, Uint8Array> = {};
      for (const f of (opts.file ?? []).map(parseFileArg)) files[f.guest] = await readFile(f.local);
      const collect = (opts.collect ?? []).map(parseCollectArg);
      const ctx = cli.contextFor(cmd);
      const pool = await createPool({
        ...(opts.template
          ? { template: opts.template }
          : {
              spec: {
                image: opts.image ?? 'tiny',
                ...(opts.memory ? { memory: parseMemoryArg(opts.memory) } : {}),
              },
            }),
        min: 0,
        max: 1,
        prefix: 'run-',
        context: ctx,
      });
      try {
        const r = await pool.run({
          argv,
          files,
          collect: collect.map((c) => c.guest),
          timeoutMs: opts.timeout ? parseDurationArg('--timeout', opts.timeout, 86_400_000) : 60_000,
          ...(opts.maxOutput ? { maxOutputBytes: parseIntArg('--max-output', opts.maxOutput) } : {}),
          ...(opts.stdin ? { stdin: await cli.readInput() } : {}),
          acquireTimeoutMs: 300_000,
        });
        const written: string[] = [];
        for (const [path, bytes] of Object.entries(r.files)) {
          for (const c of collect) {
            const target = localTarget(c, path);
            if (!target) continue;
            await mkdir(dirname(resolve(target)), { recursive: true });
            await writeFile(target, bytes);
            written.push(target);
            break;
          }
        }
        if (cli.json(cmd)) {
          cli.out(
            JSON.stringify({
              exitCode: r.exitCode,
              timedOut: r.timedOut,
              stdout: r.stdout,
              stderr: r.stderr,
              written,
              missing: r.missing,
              truncatedOutputs: r.truncatedOutputs,
              durationMs: Math.round(r.durationMs),
            }) + '\n',
          );
        } else {
          cli.out(r.stdoutBytes);
          cli.err(r.stderrBytes);
          for (const m of r.missing) cli.err(`localvm run: ${m} was not there to collect\n`);
          for (const t of r.truncatedOutputs) cli.err(`localvm run: ${t} was cut at the output limit\n`);
        }
        if (r.timedOut) {
          cli.err(`localvm run: the command ran longer than its timeout: its VM was destroyed\n`);
          cli.exitCode = EXIT_CODES.TIMEOUT;
        } else {
          cli.exitCode = r.exitCode ?? EXIT_CODES.FAILURE;
        }
      } finally {
        await pool.close();
      }
    });
}
