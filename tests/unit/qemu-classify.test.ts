import { describe, expect, it } from 'vitest';
import { isTransientLaunchFailure } from '../../src/backends/qemu/classify.js';

describe('QEMU launch failure classification', () => {
  it.each([
    ["qemu-system-x86_64: Could not set up host forwarding rule 'tcp:127.0.0.1:8080-:80'", true],
    ['qemu-system-x86_64: -netdev user,id=n0: Address already in use', true],
    ['qemu-system-x86_64: Failed to get "write" lock\nIs another process using the image [/x.qcow2]?', true],
    ['qemu-system-x86_64: Failed to get shared "write" lock', true],
    ["qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory", true],
    ["qemu-system-x86_64: -accel tcg: invalid accelerator 'tcg'", false],
    ['qemu-system-x86_64: -kernel /x: could not open /x: No such file or directory', false],
    ['qemu-system-x86_64: -machine: unsupported machine type', false],
    ['', false],
  ])('%j → transient %s', (stderr, transient) => {
    expect(isTransientLaunchFailure(stderr)).toBe(transient);
  });
});
