/**
 * localvm's facts about a libvirt VM live in the domain itself, in its `<metadata>` under
 * localvm's namespace: the spec fingerprint (adoption), labels, owner, creation time and the
 * spec it was made from (user-data left out: it may hold secrets and lives in the seed only).
 * list/info read them back from libvirt, so there is no local record to drift from the host.
 */
import type { VmSpec } from '../../schema.js';
import { el, unescapeXml, type XmlNode } from './xml.js';

export const LOCALVM_NS = 'https://localvm.dev/xmlns/libvirt/1';
/** The prefix localvm's metadata elements are written with (libvirt reads them back without it). */
export const LOCALVM_PREFIX = 'localvm';

export interface LocalVmMetadata {
  fingerprint: string;
  /** Who created it (`user@machine`), for people and `cleanup`. */
  owner: string;
  /**
   * The localvm home that made it (`machine:stateDir`, see homeId). A daemon is shared by
   * every home that reaches it (CI runners, laptops, test homes): each sees and acts on its
   * own VMs only, as with QEMU's per-home records, so one home's `cleanup --prefix` never
   * deletes another's VMs.
   */
  home: string;
  createdAt: string;
  labels: Record<string, string>;
  /** The spec without userData. */
  spec: VmSpec;
}

/** The id of a localvm home in a domain's metadata: this machine and the home's state directory. Pure. */
export function homeId(machine: string, stateDir: string): string {
  return `${machine}:${stateDir}`;
}

const p = (tag: string) => `${LOCALVM_PREFIX}:${tag}`;

/** The `<localvm:vm>` element of `meta`. Every value is escaped by `el`. Pure. */
export function metadataNode(meta: LocalVmMetadata): XmlNode {
  const { userData: _secret, ...spec } = meta.spec;
  return el(
    p('vm'),
    { [`xmlns:${LOCALVM_PREFIX}`]: LOCALVM_NS },
    el(p('fingerprint'), {}, meta.fingerprint),
    el(p('owner'), {}, meta.owner),
    el(p('home'), {}, meta.home),
    el(p('created'), {}, meta.createdAt),
    ...Object.entries(meta.labels)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, value]) => el(p('label'), { key }, value)),
    el(p('spec'), {}, JSON.stringify(spec)),
  );
}

// libvirt hands the element back with or without the prefix (`virsh metadata` drops it).
const PREFIX = '(?:[A-Za-z_][\\w.-]*:)?';
const textOf = (xml: string, tag: string): string | undefined => {
  const m = new RegExp(`<${PREFIX}${tag}(?:\\s[^>]*)?>([^<]*)</${PREFIX}${tag}>`).exec(xml);
  return m ? unescapeXml(m[1] as string) : undefined;
};

/**
 * localvm's metadata from `xml` (a whole domain, or the element `virsh metadata` prints), or
 * undefined when the domain has none (not localvm's) or it cannot be read. Pure.
 */
export function parseMetadata(xml: string): LocalVmMetadata | undefined {
  const vm = new RegExp(`<${PREFIX}vm(?:\\s[^>]*)?>([\\s\\S]*?)</${PREFIX}vm>`).exec(xml);
  if (!vm) return undefined;
  const body = vm[1] as string;
  const fingerprint = textOf(body, 'fingerprint');
  const specText = textOf(body, 'spec');
  if (fingerprint === undefined || specText === undefined) return undefined;
  let spec: VmSpec;
  try {
    spec = JSON.parse(specText) as VmSpec;
  } catch {
    return undefined;
  }
  const labels: Record<string, string> = {};
  const labelRe = new RegExp(`<${PREFIX}label\\s+key=(?:"([^"]*)"|'([^']*)')\\s*(?:/>|>([^<]*)</${PREFIX}label>)`, 'g');
  for (const m of body.matchAll(labelRe)) labels[unescapeXml(m[1] ?? m[2] ?? '')] = unescapeXml(m[3] ?? '');
  return {
    fingerprint,
    owner: textOf(body, 'owner') ?? '',
    home: textOf(body, 'home') ?? '',
    createdAt: textOf(body, 'created') ?? '',
    labels,
    spec,
  };
}

/**
 * `domainXml` (as `virsh dumpxml --inactive` prints it) with localvm's metadata replaced by
 * `node`, added when it has none. Other metadata is kept. Pure.
 */
export function withMetadata(domainXml: string, node: XmlNode): string {
  // libvirt moves the namespace declaration up to <metadata>: find the prefix bound to it.
  const ns = LOCALVM_NS.replace(/[.]/g, '\\.');
  const prefix = new RegExp(`xmlns:([A-Za-z_][\\w.-]*)=["']${ns}["']`).exec(domainXml)?.[1];
  if (prefix !== undefined) {
    const ours = new RegExp(`<${prefix}:vm(?:\\s[^>]*)?(?:/>|>[\\s\\S]*?</${prefix}:vm>)`);
    if (ours.test(domainXml)) return domainXml.replace(ours, () => node.xml);
  }
  const open = /<metadata(?:\s[^>]*)?>/;
  if (open.test(domainXml)) return domainXml.replace(open, (m) => `${m}\n${node.xml}`);
  if (/<metadata\/>/.test(domainXml))
    return domainXml.replace(/<metadata\/>/, () => `<metadata>\n${node.xml}\n</metadata>`);
  return domainXml.replace(/(<\/name>)/, (m) => `${m}\n<metadata>\n${node.xml}\n</metadata>`);
}
