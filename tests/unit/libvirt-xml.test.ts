import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { diskTarget, domainXml, type DomainInputs } from '../../src/backends/libvirt/domainXml.js';
import {
  metadataNode,
  parseMetadata,
  withMetadata,
  type LocalVmMetadata,
} from '../../src/backends/libvirt/metadata.js';
import { volumeXml } from '../../src/backends/libvirt/volumes.js';
import { el, escapeXml, unescapeXml } from '../../src/backends/libvirt/xml.js';
import { parseVmSpec } from '../../src/schema.js';
import { codeOfSync } from '../fixtures/rejection.js';

const fixture = (f: string) => readFileSync(new URL(`../fixtures/libvirt/${f}`, import.meta.url), 'utf8');

const spec = parseVmSpec({ name: 'lv-a', backend: 'libvirt', labels: { team: 'infra' } });
const meta = (over: Partial<LocalVmMetadata> = {}): LocalVmMetadata => ({
  fingerprint: 'f00',
  owner: 'root@h',
  home: 'h:/root/.localvm',
  createdAt: '2026-12-01T00:00:00.000Z',
  labels: spec.labels,
  spec,
  ...over,
});

const base = (over: Partial<DomainInputs> = {}): DomainInputs => ({
  name: 'lv-a',
  type: 'qemu',
  arch: 'x86_64',
  cpus: 2,
  memoryMib: 256,
  kernel: { kernel: '/p/k', initrd: '/p/i', cmdline: 'console=ttyS0 rdinit=/init' },
  pool: 'localvm',
  disks: [{ volume: 'lv-a.state.qcow2', target: 'vda', format: 'qcow2' }],
  consoleLog: '/p/lv-a.console.log',
  ports: [],
  metadata: el('localvm:vm', { 'xmlns:localvm': 'https://localvm.dev/xmlns/libvirt/1' }),
  ...over,
});

describe('domain XML', () => {
  it('boots tiny directly: kernel, initrd, cmdline, state disk, console file, agent channel, rng, user NIC', () => {
    expect(domainXml(base())).toBe(`<domain type='qemu'>
  <name>lv-a</name>
  <metadata>
    <localvm:vm xmlns:localvm='https://localvm.dev/xmlns/libvirt/1'/>
  </metadata>
  <memory unit='MiB'>256</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>/p/k</kernel>
    <initrd>/p/i</initrd>
    <cmdline>console=ttyS0 rdinit=/init</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <cpu mode='maximum'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source pool='localvm' volume='lv-a.state.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path='/p/lv-a.console.log'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <interface type='user'>
      <model type='virtio'/>
    </interface>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
    <memballoon model='none'/>
  </devices>
</domain>
`);
  });

  it('boots an image from its overlay with a boot order, kvm with the host CPU, passt port forwards', () => {
    const xml = domainXml(
      base({
        type: 'kvm',
        kernel: undefined,
        disks: [
          { volume: 'lv-a.root.qcow2', target: 'vda', format: 'qcow2', bootOrder: 1 },
          { volume: 'lv-a.seed.iso', target: 'vdb', format: 'raw', readonly: true },
        ],
        ports: [
          { host: 8080, guest: 80, protocol: 'tcp', bind: '127.0.0.1' },
          { host: 5353, guest: 53, protocol: 'udp', bind: '0.0.0.0' },
        ],
      }),
    );
    expect(xml).toContain(`<domain type='kvm'>`);
    expect(xml).toContain(`<cpu mode='host-passthrough'/>`);
    expect(xml).not.toContain('<kernel>');
    expect(xml).toContain(`    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source pool='localvm' volume='lv-a.root.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
    </disk>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='raw' discard='unmap'/>
      <source pool='localvm' volume='lv-a.seed.iso'/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>`);
    expect(xml).toContain(`    <interface type='user'>
      <backend type='passt'/>
      <model type='virtio'/>
      <portForward proto='tcp' address='127.0.0.1'>
        <range start='8080' to='80'/>
      </portForward>
      <portForward proto='udp' address='0.0.0.0'>
        <range start='5353' to='53'/>
      </portForward>
    </interface>`);
  });

  it('gives aarch64 the virt machine and no ACPI (it needs UEFI there)', () => {
    const xml = domainXml(base({ arch: 'aarch64' }));
    expect(xml).toContain(`<type arch='aarch64' machine='virt'>hvm</type>`);
    expect(xml).not.toContain('<acpi/>');
  });

  it('escapes every value: a hostile path or cmdline cannot open an element', () => {
    const xml = domainXml(
      base({
        kernel: { kernel: "/p/k'/><evil/>", cmdline: 'a</cmdline><devices><evil/></devices>&' },
        consoleLog: "/p/x' evil='1",
      }),
    );
    expect(xml).not.toContain('<evil/>');
    expect(xml).toContain('<kernel>/p/k&apos;/&gt;&lt;evil/&gt;</kernel>');
    expect(xml).toContain('<cmdline>a&lt;/cmdline&gt;&lt;devices&gt;&lt;evil/&gt;&lt;/devices&gt;&amp;</cmdline>');
    expect(xml).toContain(`<source path='/p/x&apos; evil=&apos;1'/>`);
  });

  it('refuses control characters XML cannot carry', () => {
    expect(codeOfSync(() => escapeXml('a\u0001b'))).toBe('VALIDATION');
    expect(escapeXml('tab\tnl\n')).toBe('tab\tnl\n');
  });

  it('names virtio disks vda..vdz', () => {
    expect([0, 1, 25].map(diskTarget)).toEqual(['vda', 'vdb', 'vdz']);
    expect(() => diskTarget(26)).toThrow(RangeError);
  });
});

describe('volume XML', () => {
  it('is an overlay of its backing volume, or a plain volume', () => {
    expect(
      volumeXml({
        name: 'lv-a.root.qcow2',
        capacityBytes: 1073741824,
        format: 'qcow2',
        backing: { path: '/pool/img-ab.qcow2', format: 'qcow2' },
      }),
    ).toBe(`<volume>
  <name>lv-a.root.qcow2</name>
  <capacity unit='bytes'>1073741824</capacity>
  <target>
    <format type='qcow2'/>
  </target>
  <backingStore>
    <path>/pool/img-ab.qcow2</path>
    <format type='qcow2'/>
  </backingStore>
</volume>
`);
    expect(volumeXml({ name: 'img-ab.vmlinux', capacityBytes: 10, format: 'raw' })).not.toContain('backingStore');
  });
});

describe('localvm metadata', () => {
  it('writes fingerprint, owner, created, sorted labels and the spec without user-data', () => {
    const s = parseVmSpec({ name: 'lv-a', backend: 'libvirt', userData: '#cloud-config\npassword: hunter2\n' });
    const xml = metadataNode(meta({ labels: { b: '2', a: '1' }, spec: s })).xml;
    expect(xml.split('\n').slice(0, 7)).toEqual([
      `<localvm:vm xmlns:localvm='https://localvm.dev/xmlns/libvirt/1'>`,
      '  <localvm:fingerprint>f00</localvm:fingerprint>',
      '  <localvm:owner>root@h</localvm:owner>',
      '  <localvm:home>h:/root/.localvm</localvm:home>',
      '  <localvm:created>2026-12-01T00:00:00.000Z</localvm:created>',
      `  <localvm:label key='a'>1</localvm:label>`,
      `  <localvm:label key='b'>2</localvm:label>`,
    ]);
    expect(xml).not.toContain('hunter2');
  });

  it('keeps a hostile label a label: no element, no attribute injected, read back exactly', () => {
    const labels = { 'k.x/y': `v'/><localvm:owner>mallory</localvm:owner><x a="&amp;` };
    const xml = metadataNode(meta({ labels })).xml;
    expect(xml).not.toContain('<localvm:owner>mallory');
    expect(xml.match(/<localvm:owner>/g)).toHaveLength(1);
    const back = parseMetadata(xml);
    expect(back?.labels).toEqual(labels);
    expect(back?.owner).toBe('root@h');
  });

  it('reads what libvirt hands back: unprefixed from `virsh metadata`, double quotes, and not-ours', () => {
    const m = parseMetadata(`<vm>
  <fingerprint>abc</fingerprint>
  <owner>u@h</owner>
  <home>h:/srv/a&amp;b</home>
  <created>2026-12-01T00:00:00.000Z</created>
  <label key="a&amp;b">x&lt;y</label>
  <label key="empty"/>
  <spec>{"name":"lv-a","image":"tiny","ports":[]}</spec>
</vm>
`);
    expect(m).toMatchObject({
      fingerprint: 'abc',
      owner: 'u@h',
      home: 'h:/srv/a&b',
      labels: { 'a&b': 'x<y', empty: '' },
    });
    expect(m?.spec.name).toBe('lv-a');
    expect(parseMetadata('<vm><label key="a">b</label></vm>')).toBeUndefined();
    expect(parseMetadata('<domain/>')).toBeUndefined();
  });

  it('replaces only its own element in a dumped domain (libvirt moves the xmlns up to <metadata>)', () => {
    const dumped = fixture('dumpxml-inactive.xml');
    expect(dumped).toContain(`<metadata xmlns:localvm="https://localvm.dev/xmlns/libvirt/1">`);
    const node = metadataNode(meta({ labels: { new: 'label' } }));
    const out = withMetadata(dumped, node);
    expect(out).toContain(`<localvm:label key='new'>label</localvm:label>`);
    expect(out).not.toContain('x&lt;y');
    expect(out.match(/<localvm:vm\b/g)).toHaveLength(1);
    expect(out.replace(node.xml, '')).toBe(dumped.replace(/<localvm:vm>[\s\S]*?<\/localvm:vm>/, ''));
    const bare = `<domain type='qemu'>\n  <name>x</name>\n  <memory>1</memory>\n</domain>\n`;
    expect(withMetadata(bare, node)).toContain(`<name>x</name>\n<metadata>\n${node.xml}\n</metadata>`);
  });

  it('escapes and unescapes every XML entity', () => {
    expect(escapeXml(`<a href="x" b='y'>&</a>`)).toBe('&lt;a href=&quot;x&quot; b=&apos;y&apos;&gt;&amp;&lt;/a&gt;');
    expect(unescapeXml('&lt;&gt;&amp;&quot;&apos;&#65;&#x42;')).toBe(`<>&"'AB`);
  });
});
