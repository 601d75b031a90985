/**
 * Reading the process table (/proc). A pid alone does not name a process across reuse;
 * the pair (pid, start time) does, so that is what locks and session records store.
 */
import { readFile } from 'node:fs/promises';

/** The fields of /proc/PID/stat that matter here. */
export interface ProcStat {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
  /** Clock ticks since boot; with the pid, identifies one process across pid reuse. */
  startTime: number;
}

/** Parses /proc/PID/stat. `comm` may contain spaces and parentheses, so split at the last `)`. Pure. */
export function parseProcStat(text: string): ProcStat | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 1 || close < open) return undefined;
  const pid = Number(text.slice(0, open).trim());
  const rest = text
    .slice(close + 1)
    .trim()
    .split(/\s+/);
  // rest[0] is field 3 (state); starttime is field 22 → rest[19].
  const state = rest[0];
  const ppid = Number(rest[1]);
  const startTime = Number(rest[19]);
  if (!Number.isInteger(pid) || !state || !Number.isFinite(ppid) || !Number.isFinite(startTime)) return undefined;
  return { pid, comm: text.slice(open + 1, close), state, ppid, startTime };
}

export interface ProcessProbe {
  stat?: ProcStat | undefined;
  cmdline?: string | undefined;
}

/** Reads /proc/PID/stat and cmdline; undefined when the process does not exist. */
export async function probeProcess(pid: number | undefined): Promise<ProcessProbe | undefined> {
  if (pid === undefined || !Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    const stat = parseProcStat(await readFile(`/proc/${pid}/stat`, 'utf8'));
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined);
    return { stat, cmdline };
  } catch {
    return undefined;
  }
}

/** Start time of the process `pid`, or undefined when it does not exist (or is a zombie). */
export async function processStartTime(pid: number): Promise<number | undefined> {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    const stat = parseProcStat(await readFile(`/proc/${pid}/stat`, 'utf8'));
    if (!stat || stat.state === 'Z' || stat.state === 'X') return undefined;
    return stat.startTime;
  } catch {
    return undefined;
  }
}
