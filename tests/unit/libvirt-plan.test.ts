import { describe, expect, it } from 'vitest';
import {
  INPUT_FILE,
  planCreate,
  planExisting,
  SEED_FILE,
  type CreateObservation,
} from '../../src/backends/libvirt/plan.js';
import { createVirsh } from '../../src/backends/libvirt/virsh.js';
import { flattenPlan, planCommands } from '../../src/plan.js';
import { parseVmSpec } from '../../src/schema.js';

const virsh = createVirsh('qemu:///system', 'virsh');
const spec = parseVmSpec({
  name: 'lv-a',
  backend: 'libvirt',
  userData: '#cloud-config\n',
  disks: [{ name: 'data', size: '1G' }],
});
const observed = (over: Partial<CreateObservation> = {}): CreateObservation => ({
  target: { host: 'default', uri: 'qemu:///system' },
  pool: 'localvm',
  poolDir: '/var/lib/libvirt/images/localvm',
  poolPath: '/pool',
  volumes: [],
  domainType: 'qemu',
  boot: {
    kind: 'kernel',
    kernel: { source: '/cache/vmlinux', hash: 'h1', sizeBytes: 10 },
    initrd: { source: '/cache/initrd', hash: 'h1', sizeBytes: 5 },
    cmdline: 'console=ttyS0',
  },
  metadata: { fingerprint: 'f', owner: 'o', home: 'h:/s', createdAt: 'c', labels: {}, spec },
  isoTool: { file: '/usr/bin/genisoimage', prefix: [] },
  ...over,
});
const subcommands = (p: ReturnType<typeof planCreate>) => planCommands(p).map((c) => c.args.slice(2).join(' '));

describe('libvirt create plan', () => {
  it('on a fresh host: pool, base uploads, own volumes, seed, define, start', () => {
    const p = planCreate(virsh, spec, observed({ poolPath: undefined }));
    expect(subcommands(p)).toEqual([
      'pool-define-as --name localvm --type dir --target /var/lib/libvirt/images/localvm',
      'pool-build --pool localvm',
      'pool-start --pool localvm',
      'pool-autostart --pool localvm',
      'vol-upload --pool localvm --vol img-h1.vmlinux --file /cache/vmlinux',
      'vol-upload --pool localvm --vol img-h1.initrd --file /cache/initrd',
      `vol-create --pool localvm --file ${INPUT_FILE}`,
      `vol-create --pool localvm --file ${INPUT_FILE}`,
      `vol-upload --pool localvm --vol lv-a.seed.iso --file ${SEED_FILE}`,
      `define --file ${INPUT_FILE}`,
      'start --domain lv-a',
    ]);
    const define = p.steps.find((s) => s.command?.args.includes('define'));
    const xml = define?.action.kind === 'virsh' ? (define.action.input ?? '') : '';
    // The kernel is the uploaded volume, in the directory the pool is created in.
    expect(xml).toContain('<kernel>/var/lib/libvirt/images/localvm/img-h1.vmlinux</kernel>');
    expect(xml).toContain(`<source pool='localvm' volume='lv-a.disk-data.qcow2'/>`);
    expect(xml).toContain(`<target dev='vdb' bus='virtio'/>`);
    // user-data is in the step that needs it, never in what a dry run prints.
    expect(
      flattenPlan(p.steps)
        .map((s) => s.step.summary)
        .join('\n'),
    ).not.toContain('#cloud-config');
  });

  it('starts a pool that exists but was stopped', () => {
    const p = planCreate(virsh, spec, observed({ poolActive: false }));
    expect(subcommands(p)[0]).toBe('pool-start --pool localvm');
    expect(subcommands(planCreate(virsh, spec, observed({ poolActive: true })))[0]).not.toContain('pool-');
  });

  it('uploads nothing a host already has, and records what each step creates', () => {
    const p = planCreate(virsh, spec, observed({ volumes: ['img-h1.vmlinux', 'img-h1.initrd'] }));
    expect(subcommands(p).filter((c) => c.startsWith('vol-upload --pool localvm --vol img-'))).toEqual([]);
    expect(p.steps.flatMap((s) => (s.action.kind === 'virsh' && s.action.creates ? [s.action.creates] : []))).toEqual([
      { volume: 'lv-a.state.qcow2' },
      { volume: 'lv-a.disk-data.qcow2' },
      { domain: 'lv-a' },
    ]);
  });

  it('boots an image from an overlay of its uploaded base, at least the image size', () => {
    const s = parseVmSpec({ name: 'lv-b', backend: 'libvirt', image: '/img/d.qcow2', diskSize: '1G' });
    const p = planCreate(
      virsh,
      s,
      observed({
        boot: {
          kind: 'image',
          image: { source: '/img/d.qcow2', hash: 'h2', sizeBytes: 3, format: 'qcow2', virtualBytes: 2 ** 31 },
        },
        metadata: { fingerprint: 'f', owner: 'o', home: 'h:/s', createdAt: 'c', labels: {}, spec: s },
      }),
    );
    const root = p.steps.find((st) => st.action.kind === 'virsh' && st.action.creates && 'volume' in st.action.creates);
    const input = root?.action.kind === 'virsh' ? root.action.input : '';
    expect(input).toContain(`<capacity unit='bytes'>2147483648</capacity>`);
    expect(input).toContain('<path>/pool/img-h2.qcow2</path>');
  });
});

describe('libvirt plans of existing domains', () => {
  const o = { pool: 'localvm', volumes: ['lv-a.state.qcow2', 'lv-a.console.log'] };
  it('stops gracefully with a deadline, then destroys; forced is destroy alone', () => {
    const p = planExisting(virsh, 'stop', 'lv-a', { ...o, state: 'running' }, { timeoutMs: 15_000 });
    expect(flattenPlan(p.steps).map(({ step, depth }) => [depth, step.command?.args.slice(2, 3)[0]])).toEqual([
      [0, 'shutdown'],
      [1, 'destroy'],
    ]);
    expect(p.steps[0]?.action).toEqual({ kind: 'graceful-stop', timeoutMs: 15_000 });
    const forced = planExisting(virsh, 'stop', 'lv-a', { ...o, state: 'running' }, { timeoutMs: 1, force: true });
    expect(planCommands(forced).map((c) => c.args[2])).toEqual(['destroy']);
    expect(planCommands(planExisting(virsh, 'stop', 'lv-a', { ...o, state: 'stopped' }, { timeoutMs: 1 }))).toEqual([]);
  });

  it('deletes the definition with its snapshot metadata and exactly its own volumes', () => {
    const p = planExisting(virsh, 'delete', 'lv-a', { ...o, state: 'running' }, { timeoutMs: 1 });
    expect(planCommands(p).map((c) => c.args.slice(2).join(' '))).toEqual([
      'destroy --domain lv-a',
      'undefine --snapshots-metadata --domain lv-a',
      'vol-delete --pool localvm --vol lv-a.state.qcow2',
      'vol-delete --pool localvm --vol lv-a.console.log',
    ]);
    // Leftover volumes of a create that died are removed even without a domain.
    expect(
      planCommands(planExisting(virsh, 'delete', 'lv-a', { ...o, state: undefined }, { timeoutMs: 1 })).length,
    ).toBe(2);
    expect(
      planCommands(planExisting(virsh, 'delete', 'lv-a', { pool: 'localvm', volumes: [] }, { timeoutMs: 1 })),
    ).toEqual([]);
  });

  it('restarts by a graceful stop and a start', () => {
    const p = planExisting(virsh, 'restart', 'lv-a', { ...o, state: 'running' }, { timeoutMs: 5 });
    expect(planCommands(p).map((c) => c.args[2])).toEqual(['shutdown', 'destroy', 'start']);
  });
});
