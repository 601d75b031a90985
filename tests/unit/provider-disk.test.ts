/** The pure half of the Disk and DiskAttachment resources. */
import { describe, expect, it } from 'vitest';
import { UNKNOWN } from '../../src/provider/props.js';
import { checkAttachment, checkDisk, diffAttachment, diffDisk } from '../../src/provider/diskLogic.js';

describe('Disk', () => {
  it('check parses the size to bytes, refuses a shrink of the same disk, and lets unknowns pass', () => {
    expect(checkDisk({}, { name: 'd', size: '1M' })).toEqual({ inputs: { name: 'd', size: 1 << 20 }, failures: [] });
    expect(checkDisk({ name: 'd', size: 2 << 20 }, { name: 'd', size: '1M' }).failures).toEqual([
      { property: 'size', reason: expect.stringMatching(/at least 2097152/) },
    ]);
    // Another name is another disk: no shrink.
    expect(checkDisk({ name: 'd', size: 2 << 20 }, { name: 'e', size: '1M' }).failures).toEqual([]);
    expect(checkDisk({}, { name: UNKNOWN, size: '1M' }).failures).toEqual([]);
  });

  it('diff: a size change updates in place, name or from replaces (deleting first unless renamed)', () => {
    const olds = { name: 'd', size: 1 << 20 };
    expect(diffDisk(olds, { ...olds })).toMatchObject({ changes: false });
    expect(diffDisk(olds, { ...olds, size: 2 << 20 })).toMatchObject({
      changes: true,
      replaces: [],
      updates: ['size'],
    });
    expect(diffDisk(olds, { ...olds, from: '/img.qcow2' })).toMatchObject({
      replaces: ['from'],
      deleteBeforeReplace: true,
    });
    expect(diffDisk(olds, { ...olds, name: 'e' })).toMatchObject({ replaces: ['name'], deleteBeforeReplace: false });
    expect(diffDisk(olds, { ...olds, name: UNKNOWN })).toMatchObject({ replaces: ['name'], deleteBeforeReplace: true });
  });
});

describe('DiskAttachment', () => {
  it('check defaults readonly to false; diff replaces on any change, detaching first', () => {
    expect(checkAttachment({ vm: 'v', disk: 'd' })).toEqual({
      inputs: { vm: 'v', disk: 'd', readonly: false },
      failures: [],
    });
    const olds = { vm: 'v', disk: 'd', readonly: false };
    expect(diffAttachment(olds, { ...olds })).toMatchObject({ changes: false });
    for (const change of [{ vm: 'w' }, { disk: 'e' }, { readonly: true }]) {
      expect(diffAttachment(olds, { ...olds, ...change })).toMatchObject({
        changes: true,
        replaces: Object.keys(change),
        deleteBeforeReplace: true,
      });
    }
  });
});
