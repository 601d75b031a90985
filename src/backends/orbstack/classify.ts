/**
 * What an `orbctl` failure means, decided from its exit status and the documented
 * messages only. Retriability comes from specific phrases (`missing IP address`,
 * `already exists`), never from generic words such as "machine" or "setup": those appear
 * in permanent errors too (`create 'x': machine already exists`), and retrying them only
 * hides the real problem.
 */
import { LocalVmError, type ErrorCode } from '../../errors.js';
import { commandError, type RunResult } from '../../runner.js';

interface Rule {
  code: ErrorCode;
  transient: boolean;
  pattern: RegExp;
  hint?: string;
}

// Order matters: the first rule that matches wins. Transient rules come first because a
// daemon that is down makes every command fail, whatever it was about.
const RULES: readonly Rule[] = [
  {
    code: 'TRANSIENT',
    transient: true,
    pattern: /orbstack is not running|vmcontrol\.sock|agent not running|daemon (?:is )?not running|connection refused/i,
    hint: 'start OrbStack (open -a OrbStack, or `orbctl start`) and try again',
  },
  {
    code: 'TRANSIENT',
    transient: true,
    pattern: /missing IP address|didn'?t start in \d+|did not start in \d+/i,
    hint: 'OrbStack failed to boot the machine; retrying usually helps. If it persists after many creates/deletes, restart OrbStack',
  },
  { code: 'ALREADY_EXISTS', transient: false, pattern: /\balready exists\b/i },
  {
    code: 'VALIDATION',
    transient: false,
    pattern: /unknown distro|unsupported distro|unknown version .* for distro|invalid image|invalid arch/i,
    hint: 'use a distro image such as ubuntu:noble or debian:bookworm (see `orbctl create --help`)',
  },
  {
    code: 'VALIDATION',
    transient: false,
    pattern: /invalid (?:machine )?name/i,
    hint: 'machine names are letters, digits and "-"',
  },
  { code: 'NOT_FOUND', transient: false, pattern: /\bmachine not found\b|\bno such machine\b|\bdoes not exist\b/i },
];

function build(result: RunResult, rule: Rule | undefined): LocalVmError {
  const base = commandError(result);
  if (!rule) return base;
  return new LocalVmError(rule.code, base.message, {
    command: base.command,
    transient: rule.transient,
    hint: rule.hint,
  });
}

function matchRule(result: RunResult): Rule | undefined {
  const text = `${result.stderr}\n${result.stdout}`;
  return RULES.find((r) => r.pattern.test(text));
}

/**
 * The LocalVmError for a failed `orbctl` run. Pure. Timeouts are TIMEOUT (transient);
 * documented messages map to TRANSIENT / ALREADY_EXISTS / VALIDATION / NOT_FOUND;
 * anything else is a permanent COMMAND_FAILED carrying argv, exit code and stderr tail.
 */
export function classifyOrbctlFailure(result: RunResult): LocalVmError {
  if (result.timedOut) return commandError(result);
  return build(result, matchRule(result));
}

/**
 * For `orbctl run`, whose exit code is usually the guest command's own: the error when
 * the failure is orbctl's (daemon down, this machine not found), else undefined so the
 * caller reports the guest command's exit code. Only orbctl's own phrasings count, so a
 * guest `sh: foo: not found` stays the guest's result.
 */
export function orbctlRunFailure(result: RunResult, machine: string): LocalVmError | undefined {
  if (result.timedOut) return commandError(result);
  if (result.exitCode === 0) return undefined;
  const firstLine = result.stderr.split('\n', 1)[0] ?? '';
  const daemon = RULES[0] as Rule;
  if (daemon.pattern.test(firstLine) && /orbstack|vmcontrol|agent|daemon/i.test(firstLine))
    return build(result, daemon);
  const escaped = machine.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  if (new RegExp(`^machine not found: '?${escaped}'?$`).test(firstLine.trim()))
    return build(
      result,
      RULES.find((r) => r.code === 'NOT_FOUND'),
    );
  return undefined;
}
