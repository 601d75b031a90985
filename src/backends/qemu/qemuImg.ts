/**
 * `qemu-img` command builders (create, info, snapshot). Pure: no I/O, never a shell string.
 */
import { invalid, positional } from '../../argv.js';
import type { Command } from '../../runner.js';
import { imageFormat, optionValue, positiveInt, type ImageFormat } from './cmdline.js';

export interface QemuImgBuilders {
  create(o: {
    path: string;
    size?: number;
    format?: ImageFormat;
    backing?: { path: string; format: ImageFormat };
  }): Command;
  info(path: string): Command;
  snapshot(o: { path: string; op: 'create' | 'list' | 'apply' | 'delete'; name?: string }): Command;
  convert(o: { src: string; dst: string; srcFormat?: string; dstFormat: ImageFormat }): Command;
  commit(path: string): Command;
  /** Grows `path` to `size` bytes (qemu-img refuses to shrink without --shrink, which is never passed). */
  resize(o: { path: string; size: number; format: ImageFormat }): Command;
}

/** An image path for qemu-img: a positional (no leading "-") that QEMU can later use in `-drive file=`. */
function imagePath(property: string, value: string): string {
  return positional(property, optionValue(property, value));
}

const SNAPSHOT_FLAGS = { create: '-c', list: '-l', apply: '-a', delete: '-d' } as const;

/** Builders for `qemu-img` invoked as `binary` (default `qemu-img`). */
export function createQemuImg(binary = 'qemu-img'): QemuImgBuilders {
  return {
    create(o) {
      const args = ['create', '-f', imageFormat('format', o.format ?? 'qcow2')];
      if (o.backing !== undefined)
        // -F is mandatory since QEMU 6.1: probing a backing file's format is unsafe.
        args.push(
          '-b',
          imagePath('backing.path', o.backing.path),
          '-F',
          imageFormat('backing.format', o.backing.format),
        );
      args.push(imagePath('path', o.path));
      if (o.size !== undefined) args.push(positiveInt('size', o.size));
      else if (o.backing === undefined) throw invalid('size', 'is required without a backing file');
      return { file: binary, args };
    },
    info(path) {
      // --force-share reads an image a running QEMU holds locked; the result may be stale.
      return { file: binary, args: ['info', '--output=json', '--force-share', imagePath('path', path)] };
    },
    snapshot(o) {
      const flag = SNAPSHOT_FLAGS[o.op];
      if (flag === undefined) throw invalid('op', 'must be create, list, apply or delete');
      const path = imagePath('path', o.path);
      if (o.op === 'list') return { file: binary, args: ['snapshot', flag, path] };
      if (typeof o.name !== 'string' || o.name.length === 0) throw invalid('name', `is required to ${o.op} a snapshot`);
      return { file: binary, args: ['snapshot', flag, o.name, path] };
    },
    convert(o) {
      const args = ['convert'];
      if (o.srcFormat !== undefined) args.push('-f', positional('srcFormat', o.srcFormat));
      args.push('-O', imageFormat('dstFormat', o.dstFormat), imagePath('src', o.src), imagePath('dst', o.dst));
      return { file: binary, args };
    },
    commit(path) {
      return { file: binary, args: ['commit', imagePath('path', path)] };
    },
    resize(o) {
      return {
        file: binary,
        args: ['resize', '-f', imageFormat('format', o.format), imagePath('path', o.path), positiveInt('size', o.size)],
      };
    },
  };
}

/** `qemu-img` command builders (the binary found on PATH as `qemu-img`). */
export const qemuImg: QemuImgBuilders = createQemuImg();
