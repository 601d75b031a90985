/**
 * The one way libvirt XML is written: elements built from a tag, attributes and children,
 * where every attribute value and every text child is escaped. Nothing splices a value into
 * markup by hand, so a name, label or path cannot open an element of its own.
 */
import { LocalVmError } from '../../errors.js';

/** Markup built by `el` (trusted); a plain string child is text and is escaped. */
export interface XmlNode {
  readonly xml: string;
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };

/** `value` escaped for an attribute or text: & < > " ' become entities. */
export function escapeXml(value: string): string {
  // XML 1.0 cannot carry most control characters even as entities; the schema forbids them
  // in names and labels, and a path holding one is refused rather than silently changed.
  for (const ch of value) {
    const c = ch.charCodeAt(0);
    if (c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d)
      throw new LocalVmError('VALIDATION', 'control characters cannot be written in XML');
  }
  return value.replace(/[&<>"']/g, (c) => ESCAPES[c] as string);
}

/** The text of an XML text node or attribute value: entities decoded. Pure. */
export function unescapeXml(value: string): string {
  return value.replace(/&(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);/g, (_, e: string) => {
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[e] as string;
  });
}

export type XmlAttrs = Record<string, string | number | undefined>;

/** An element. Undefined attributes and children are left out. Tags and attribute names are code, never input. */
export function el(tag: string, attrs: XmlAttrs = {}, ...children: (XmlNode | string | undefined | false)[]): XmlNode {
  const a = Object.entries(attrs)
    .filter((e): e is [string, string | number] => e[1] !== undefined)
    .map(([k, v]) => ` ${k}='${escapeXml(String(v))}'`)
    .join('');
  const kids = children.filter((c): c is XmlNode | string => c !== undefined && c !== false);
  if (kids.length === 0) return { xml: `<${tag}${a}/>` };
  if (kids.every((c) => typeof c === 'string')) {
    return { xml: `<${tag}${a}>${kids.map((c) => escapeXml(c as string)).join('')}</${tag}>` };
  }
  const body = kids
    .map((c) => (typeof c === 'string' ? escapeXml(c) : c.xml))
    .join('\n')
    .replace(/^/gm, '  ');
  return { xml: `<${tag}${a}>\n${body}\n</${tag}>` };
}

/** The document text of `root`, newline-terminated. */
export function render(root: XmlNode): string {
  return `${root.xml}\n`;
}
