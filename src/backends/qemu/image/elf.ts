/**
 * Just enough of 64-bit little-endian ELF to read kernels, modules and host binaries:
 * a named section, the program interpreter, the PVH entry note. Pure, on buffers.
 */

/** True when `data` starts with the ELF magic. */
export function isElf(data: Uint8Array): boolean {
  return data.length >= 4 && data[0] === 0x7f && data[1] === 0x45 && data[2] === 0x4c && data[3] === 0x46;
}

function elf64(data: Uint8Array): Buffer | undefined {
  // Only 64-bit little-endian ELF matters here (x86_64 kernels, modules, host binaries).
  if (!isElf(data) || data.length < 64 || data[4] !== 2 || data[5] !== 1) return undefined;
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

function inRange(buf: Buffer, offset: number, size: number): boolean {
  return offset >= 0 && size >= 0 && offset + size <= buf.length;
}

/** The bytes of the named section of a 64-bit little-endian ELF file, or undefined. */
export function elfSection(data: Uint8Array, name: string): Buffer | undefined {
  const buf = elf64(data);
  if (!buf) return undefined;
  const shoff = Number(buf.readBigUInt64LE(0x28));
  const shentsize = buf.readUInt16LE(0x3a);
  const shnum = buf.readUInt16LE(0x3c);
  const shstrndx = buf.readUInt16LE(0x3e);
  if (shentsize < 64 || !inRange(buf, shoff, shentsize * shnum) || shstrndx >= shnum) return undefined;
  const header = (i: number) => {
    const at = shoff + i * shentsize;
    return {
      name: buf.readUInt32LE(at),
      offset: Number(buf.readBigUInt64LE(at + 24)),
      size: Number(buf.readBigUInt64LE(at + 32)),
    };
  };
  const strtab = header(shstrndx);
  if (!inRange(buf, strtab.offset, strtab.size)) return undefined;
  for (let i = 0; i < shnum; i++) {
    const h = header(i);
    const nameStart = strtab.offset + h.name;
    const nameEnd = buf.indexOf(0, nameStart);
    if (nameEnd < 0 || nameEnd > strtab.offset + strtab.size) continue;
    if (buf.toString('latin1', nameStart, nameEnd) !== name) continue;
    return inRange(buf, h.offset, h.size) ? buf.subarray(h.offset, h.offset + h.size) : undefined;
  }
  return undefined;
}

interface ProgramHeader {
  type: number;
  offset: number;
  size: number;
}

function programHeaders(buf: Buffer): ProgramHeader[] {
  const phoff = Number(buf.readBigUInt64LE(0x20));
  const phentsize = buf.readUInt16LE(0x36);
  const phnum = buf.readUInt16LE(0x38);
  if (phentsize < 56 || !inRange(buf, phoff, phentsize * phnum)) return [];
  const out: ProgramHeader[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    out.push({
      type: buf.readUInt32LE(at),
      offset: Number(buf.readBigUInt64LE(at + 8)),
      size: Number(buf.readBigUInt64LE(at + 32)),
    });
  }
  return out;
}

const PT_INTERP = 3;
const PT_NOTE = 4;

/** The program interpreter (dynamic loader) of an ELF executable; undefined when static. */
export function elfInterpreter(data: Uint8Array): string | undefined {
  const buf = elf64(data);
  if (!buf) return undefined;
  const interp = programHeaders(buf).find((p) => p.type === PT_INTERP);
  if (!interp || !inRange(buf, interp.offset, interp.size)) return undefined;
  return buf.toString('latin1', interp.offset, interp.offset + interp.size).replace(/\0+$/, '');
}

/** True when a kernel ELF carries the Xen PHYS32_ENTRY note that QEMU's PVH boot needs. */
export function hasPvhNote(data: Uint8Array): boolean {
  const buf = elf64(data);
  if (!buf) return false;
  const XEN_ELFNOTE_PHYS32_ENTRY = 18;
  for (const ph of programHeaders(buf)) {
    if (ph.type !== PT_NOTE || !inRange(buf, ph.offset, ph.size)) continue;
    let at = ph.offset;
    const end = ph.offset + ph.size;
    while (at + 12 <= end) {
      const namesz = buf.readUInt32LE(at);
      const descsz = buf.readUInt32LE(at + 4);
      const type = buf.readUInt32LE(at + 8);
      const name = buf.toString('latin1', at + 12, at + 12 + Math.max(0, namesz - 1));
      if (name === 'Xen' && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
      at += 12 + align4(namesz) + align4(descsz);
    }
  }
  return false;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}
