/**
 * What a failed `virsh` run means, from libvirt's own error phrases (libvirt 9.0). Every
 * error names the connection URI: with several hosts, "domain not found" alone does not say
 * where. The first rule that matches wins; connection failures come first because a daemon
 * that cannot be reached makes every command fail, whatever it was about.
 */
import { LocalVmError, type ErrorCode } from '../../errors.js';
import { commandError, type RunResult } from '../../runner.js';

interface Rule {
  code: ErrorCode;
  pattern: RegExp;
  transient?: boolean;
  /** Sets details.unreachable: the daemon itself did not answer. */
  unreachable?: boolean;
  hint?: string;
}

const RULES: readonly Rule[] = [
  {
    code: 'COMMAND_FAILED',
    unreachable: true,
    pattern: /Permission denied \(publickey|Host key verification failed|no such identity|Load key .*: /i,
    hint: 'check the ssh user, the keyfile= of the URI and the host key (known_hosts)',
  },
  {
    code: 'COMMAND_FAILED',
    unreachable: true,
    pattern:
      /failed to connect to the hypervisor|Failed to connect socket|Cannot recv data|Connection refused|No route to host|Could not resolve hostname|End of file while reading data/i,
    hint: 'is libvirtd running on that host, and is the URI right? (`virsh -c URI version`)',
  },
  {
    code: 'UNSUPPORTED',
    pattern: /element 'backend': 'passt'|passt.*(not supported|unsupported)/i,
    hint: 'port forwards need libvirt with the passt backend (and the passt package) on that host',
  },
  { code: 'ALREADY_EXISTS', pattern: /\balready exists\b/i },
  {
    code: 'NOT_FOUND',
    pattern:
      /failed to get domain|Domain not found|no domain with matching|Storage volume not found|no storage vol|snapshot not found|no domain snapshot|Storage pool not found|no storage pool/i,
  },
  {
    code: 'TRANSIENT',
    transient: true,
    pattern: /Guest agent is not responding|guest agent is not connected|agent is not connected/i,
  },
  { code: 'CONFLICT', pattern: /domain is not running|domain is already running|Requested operation is not valid/i },
  {
    code: 'UNSUPPORTED',
    pattern: /unsupported configuration|not supported by the connection driver|does not support/i,
  },
];

/** The LocalVmError of a failed virsh run against `uri`. Pure. */
export function classifyVirshFailure(result: RunResult, uri: string, vm?: string): LocalVmError {
  const base = commandError(result);
  const text = `${result.stderr}\n${result.stdout}`;
  const rule = result.timedOut ? undefined : RULES.find((r) => r.pattern.test(text));
  const why = (result.stderr.trim().split('\n').filter(Boolean).pop() ?? '').replace(/^error:\s*/, '');
  const message = rule?.unreachable
    ? `cannot reach libvirt at ${uri}: ${why}`
    : `libvirt at ${uri}: ${result.args.slice(2, 3).join('')} failed: ${why || base.message}`;
  return new LocalVmError(rule?.code ?? base.code, message, {
    vm,
    command: base.command,
    hint: rule?.hint,
    transient: rule ? (rule.transient ?? false) : base.transient,
    details: { uri, ...(rule?.unreachable ? { unreachable: true } : {}) },
  });
}
