/**
 * The embedded default guest image `tiny`. Every process goes through the injected
 * CommandRunner; the parsers and ELF/XZ helpers in this folder are pure and unit-tested.
 *
 * - build.ts: the build itself and its content key inputs
 * - kernelPackage.ts: which Debian kernel, downloaded and unpacked
 * - vmlinux.ts, elf.ts: the PVH-bootable ELF inside the bzImage
 * - modules.ts: which kernel modules, in dependency order
 * - initramfs.ts, init.ts: busybox, qemu-ga and the /init scripts, as a gzipped cpio
 * - cache.ts: content hash, finding and listing images, atomic publish
 */
export { buildTinyImage, TINY_APPEND, type BuildOptions } from './build.js';
export { findTinyImage, listImages, type ImageEntry, type TinyImage } from './cache.js';
