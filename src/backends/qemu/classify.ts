/**
 * Which QEMU launch failures a retry may cure. Only specific, known messages count as
 * transient: a host port or image lock held by someone else for a moment, memory that
 * could not be had right now. Anything else (a bad option, a missing file) is permanent.
 */

const TRANSIENT_LAUNCH_FAILURES: readonly RegExp[] = [
  // Another process holds the host port of a forward (often a VM being torn down).
  /Could not set up host forwarding rule/,
  /Address already in use/,
  // Another QEMU still holds the image lock (a previous instance of this VM exiting).
  /Failed to get (?:shared )?"write" lock/,
  // The host is short of memory right now.
  /cannot set up guest memory/,
  /Cannot allocate memory/,
];

/** True when QEMU's stderr from a failed launch names a condition that may pass. */
export function isTransientLaunchFailure(stderr: string): boolean {
  return TRANSIENT_LAUNCH_FAILURES.some((re) => re.test(stderr));
}
