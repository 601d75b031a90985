import { describe, expect, it } from 'vitest';
import { tinyImageHash } from '../../src/backends/qemu/image/cache.js';
import { INIT_TEMPLATES } from '../../src/backends/qemu/image/init.js';

describe('tinyImageHash', () => {
  const base = {
    builderVersion: 1,
    kernelPackage: { name: 'linux-image-6.1.0-56-amd64', version: '6.1.192-2' },
    files: [{ path: '/bin/busybox', sha256: 'a'.repeat(64) }],
    templates: INIT_TEMPLATES,
    append: 'console=ttyS0',
    modules: ['virtio'],
  };

  it('is stable and changes with every input', () => {
    const h = tinyImageHash(base);
    expect(h).toMatch(/^[0-9a-f]{16}$/);
    expect(tinyImageHash({ ...base })).toBe(h);
    const variants = [
      { ...base, builderVersion: 2 },
      { ...base, kernelPackage: { ...base.kernelPackage, version: '6.1.192-3' } },
      { ...base, files: [{ path: '/bin/busybox', sha256: 'b'.repeat(64) }] },
      { ...base, templates: [{ path: 'init', content: '#!/bin/sh\n' }] },
      { ...base, append: 'console=ttyS0 quiet' },
      { ...base, modules: ['virtio', 'ext4'] },
    ];
    const hashes = new Set(variants.map((v) => tinyImageHash(v)));
    expect(hashes.size).toBe(variants.length);
    expect(hashes.has(h)).toBe(false);
  });
});
