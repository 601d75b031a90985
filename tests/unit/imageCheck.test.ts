/**
 * The disk-image verdict (issue 10, defect 5: `--image /etc/passwd` booted as a raw disk).
 * The qcow2 and ext4 heads are real bytes (tests/fixtures/captured/README.md says how they
 * were made); MBR and GPT are laid out by hand after their specifications.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkImageBytes, IMAGE_HEAD_BYTES, MIN_RAW_BYTES } from '../../src/backends/qemu/imageCheck.js';

const captured = (file: string) => readFileSync(join(import.meta.dirname, '../fixtures/captured', file));
const MiB = 1024 * 1024;

/** `bytes` placed at `offset` in a zeroed head of IMAGE_HEAD_BYTES. */
function head(...parts: [number, number[] | string][]): Buffer {
  const b = Buffer.alloc(IMAGE_HEAD_BYTES);
  for (const [offset, bytes] of parts)
    Buffer.from(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes).copy(b, offset);
  return b;
}

/** An MBR with one Linux partition (type 0x83) from sector 2048, and the 0x55AA signature. */
const mbr = (): Buffer => {
  const b = head([510, [0x55, 0xaa]]);
  b.writeUInt8(0x83, 446 + 4);
  b.writeUInt32LE(2048, 446 + 8);
  b.writeUInt32LE(20_000, 446 + 12);
  return b;
};

describe('checkImageBytes', () => {
  it('accepts a qcow2 made by qemu-img, whatever its size', () => {
    expect(checkImageBytes(captured('qcow2-64M.head.bin'), 196_616)).toEqual({
      ok: true,
      format: 'qcow2',
      found: 'a qcow2 (v3) image',
    });
  });

  it('accepts raw disks that look like disks: ext4 by mke2fs, MBR, GPT, blank', () => {
    const ext4 = Buffer.concat([captured('ext4-4M.head.bin'), Buffer.alloc(IMAGE_HEAD_BYTES - 2048)]);
    expect(checkImageBytes(ext4, 4 * MiB)).toMatchObject({
      ok: true,
      format: 'raw',
      found: expect.stringMatching(/ext2\/3\/4/),
    });
    expect(checkImageBytes(mbr(), 10 * MiB)).toMatchObject({
      ok: true,
      format: 'raw',
      found: expect.stringMatching(/MBR/),
    });
    const gpt = mbr();
    gpt.write('EFI PART', 512, 'latin1');
    expect(checkImageBytes(gpt, 10 * MiB)).toMatchObject({
      ok: true,
      format: 'raw',
      found: expect.stringMatching(/GPT/),
    });
    expect(checkImageBytes(Buffer.alloc(IMAGE_HEAD_BYTES), MIN_RAW_BYTES)).toMatchObject({ ok: true, format: 'raw' });
    const superblocks: [Buffer, RegExp][] = [
      [head([0, 'XFSB']), /XFS/],
      [head([0x10040, '_BHRfS_M']), /btrfs/],
      [head([0, 'hsqs']), /squashfs/],
      [head([0x8001, 'CD001']), /ISO 9660/],
      [head([512, 'LABELONE']), /LVM/],
    ];
    for (const [bytes, found] of superblocks) {
      expect(checkImageBytes(bytes, 8 * MiB)).toMatchObject({
        ok: true,
        format: 'raw',
        found: expect.stringMatching(found),
      });
    }
  });

  it('refuses a text file such as /etc/passwd, without quoting it', () => {
    const passwd = Buffer.from('root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n');
    const small = checkImageBytes(passwd, passwd.length);
    expect(small).toMatchObject({
      ok: false,
      found: `a text file of ${passwd.length} bytes (a raw disk is at least 1 MiB)`,
    });
    // Padded to a disk's size it is still not a disk: nothing at its start says so.
    const big = checkImageBytes(Buffer.concat([passwd, Buffer.alloc(IMAGE_HEAD_BYTES - passwd.length)]), 2 * MiB);
    expect(big).toMatchObject({ ok: false, found: 'no partition table or known file system (a text file)' });
    expect(JSON.stringify([small, big])).not.toContain('root');
  });

  it('refuses a disk of part-sectors, an empty file, random data, and too small a disk', () => {
    expect(checkImageBytes(mbr(), 10 * MiB + 1)).toMatchObject({
      ok: false,
      found: expect.stringMatching(/not a whole number of 512-byte sectors/),
    });
    expect(checkImageBytes(Buffer.alloc(0), 0)).toMatchObject({ ok: false, found: 'an empty file' });
    const noise = head([0, [0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]]);
    expect(checkImageBytes(noise, 4 * MiB)).toMatchObject({
      ok: false,
      found: expect.stringContaining('deadbeef01020304'),
    });
    expect(checkImageBytes(mbr(), 64 * 1024)).toMatchObject({
      ok: false,
      found: expect.stringMatching(/at least 1 MiB/),
    });
  });

  it('names the formats and files it refuses, and says what to do', () => {
    const cases: [Buffer, RegExp, RegExp][] = [
      [head([0, 'KDMV']), /VMDK/, /qemu-img convert/],
      [head([0, 'vhdxfile']), /VHDX/, /qemu-img convert/],
      [head([0, [0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 1]]), /qcow image of version 1/, /qemu-img convert/],
      [head([0, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]]), /xz-compressed/, /unxz/],
      [head([0, [0x1f, 0x8b, 8]]), /gzip/, /gunzip/],
      [head([257, 'ustar']), /tar archive/, /tar -xf/],
      [head([0, '\x7fELF']), /ELF executable/, /kernel/],
    ];
    for (const [bytes, found, hint] of cases) {
      const v = checkImageBytes(bytes, 8 * MiB);
      expect(v.ok, String(found)).toBe(false);
      expect(v).toMatchObject({ found: expect.stringMatching(found), hint: expect.stringMatching(hint) });
    }
  });
});
