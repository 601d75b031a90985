/**
 * A clone's personalisation is one guest process of a fixed script: the values (hostname,
 * MAC, clock) travel as argv elements, never spliced into the script text.
 */
import { describe, expect, it } from 'vitest';
import { identityArgv } from '../../src/backends/qemu/template/restore.js';

describe('identityArgv', () => {
  it('passes hostname, MAC and epoch seconds as arguments of a fixed script', () => {
    const a = identityArgv('c1', '02:00:00:00:00:01', 1_700_000_000_400);
    const b = identityArgv('$(reboot)', '02:00:00:00:00:02', 1_700_000_000_600);
    expect(a.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    // The script is the same whatever the values: they are "$1" "$2" "$3".
    expect(b[2]).toBe(a[2]);
    expect(a.slice(3)).toEqual(['sh', 'c1', '02:00:00:00:00:01', '1700000000']);
    expect(b.slice(3)).toEqual(['sh', '$(reboot)', '02:00:00:00:00:02', '1700000001']);
  });

  it('keeps the MAC when none is given (a held clone resumed for a pool)', () => {
    expect(identityArgv('c1', undefined, 0).slice(3)).toEqual(['sh', 'c1', '', '0']);
    expect(identityArgv('c1', undefined, 0)[2]).toContain('[ -n "$2" ] || exit 0');
  });

  it('sets the clock, the hostname and the MAC in that one process', () => {
    const script = identityArgv('c1', '02:00:00:00:00:01', 0)[2] ?? '';
    expect(script).toContain('date -s "@$3"');
    expect(script).toContain('/proc/sys/kernel/hostname');
    expect(script).toContain('address "$2"');
  });
});
