#!/usr/bin/env bash
# Builds a Debian bookworm guest disk image from Debian's own packages, as a stand-in for a
# distribution's cloud image: systemd, cloud-init (NoCloud), openssh-server, the stock kernel,
# GRUB on the disk (booted by SeaBIOS), serial console on ttyS0, no password logins.
#
#   scripts/build-debian-image.sh [--force] [--print-path] [agent|noagent|all]
#
# Variants: `agent` adds qemu-guest-agent, `noagent` is without it (like stock cloud images).
# Output: $LOCALVM_CACHE/images/debian-bookworm-<variant>-<hash>.qcow2, where <hash> covers
# this script, the suite and the package list; an image that is already there is not rebuilt.
# --print-path prints the path(s) and builds nothing. Needs root (debootstrap, loop devices).
# Packages come from the Debian mirror that /etc/apt's sources name (override: DEBIAN_MIRROR).
set -euo pipefail

SUITE=bookworm
DISK_SIZE=2G
# What every variant gets on top of debootstrap's minbase. The stock kernel (linux-image-amd64)
# and GRUB for BIOS make the image boot from its own disk, as a cloud image does.
PACKAGES=(
  systemd systemd-sysv udev dbus
  linux-image-amd64 grub-pc
  cloud-init cloud-guest-utils
  openssh-server sudo
  iproute2 netbase procps
  util-linux fdisk e2fsprogs zstd
)
AGENT_PACKAGES=(qemu-guest-agent)

usage() {
  echo "usage: $0 [--force] [--print-path] [agent|noagent|all]" >&2
  exit 2
}

force=0
print_only=0
variants=()
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --print-path) print_only=1 ;;
    agent | noagent) variants+=("$arg") ;;
    all) variants+=(agent noagent) ;;
    -h | --help) usage ;;
    *)
      echo "unknown argument: $arg" >&2
      usage
      ;;
  esac
done
((${#variants[@]})) || variants=(agent noagent)

script_path="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

# The same cache directory as src/config.ts: LOCALVM_CACHE, else $XDG_CACHE_HOME/localvm
# (only when absolute), else ~/.cache/localvm.
cache_dir() {
  if [[ -n ${LOCALVM_CACHE:-} ]]; then
    realpath -m -- "$LOCALVM_CACHE"
  elif [[ ${XDG_CACHE_HOME:-} == /* ]]; then
    echo "$XDG_CACHE_HOME/localvm"
  else
    echo "${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache/localvm"
  fi
}
IMAGES_DIR="$(cache_dir)/images"

variant_packages() {
  local variant=$1
  if [[ $variant == agent ]]; then
    echo "${PACKAGES[*]} ${AGENT_PACKAGES[*]}"
  else
    echo "${PACKAGES[*]}"
  fi
}

# Content key: this script (which holds every setting), the suite, the variant's packages.
image_hash() {
  local variant=$1
  {
    printf 'suite\0%s\0variant\0%s\0packages\0%s\0script\0' "$SUITE" "$variant" "$(variant_packages "$variant")"
    cat -- "$script_path"
  } | sha256sum | cut -c1-16
}

image_path() {
  echo "$IMAGES_DIR/debian-$SUITE-$1-$(image_hash "$1").qcow2"
}

if ((print_only)); then
  for v in "${variants[@]}"; do image_path "$v"; done
  exit 0
fi

# The first Debian mirror in the apt sources that serves $SUITE (deb822 .sources files and
# one-line sources.list alike), so the build uses whatever mirror this machine is set up for.
find_mirror() {
  if [[ -n ${DEBIAN_MIRROR:-} ]]; then
    echo "$DEBIAN_MIRROR"
    return
  fi
  local f
  shopt -s nullglob
  for f in /etc/apt/sources.list.d/*.sources; do
    awk -v suite="$SUITE" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "") { split(uris, u, " "); print u[1]; found = 1; exit }
        types = ""; uris = ""; suites = ""
      }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]*#/ { next }
      tolower($1) == "types:" { $1 = ""; types = $0 }
      tolower($1) == "uris:" { $1 = ""; uris = $0 }
      tolower($1) == "suites:" { $1 = ""; suites = $0 }
      END { if (!found) flush() }
    ' "$f"
  done | head -n1 | grep . && return
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    # deb [options] URI suite components...
    sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }'
  done | head -n1 | grep . && return
  echo "no apt source for $SUITE found in /etc/apt; set DEBIAN_MIRROR" >&2
  return 1
}

need_root_tools() {
  if [[ $(id -u) != 0 ]]; then
    echo "building the Debian image needs root (debootstrap, loop devices, mounts)" >&2
    exit 1
  fi
  local tool missing=()
  for tool in debootstrap sfdisk losetup partx mkfs.ext4 qemu-img flock fstrim; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    echo "missing: ${missing[*]} (apt-get install debootstrap fdisk e2fsprogs util-linux qemu-utils)" >&2
    exit 1
  fi
}

# State for the cleanup trap: whatever is set up is torn down on any exit, in reverse order.
WORK=""
LOOP=""
MOUNTS=()
# The chroot sees the host's /dev (bind-mounted), and a guest package's install script chgrps
# /dev/kvm to the chroot's kvm group id (on the host another group, or none) and makes it
# 0660. That cut libvirt's QEMU user off /dev/kvm, and libvirt then probed QEMU's
# capabilities again on every define (30-60 s each here). Whatever /dev/kvm was is put back.
KVM_WAS=""
if [[ -e /dev/kvm ]]; then KVM_WAS="$(stat -c '%u:%g %a' /dev/kvm)"; fi
restore_kvm() {
  [[ -n $KVM_WAS && -e /dev/kvm ]] || return 0
  [[ "$(stat -c '%u:%g %a' /dev/kvm)" == "$KVM_WAS" ]] && return 0
  chown "${KVM_WAS% *}" /dev/kvm && chmod "${KVM_WAS#* }" /dev/kvm &&
    echo "==> /dev/kvm put back to ${KVM_WAS} (uid:gid mode) after the guest's packages changed it"
}
cleanup() {
  local i
  restore_kvm || true
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || true
  done
  MOUNTS=()
  if [[ -n $LOOP ]]; then
    losetup -d "$LOOP" 2>/dev/null || true
    LOOP=""
  fi
  if [[ -n $WORK ]]; then
    rm -rf -- "$WORK"
    WORK=""
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mount_at() {
  mount "$@"
  MOUNTS+=("${*: -1}")
}

in_chroot() {
  LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive chroot "$ROOT" "$@"
}

# Waits for the partition's device node: devtmpfs usually makes it at once, partx asks again.
partition_of() {
  local loop=$1 part="${1}p1" i
  for i in $(seq 1 50); do
    [[ -b $part ]] && { echo "$part"; return; }
    ((i == 10)) && partx -a "$loop" 2>/dev/null || true
    sleep 0.1
  done
  echo "no partition device $part appeared for $loop" >&2
  return 1
}

build_variant() {
  local variant=$1 out
  out="$(image_path "$variant")"
  if [[ -f $out ]] && ((!force)); then
    echo "==> $out is up to date"
    return
  fi
  local started=$SECONDS mirror
  mirror="$(find_mirror)"
  echo "==> building $(basename "$out") from $mirror"
  WORK="$(mktemp -d "$IMAGES_DIR/.tmp-debian-$variant-XXXXXX")"
  ROOT="$WORK/root"
  local raw="$WORK/disk.raw"
  mkdir -p "$ROOT"

  # One MBR partition from 1 MiB to the end of the disk: GRUB's core image fits in the gap,
  # and cloud-init's growpart can grow the partition when the VM's overlay is larger.
  truncate -s "$DISK_SIZE" "$raw"
  printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk --quiet "$raw"
  LOOP="$(losetup --show -f -P "$raw")"
  local part uuid
  part="$(partition_of "$LOOP")"
  # GRUB 2.06 reads neither metadata_csum_seed nor orphan_file.
  mkfs.ext4 -q -L root -O '^metadata_csum_seed,^orphan_file' "$part"
  uuid="$(blkid -s UUID -o value "$part")"
  mount_at "$part" "$ROOT"

  # No docs, man pages or translations in the image (as minimal cloud images do).
  mkdir -p "$ROOT/etc/dpkg/dpkg.cfg.d"
  cat >"$ROOT/etc/dpkg/dpkg.cfg.d/01-localvm-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF

  echo "--> debootstrap ($((SECONDS - started)) s)"
  debootstrap --variant=minbase --components=main "$SUITE" "$ROOT" "$mirror"

  mount_at -t proc proc "$ROOT/proc"
  mount_at -t sysfs sys "$ROOT/sys"
  mount_at --bind /dev "$ROOT/dev"
  mount_at --bind /dev/pts "$ROOT/dev/pts"
  mount_at -t tmpfs tmpfs "$ROOT/run"
  # Nothing starts inside the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
  chmod 0755 "$ROOT/usr/sbin/policy-rc.d"

  cat >"$ROOT/etc/fstab" <<EOF
UUID=$uuid / ext4 errors=remount-ro 0 1
EOF
  echo debian >"$ROOT/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 debian\n::1 localhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
  # GRUB: no menu wait, its output and the kernel's on the serial port.
  mkdir -p "$ROOT/etc/default/grub.d"
  cat >"$ROOT/etc/default/grub.d/50-localvm.cfg" <<'EOF'
GRUB_TIMEOUT=0
GRUB_TIMEOUT_STYLE=hidden
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0,115200n8"
GRUB_TERMINAL="serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
EOF
  in_chroot debconf-set-selections <<'EOF'
grub-pc grub-pc/install_devices multiselect
grub-pc grub-pc/install_devices_empty boolean true
cloud-init cloud-init/datasources multiselect NoCloud, None
EOF

  local packages
  read -r -a packages <<<"$(variant_packages "$variant")"
  echo "--> packages ($((SECONDS - started)) s)"
  in_chroot apt-get install -y -q --no-install-recommends "${packages[@]}"

  # BIOS boot from this disk: GRUB's boot sector in the MBR, its core image after it.
  in_chroot grub-install --target=i386-pc --no-floppy "$LOOP"
  in_chroot update-grub
  # grub-mkconfig names the build's loop device when /dev/disk/by-uuid is missing (no udev
  # here); the guest must find its root by UUID. In the guest, update-grub writes UUIDs itself.
  sed -i "s|root=$part |root=UUID=$uuid |g" "$ROOT/boot/grub/grub.cfg"
  if grep -q "$LOOP" "$ROOT/boot/grub/grub.cfg"; then
    echo "grub.cfg still names the build's loop device $LOOP" >&2
    exit 1
  fi

  # cloud-init: the NoCloud seed (or nothing); the default user has no password.
  cat >"$ROOT/etc/cloud/cloud.cfg.d/90_dpkg.cfg" <<'EOF'
datasource_list: [ NoCloud, None ]
EOF
  cat >"$ROOT/etc/cloud/cloud.cfg.d/50-localvm.cfg" <<'EOF'
disable_root: true
ssh_pwauth: false
# The only locale without the locales package (cloud-init's en_US.UTF-8 would fail its locale module).
locale: C.UTF-8
EOF
  # No password logins at all: root locked, sshd takes keys only.
  in_chroot passwd -l root
  mkdir -p "$ROOT/etc/ssh/sshd_config.d"
  printf 'PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\n' \
    >"$ROOT/etc/ssh/sshd_config.d/50-localvm.conf"
  # Every VM gets its own host keys (cloud-init makes them); sshd makes any still missing.
  rm -f "$ROOT"/etc/ssh/ssh_host_*
  mkdir -p "$ROOT/etc/systemd/system/ssh.service.d"
  printf '[Service]\nExecStartPre=/usr/bin/ssh-keygen -A\n' >"$ROOT/etc/systemd/system/ssh.service.d/50-localvm-hostkeys.conf"

  # DHCP on the first NIC even before (or without) cloud-init's network config.
  cat >"$ROOT/etc/systemd/network/90-localvm-dhcp.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=yes
EOF
  in_chroot systemctl enable systemd-networkd.service ssh.service
  in_chroot systemctl enable serial-getty@ttyS0.service

  # Each boot of a copy is a new machine; nothing cached from the build stays.
  : >"$ROOT/etc/machine-id"
  rm -f "$ROOT/var/lib/dbus/machine-id" "$ROOT/usr/sbin/policy-rc.d"
  in_chroot apt-get clean
  rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/lib/cloud/* \
    "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/* "$ROOT"/tmp/* "$ROOT"/root/.bash_history

  local kernel
  kernel="$(basename "$(ls -1 "$ROOT"/boot/vmlinuz-* | sort -V | tail -n1)")"
  # Freed blocks become holes in the raw file, so the qcow2 holds only what is in use.
  fstrim "$ROOT" >/dev/null || true
  cleanup_mounts_keep_work

  echo "--> qcow2 ($((SECONDS - started)) s)"
  qemu-img convert -q -c -f raw -O qcow2 "$raw" "$WORK/out.qcow2"
  chmod 0644 "$WORK/out.qcow2"
  mv -f -- "$WORK/out.qcow2" "$out"
  rm -rf -- "$WORK"
  WORK=""
  echo "==> $out ($(du -h --apparent-size "$out" | cut -f1), ${kernel#vmlinuz-}, $((SECONDS - started)) s)"
}

# Unmounts and detaches the loop device but keeps the work directory (the raw disk in it).
cleanup_mounts_keep_work() {
  local work=$WORK
  WORK=""
  cleanup
  WORK=$work
}

need_root_tools
mkdir -p "$IMAGES_DIR"
# One builder at a time per cache: a second one waits, then finds the image built.
exec {lock_fd}>"$IMAGES_DIR/.debian-build.lock"
flock "$lock_fd"
for v in "${variants[@]}"; do build_variant "$v"; done
