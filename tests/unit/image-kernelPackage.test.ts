import { describe, expect, it } from 'vitest';
import { parseKernelPackage } from '../../src/backends/qemu/image/kernelPackage.js';

// Captured on Debian bookworm: `apt-cache show --no-all-versions linux-image-amd64`.
const APT_CACHE_SHOW = `Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Installed-Size: 13
Maintainer: Debian Kernel Team <debian-kernel@lists.debian.org>
Architecture: amd64
Provides: linux-image-generic, linux-latest-modules-6.1.0-56-amd64, virtualbox-guest-modules, wireguard-modules (= 1.0.0)
Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
Description: Linux for 64-bit PCs (meta-package)
Description-md5: 6a25122b463a5515998ee600e16b3daf
Homepage: https://www.kernel.org/
Built-Using: linux (= 6.1.192-2)
Section: kernel
Priority: optional
Filename: pool/updates/main/l/linux-signed-amd64/linux-image-amd64_6.1.192-2_amd64.deb
Size: 1480
SHA256: 45457bcfc86c87585800b5656bdf2773b063a3bb95486b0e820d51e870491f8d

`;

describe('parseKernelPackage', () => {
  it('reads the versioned kernel package from the metapackage stanza', () => {
    expect(parseKernelPackage(APT_CACHE_SHOW)).toEqual({ name: 'linux-image-6.1.0-56-amd64', version: '6.1.192-2' });
  });

  it('uses only the first stanza when apt-cache lists several versions', () => {
    const older = APT_CACHE_SHOW.replaceAll('6.1.0-56', '6.1.0-50').replaceAll('6.1.192-2', '6.1.176-1');
    expect(parseKernelPackage(APT_CACHE_SHOW + older)?.version).toBe('6.1.192-2');
    expect(parseKernelPackage(older + APT_CACHE_SHOW)?.name).toBe('linux-image-6.1.0-50-amd64');
  });

  it('skips non-kernel dependencies and alternatives without a pinned version', () => {
    const text =
      'Package: linux-image-amd64\nDepends: initramfs-tools | linux-initramfs-tool, linux-image-6.1.0-9-amd64 (= 6.1.27-1)\n';
    expect(parseKernelPackage(text)).toEqual({ name: 'linux-image-6.1.0-9-amd64', version: '6.1.27-1' });
  });

  it('returns undefined when apt knows no candidate', () => {
    expect(parseKernelPackage('')).toBeUndefined();
    expect(parseKernelPackage('N: Can not select candidate version\n')).toBeUndefined();
    expect(parseKernelPackage('Package: linux-image-amd64\nDepends: linux-image-6.1.0-56-amd64\n')).toBeUndefined();
  });
});
