import { describe, expect, it } from 'vitest';
import { elfInterpreter, elfSection, hasPvhNote, isElf } from '../../src/backends/qemu/image/elf.js';
import { parseModinfoDepends } from '../../src/backends/qemu/image/modules.js';
import { findXzStreamOffset } from '../../src/backends/qemu/image/vmlinux.js';

interface FakeSection {
  name: string;
  data: Buffer;
}
interface FakeSegment {
  type: number;
  data: Buffer;
}

/** A minimal 64-bit little-endian ELF with the given sections and program headers. */
function makeElf(sections: FakeSection[], segments: FakeSegment[] = []): Buffer {
  const header = Buffer.alloc(64);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(header);
  const phoff = 64;
  let cursor = phoff + segments.length * 56;
  const blobs: Buffer[] = [];
  const place = (data: Buffer) => {
    const offset = cursor;
    blobs.push(data);
    cursor += data.length;
    return offset;
  };
  const phdrs = Buffer.alloc(segments.length * 56);
  segments.forEach((s, i) => {
    const offset = place(s.data);
    phdrs.writeUInt32LE(s.type, i * 56);
    phdrs.writeBigUInt64LE(BigInt(offset), i * 56 + 8);
    phdrs.writeBigUInt64LE(BigInt(s.data.length), i * 56 + 32);
  });
  const names = ['', ...sections.map((s) => s.name), '.shstrtab'];
  const nameOffsets: number[] = [];
  let strtab = '';
  for (const n of names) {
    nameOffsets.push(strtab.length);
    strtab += n + '\0';
  }
  const sectionOffsets = sections.map((s) => place(s.data));
  const strtabOffset = place(Buffer.from(strtab, 'latin1'));
  const shoff = cursor;
  const shnum = sections.length + 2;
  const shdrs = Buffer.alloc(shnum * 64);
  const writeShdr = (i: number, name: number, offset: number, size: number) => {
    shdrs.writeUInt32LE(name, i * 64);
    shdrs.writeBigUInt64LE(BigInt(offset), i * 64 + 24);
    shdrs.writeBigUInt64LE(BigInt(size), i * 64 + 32);
  };
  sections.forEach((s, i) => writeShdr(i + 1, nameOffsets[i + 1] ?? 0, sectionOffsets[i] ?? 0, s.data.length));
  writeShdr(shnum - 1, nameOffsets[shnum - 1] ?? 0, strtabOffset, strtab.length);
  header.writeBigUInt64LE(BigInt(segments.length ? phoff : 0), 0x20);
  header.writeBigUInt64LE(BigInt(shoff), 0x28);
  header.writeUInt16LE(56, 0x36);
  header.writeUInt16LE(segments.length, 0x38);
  header.writeUInt16LE(64, 0x3a);
  header.writeUInt16LE(shnum, 0x3c);
  header.writeUInt16LE(shnum - 1, 0x3e);
  return Buffer.concat([header, phdrs, ...blobs, shdrs]);
}

function note(name: string, type: number, desc: Buffer): Buffer {
  const pad = (b: Buffer) => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
  const head = Buffer.alloc(12);
  head.writeUInt32LE(name.length + 1, 0);
  head.writeUInt32LE(desc.length, 4);
  head.writeUInt32LE(type, 8);
  return Buffer.concat([head, pad(Buffer.from(name + '\0', 'latin1')), pad(desc)]);
}

describe('findXzStreamOffset', () => {
  const magic = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];

  it('finds the XZ header inside a bzImage-like blob', () => {
    const blob = Buffer.concat([Buffer.alloc(21196, 0x90), Buffer.from(magic), Buffer.alloc(100, 1)]);
    expect(findXzStreamOffset(blob)).toBe(21196);
  });

  it('continues after a given offset and reports -1 when absent', () => {
    const blob = Buffer.concat([Buffer.from(magic), Buffer.alloc(7), Buffer.from(magic)]);
    expect(findXzStreamOffset(blob, 1)).toBe(13);
    expect(findXzStreamOffset(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x01]))).toBe(-1);
  });

  it('respects the view of a Uint8Array into a larger buffer', () => {
    const big = Buffer.concat([Buffer.from(magic), Buffer.alloc(10), Buffer.from(magic)]);
    expect(findXzStreamOffset(big.subarray(3))).toBe(13);
  });
});

describe('ELF helpers', () => {
  it('recognises the ELF magic', () => {
    expect(isElf(Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2]))).toBe(true);
    expect(isElf(Buffer.from('MZ\x90\x00'))).toBe(false);
    expect(isElf(Buffer.alloc(2))).toBe(false);
  });

  it('reads a named section and the modinfo depends field', () => {
    const modinfo = Buffer.from(
      'license=GPL\0depends=virtio_ring,virtio,net-failover\0intree=Y\0name=virtio_net\0',
      'latin1',
    );
    const elf = makeElf([
      { name: '.text', data: Buffer.alloc(32, 0xcc) },
      { name: '.modinfo', data: modinfo },
    ]);
    const section = elfSection(elf, '.modinfo');
    expect(section?.equals(modinfo)).toBe(true);
    expect(parseModinfoDepends(section ?? Buffer.alloc(0))).toEqual(['virtio_ring', 'virtio', 'net_failover']);
    expect(elfSection(elf, '.missing')).toBeUndefined();
    expect(
      elfSection(Buffer.from('not an elf at all, not at all.................................'), '.modinfo'),
    ).toBeUndefined();
  });

  it('treats an empty depends= as no dependencies', () => {
    expect(parseModinfoDepends(Buffer.from('depends=\0name=crc16\0'))).toEqual([]);
    expect(parseModinfoDepends(Buffer.from('name=crc16\0'))).toEqual([]);
  });

  it('finds the program interpreter of a dynamic executable only', () => {
    const dynamic = makeElf([], [{ type: 3, data: Buffer.from('/lib64/ld-linux-x86-64.so.2\0') }]);
    const stat = makeElf([], [{ type: 1, data: Buffer.alloc(16) }]);
    expect(elfInterpreter(dynamic)).toBe('/lib64/ld-linux-x86-64.so.2');
    expect(elfInterpreter(stat)).toBeUndefined();
  });

  it('detects the Xen PVH entry note', () => {
    const entry = Buffer.alloc(4);
    const pvh = makeElf(
      [],
      [{ type: 4, data: Buffer.concat([note('GNU', 3, Buffer.alloc(20)), note('Xen', 18, entry)]) }],
    );
    const other = makeElf(
      [],
      [{ type: 4, data: Buffer.concat([note('GNU', 3, Buffer.alloc(20)), note('Xen', 17, entry)]) }],
    );
    expect(hasPvhNote(pvh)).toBe(true);
    expect(hasPvhNote(other)).toBe(false);
  });
});
