/**
 * The sandbox executor: one job in one fresh pool VM, then the VM is destroyed. Files go
 * in, the command runs (argv, or a script as `/bin/sh -c`), the collect paths come back.
 * On timeout the whole VM is destroyed at once, so nothing the job started outlives it.
 *
 * Collect paths that do not exist are not an error: they are missing from `files` and
 * listed in `missing` (a job that failed early still returns its exit code and output).
 * Each output (stdout, stderr, every collected file) is cut at `maxOutputBytes`, and
 * collected files share one budget of `maxOutputBytes` in all; what was cut is named in
 * `truncatedOutputs`.
 */
import { posix } from 'node:path';
import { isLocalVmError, LocalVmError } from '../errors.js';
import type { Lease } from './lease.js';
import { parseJob, type Job, type JobInput } from './options.js';

export interface JobResult {
  /** The VM the job ran in (deleted by the time the result is returned). */
  vm: string;
  /** The command's exit code; null when it timed out (the VM was destroyed). */
  exitCode: number | null;
  stdout: string;
  stderr: string;
  stdoutBytes: Uint8Array;
  stderrBytes: Uint8Array;
  /** Collected guest files by path (a collected directory's files under their full paths). */
  files: Record<string, Uint8Array>;
  /** Collect paths that did not exist. */
  missing: string[];
  timedOut: boolean;
  /** True when some output was cut at maxOutputBytes; `truncatedOutputs` says which. */
  truncated: boolean;
  truncatedOutputs: string[];
  /** From acquire to the result (the VM's deletion goes on after). */
  durationMs: number;
  /** Of that, waiting for the VM. */
  acquireMs: number;
}

interface Acquirer {
  acquire(options: { timeoutMs?: number; signal?: AbortSignal }): Promise<Lease>;
}

/** The first `max` bytes of `b`, and whether that cut anything. Pure. */
export function cut(b: Uint8Array, max: number): { bytes: Uint8Array; cut: boolean } {
  return b.length <= max ? { bytes: b, cut: false } : { bytes: b.subarray(0, max), cut: true };
}

/** The directories to create before the job's files are written (parents only, each once). Pure. */
export function parentDirs(paths: string[], cwd?: string): string[] {
  const dirs = new Set(paths.map((p) => posix.dirname(p)).filter((d) => d !== '/'));
  if (cwd !== undefined && cwd !== '/') dirs.add(cwd);
  return [...dirs].sort();
}

// Lists what the collect paths hold, one line each: "f <size> <path>" for a file (a
// directory's files, found recursively) and "m <path>" for a path that is not there. The
// paths are arguments, never script text. A path with a newline in its name is not supported.
const LIST =
  'for p do if [ -d "$p" ]; then find "$p" -type f -exec stat -c "f %s %n" {} \\; ; ' +
  'elif [ -e "$p" ]; then stat -c "f %s %n" "$p"; else printf "m %s\\n" "$p"; fi; done';

/** True when `path` is one of the collect paths or inside a collected directory, with no `..`. Pure. */
export function requested(collect: readonly string[], path: string): boolean {
  if (!path.startsWith('/') || path.split('/').includes('..') || path.includes('\0')) return false;
  return collect.some((c) => path === c || path.startsWith(c.endsWith('/') ? c : `${c}/`));
}

const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

export async function runJob(pool: Acquirer, input: JobInput): Promise<JobResult> {
  const job = parseJob(input);
  const started = performance.now();
  const lease = await pool.acquire({
    ...(job.acquireTimeoutMs !== undefined ? { timeoutMs: job.acquireTimeoutMs } : {}),
    ...(job.signal ? { signal: job.signal } : {}),
  });
  const acquireMs = performance.now() - started;
  try {
    return await runLeased(lease, job, started, acquireMs);
  } finally {
    await lease.release();
  }
}

async function runLeased(lease: Lease, job: Job, started: number, acquireMs: number): Promise<JobResult> {
  const vm = lease.vm;
  const setupMs = Math.max(1_000, job.timeoutMs);
  const paths = Object.keys(job.files);
  const dirs = parentDirs(paths, job.cwd);
  if (dirs.length) {
    const r = await vm.exec(['mkdir', '-p', '--', ...dirs], { timeoutMs: setupMs });
    if (r.exitCode !== 0) {
      throw new LocalVmError('COMMAND_FAILED', `creating ${dirs.join(' ')} in the guest failed: ${r.stderr.trim()}`, {
        vm: lease.name,
      });
    }
  }
  for (const [path, content] of Object.entries(job.files)) await vm.putFile(path, content);

  const argv = job.argv ?? ['/bin/sh', '-c', job.script ?? ''];
  const truncatedOutputs: string[] = [];
  let result;
  try {
    result = await vm.exec(argv, {
      timeoutMs: job.timeoutMs,
      ...(job.env ? { env: job.env } : {}),
      ...(job.cwd ? { cwd: job.cwd } : {}),
      ...(job.stdin !== undefined ? { stdin: job.stdin } : {}),
      ...(job.signal ? { signal: job.signal } : {}),
    });
  } catch (error) {
    if (!isLocalVmError(error, 'TIMEOUT')) throw error;
    // The guest process may have children the agent's kill missed: the whole VM goes now.
    await lease.release();
    const empty = new Uint8Array();
    return {
      vm: lease.name,
      exitCode: null,
      stdout: '',
      stderr: '',
      stdoutBytes: empty,
      stderrBytes: empty,
      files: {},
      missing: [],
      timedOut: true,
      truncated: false,
      truncatedOutputs,
      durationMs: performance.now() - started,
      acquireMs,
    };
  }
  const out = cut(result.stdoutBytes, job.maxOutputBytes);
  const err = cut(result.stderrBytes, job.maxOutputBytes);
  if (out.cut) truncatedOutputs.push('stdout');
  if (err.cut) truncatedOutputs.push('stderr');
  const { files, missing } = await collect(lease, job, truncatedOutputs, setupMs);
  return {
    vm: lease.name,
    exitCode: result.exitCode,
    stdout: text(out.bytes),
    stderr: text(err.bytes),
    stdoutBytes: out.bytes,
    stderrBytes: err.bytes,
    files,
    missing,
    timedOut: false,
    truncated: truncatedOutputs.length > 0,
    truncatedOutputs,
    durationMs: performance.now() - started,
    acquireMs,
  };
}

async function collect(
  lease: Lease,
  job: Job,
  truncatedOutputs: string[],
  timeoutMs: number,
): Promise<{ files: Record<string, Uint8Array>; missing: string[] }> {
  const files: Record<string, Uint8Array> = {};
  const missing: string[] = [];
  if (job.collect.length === 0) return { files, missing };
  const listing = await lease.vm.exec(['/bin/sh', '-c', LIST, 'sh', ...job.collect], { timeoutMs });
  let budget = job.maxOutputBytes;
  for (const line of listing.stdout.split('\n')) {
    if (line.startsWith('m ')) missing.push(line.slice(2));
    const m = /^f (\d+) (.+)$/.exec(line);
    if (!m) continue;
    const size = Number(m[1]);
    const path = m[2] ?? '';
    // The listing comes from an untrusted guest: only what was asked for is read back.
    if (!requested(job.collect, path)) continue;
    if (size <= budget) {
      files[path] = await lease.vm.getFile(path);
    } else {
      // Only the part that fits travels: `head -c` in the guest, not the whole file.
      const r = await lease.vm.exec(['head', '-c', String(budget), '--', path], { timeoutMs });
      files[path] = r.stdoutBytes;
      truncatedOutputs.push(path);
    }
    budget -= files[path].length;
  }
  return { files, missing };
}
