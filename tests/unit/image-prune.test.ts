/** What `image prune` decides from the records: pure, no binaries. */
import { describe, expect, it } from 'vitest';
import { planPrune, type PruneFacts } from '../../src/operations/prune.js';

const facts = (over: Partial<PruneFacts> = {}): PruneFacts => ({
  tiny: [
    { name: 'tiny-new', dir: '/c/images/new', sizeBytes: 10 },
    { name: 'tiny-old', dir: '/c/images/old', sizeBytes: 20 },
    { name: 'tiny-older', dir: '/c/images/older', sizeBytes: 30 },
  ],
  currentTiny: '/c/images/new',
  downloads: [
    { id: 'aaa', path: '/c/downloads/sha256-aaa.qcow2', sizeBytes: 100 },
    { id: 'bbb', path: '/c/downloads/sha256-bbb.qcow2', sizeBytes: 200 },
  ],
  templates: [],
  users: [
    { user: 'vm a', files: ['/c/images/old/vmlinux'] },
    { user: 'vm b', files: ['/c/downloads/sha256-aaa.qcow2'] },
  ],
  ...over,
});
const names = (items: { kind: string; name: string }[]) => items.map((i) => `${i.kind}:${i.name}`).sort();

describe('planPrune', () => {
  it('keeps the current tiny build and whatever a VM boots from; prunes the rest', () => {
    const { prune, keep } = planPrune(facts());
    expect(names(prune)).toEqual(['download:bbb', 'tiny:tiny-older']);
    expect(keep.map((k) => [k.name, k.usedBy])).toEqual([
      ['tiny-new', ['new tiny VMs (the current build)']],
      ['tiny-old', ['vm a']],
      ['aaa', ['vm b']],
    ]);
  });

  it('a template with clones keeps itself and what it uses; one without goes with what only it used', () => {
    const template = (clones: string[]) => ({
      templates: [{ name: 't', dir: '/s/templates/t', sizeBytes: 5, clones, files: ['/c/images/older/vmlinux'] }],
      users: [
        ...facts().users,
        { user: 'template t', files: ['/c/images/older/vmlinux', '/c/downloads/sha256-bbb.qcow2'] },
      ],
    });
    const used = planPrune(facts(template(['c1'])));
    expect(names(used.prune)).toEqual([]);
    expect(used.keep.find((k) => k.name === 'tiny-older')?.usedBy).toEqual(['template t']);
    expect(used.keep.find((k) => k.name === 't')?.usedBy).toEqual(['vm c1']);
    expect(names(planPrune(facts(template([]))).prune)).toEqual(['download:bbb', 'template:t', 'tiny:tiny-older']);
  });

  it('compares download paths resolved, so a relative backing file still counts', () => {
    const { prune } = planPrune(
      facts({ users: [{ user: 'vm b', files: ['/c/downloads/../downloads/sha256-bbb.qcow2'] }] }),
    );
    expect(names(prune)).toContain('download:aaa');
    expect(names(prune)).not.toContain('download:bbb');
  });
});
