import { describe, expect, it } from 'vitest';
import { isLocalVmError } from '../../src/errors.js';
import {
  EARLY_MODULES,
  LATE_MODULES,
  normalizeModuleName,
  orderModules,
} from '../../src/backends/qemu/image/modules.js';

// `depends=` of the modules the image loads, as read from linux-image-6.1.0-56-amd64.
const REAL_DEPENDS = new Map<string, string[]>([
  ['virtio_ring', []],
  ['virtio_pci_modern_dev', []],
  ['virtio_pci_legacy_dev', []],
  ['virtio', ['virtio_ring']],
  ['virtio_pci', ['virtio_ring', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio']],
  ['virtio_console', ['virtio', 'virtio_ring']],
  ['virtio_blk', ['virtio', 'virtio_ring']],
  ['failover', []],
  ['net_failover', ['failover']],
  ['virtio_net', ['virtio_ring', 'virtio', 'net_failover']],
  ['virtio_rng', ['virtio', 'virtio_ring']],
  ['button', []],
  ['evdev', []],
  ['jbd2', []],
  ['mbcache', []],
  ['crc16', []],
  ['crc32c_generic', []],
  ['ext4', ['jbd2', 'mbcache', 'crc16']],
]);

describe('normalizeModuleName', () => {
  it('maps file names to module names', () => {
    expect(normalizeModuleName('virtio-rng.ko')).toBe('virtio_rng');
    expect(normalizeModuleName('ext4.ko.xz')).toBe('ext4');
    expect(normalizeModuleName('crc32c_generic')).toBe('crc32c_generic');
  });
});

describe('orderModules', () => {
  const assertDepsFirst = (order: string[], depends: ReadonlyMap<string, readonly string[]>) => {
    for (const [i, m] of order.entries()) {
      for (const d of depends.get(m) ?? []) expect(order.indexOf(d), `${d} before ${m}`).toBeLessThan(i);
    }
  };

  it('puts every module after its dependencies, for the real module set', () => {
    const wanted = [...EARLY_MODULES, ...LATE_MODULES];
    const order = orderModules(wanted, REAL_DEPENDS);
    expect(new Set(order)).toEqual(new Set(wanted));
    expect(order).toHaveLength(wanted.length);
    assertDepsFirst(order, REAL_DEPENDS);
  });

  it('reorders a list given in the wrong order and keeps input order otherwise', () => {
    expect(orderModules(['ext4', 'crc16', 'virtio_console'], REAL_DEPENDS)).toEqual([
      'jbd2',
      'mbcache',
      'crc16',
      'ext4',
      'virtio_ring',
      'virtio',
      'virtio_console',
    ]);
  });

  it('rejects cycles and unknown modules', () => {
    const cyclic = new Map([
      ['a', ['b']],
      ['b', ['a']],
    ]);
    expect(() => orderModules(['a'], cyclic)).toThrow(/cycle/);
    try {
      orderModules(['ext4'], new Map([['ext4', ['jbd2']]]));
      expect.unreachable();
    } catch (error) {
      expect(isLocalVmError(error, 'INTERNAL')).toBe(true);
    }
  });
});
