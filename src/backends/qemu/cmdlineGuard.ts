/**
 * The duplicate-flag guard of the QEMU command line: a flag may appear once unless QEMU
 * treats it as repeatable, as lima's Cmdline guard does. Pure.
 */
import { LocalVmError } from '../../errors.js';

/** Flags QEMU accepts more than once with additive meaning; any other flag may appear once. */
export const REPEATABLE_QEMU_FLAGS: ReadonlySet<string> = new Set([
  '-device',
  '-drive',
  '-netdev',
  '-chardev',
  '-object',
  '-blockdev',
  '-global',
  '-fw_cfg',
  '-numa',
  '-add-fd',
  '-set',
]);

// QEMU 7.2 options that take no value (from `qemu-system-x86_64 -help`). Knowing them lets
// the guard step over option values, so a value that starts with "-" is not taken for a flag.
const VALUELESS_QEMU_FLAGS: ReadonlySet<string> = new Set([
  '-S',
  '-s',
  '-h',
  '-help',
  '-version',
  '-daemonize',
  '-enable-kvm',
  '-enable-sync-profile',
  '-full-screen',
  '-mem-prealloc',
  '-no-acpi',
  '-no-fd-bootchk',
  '-no-hpet',
  '-no-reboot',
  '-no-shutdown',
  '-no-user-config',
  '-nodefaults',
  '-nographic',
  '-only-migratable',
  '-portrait',
  '-preconfig',
  '-singlestep',
  '-snapshot',
  '-usb',
  '-win2k-hack',
  '-xen-attach',
  '-xen-domid-restrict',
  '-alt-grab',
  '-ctrl-grab',
  '-no-quit',
  '-old-param',
  '-semihosting',
  '-no-frame',
]);

/**
 * Throws VALIDATION naming the first flag that appears twice in a QEMU argv, unless QEMU
 * allows it to repeat (REPEATABLE_QEMU_FLAGS). `--flag` and `-flag` count as the same flag.
 */
export function assertNoDuplicateFlags(args: readonly string[]): void {
  const seen = new Set<string>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg.charCodeAt(0) !== 45 /* - */ || arg.length < 2) continue;
    const flag = arg.charCodeAt(1) === 45 ? arg.slice(1) : arg;
    if (!VALUELESS_QEMU_FLAGS.has(flag)) i++; // the next token is this flag's value
    if (REPEATABLE_QEMU_FLAGS.has(flag)) continue;
    if (seen.has(flag)) {
      throw new LocalVmError('VALIDATION', `QEMU flag ${flag} is given twice`, {
        issues: [{ property: 'extraArgs', reason: `duplicate QEMU flag ${flag}` }],
        details: { flag },
      });
    }
    seen.add(flag);
  }
}
