#!/usr/bin/env bash
# Installs everything localvm needs on this machine, then builds the package and the
# embedded `tiny` guest image. Safe to run again: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(qemu-system-x86 qemu-utils busybox-static qemu-guest-agent cpio xz-utils genisoimage openssh-client)

missing=()
# ssh and ssh-keygen: the SSH transport of cloud-image VMs.
for tool in qemu-system-x86_64 qemu-img busybox qemu-ga cpio xz ssh ssh-keygen; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
# The cloud-init seed is an ISO image: any one of these tools writes it.
command -v xorriso >/dev/null 2>&1 || command -v genisoimage >/dev/null 2>&1 || command -v mkisofs >/dev/null 2>&1 ||
  missing+=(genisoimage)
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${PACKAGES[*]} (missing: ${missing[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
  elif command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${missing[*]}. Install them with:" >&2
    echo "  sudo apt-get install --no-install-recommends ${PACKAGES[*]}" >&2
    exit 1
  elif [[ $(uname) == Darwin ]]; then
    echo "missing: ${missing[*]}. On macOS: brew install qemu (the tiny image is built on Debian; use your own qcow2 image or OrbStack)" >&2
    exit 1
  else
    echo "missing: ${missing[*]}. Install QEMU (qemu-system-x86_64, qemu-img), busybox (static), qemu-guest-agent, cpio, xz and an ISO tool (xorriso or genisoimage) with your package manager." >&2
    exit 1
  fi
fi
# The tiny image's kernel comes from Debian's package lists: make sure they exist.
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1 && ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  apt-get update -qq
fi

# A C compiler with a static C library builds the identity program that templates park in
# their guest (src/backends/qemu/template/identity.c); musl makes it ~45 KB. Optional:
# without one templates use the shell helper, and clones take ~70 ms longer.
CC_PACKAGES=(musl-tools gcc libc6-dev)
if ! command -v musl-gcc >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${CC_PACKAGES[*]} (for the templates' identity program)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${CC_PACKAGES[@]}" >/dev/null
  else
    echo "note: no C compiler with a static C library (Debian: ${CC_PACKAGES[*]}); templates will use the slower shell helper" >&2
  fi
fi

# The Debian guest images of the distro test tier (scripts/build-debian-image.sh) need root
# and these tools; .ci/run builds them. Elsewhere they are optional: those tests skip.
DISTRO_PACKAGES=(debootstrap fdisk e2fsprogs util-linux)
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1 && ! { command -v debootstrap && command -v sfdisk; } >/dev/null 2>&1; then
  echo "==> installing ${DISTRO_PACKAGES[*]} (for the Debian test images)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${DISTRO_PACKAGES[@]}" >/dev/null
fi

if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "==> npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "==> build"
npm run --silent build
echo "==> tiny guest image"
node dist/cli/main.js image build
