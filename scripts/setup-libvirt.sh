#!/usr/bin/env bash
# Gives this machine a running libvirt (qemu:///system) without systemd: the Debian packages,
# the users and groups libvirt-daemon-system would have added, its directories, then virtlogd
# and libvirtd as plain daemons. Safe to run again: each step skips what is already there and
# says what it did. Needs root (CI runs as root); see /work/shared/facts-libvirt.md.
set -euo pipefail

PACKAGES=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients passt openssh-server)

if [[ $(id -u) != 0 ]]; then
  echo "setup-libvirt.sh needs root (it installs packages and starts the system daemons)" >&2
  exit 1
fi

missing=()
for tool in virsh libvirtd virtlogd passt sshd; do
  command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] || missing+=("$tool")
done
if ((${#missing[@]})); then
  command -v apt-get >/dev/null 2>&1 || {
    echo "missing: ${missing[*]}; install libvirt (daemon, QEMU driver, clients), passt and an sshd" >&2
    exit 1
  }
  echo "==> installing ${PACKAGES[*]} (missing: ${missing[*]})"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
else
  echo "==> libvirt packages present"
fi

# libvirtd refuses to start without the libvirt-qemu user and group (libvirt-daemon-system,
# which normally adds them, also pulls in systemd units we cannot use here).
for group in kvm libvirt libvirt-qemu; do
  if ! getent group "$group" >/dev/null; then
    groupadd -r "$group"
    echo "==> added group $group"
  fi
done
if ! getent passwd libvirt-qemu >/dev/null; then
  useradd -r -g kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
  echo "==> added user libvirt-qemu"
fi
mkdir -p /var/log/libvirt /var/run/libvirt /var/lib/libvirt/qemu

# libvirt probes QEMU's capabilities and caches them; when its QEMU user (libvirt-qemu)
# cannot open /dev/kvm while the daemon (root) can, it decides "KVM was enabled when probing,
# but it is not available now", throws the cache away and probes again on every define or
# start (30-60 s each here). So libvirt-qemu joins the group that owns /dev/kvm, by its id
# (a package's postinst may have given it an id with another name, or none, on this host),
# or, when only root may open it, /dev/kvm gets the group and mode udev would give it.
kvm_changed=0
if [[ -e /dev/kvm ]] && ! runuser -u libvirt-qemu -- test -r /dev/kvm -a -w /dev/kvm 2>/dev/null; then
  kvm_gid=$(stat -c %g /dev/kvm)
  if [[ $kvm_gid != 0 && $(stat -c %a /dev/kvm) == ?6? ]]; then
    kvm_group=$(getent group "$kvm_gid" | cut -d: -f1)
    if [[ -z $kvm_group ]]; then
      kvm_group=kvm-dev
      groupadd -r -g "$kvm_gid" "$kvm_group"
    fi
    usermod -aG "$kvm_group" libvirt-qemu
    kvm_changed=1
    echo "==> libvirt-qemu joins group $kvm_group (gid $kvm_gid, owner of /dev/kvm)"
  elif [[ $kvm_gid == 0 ]]; then
    # root-only (no udev on this machine to apply its rule): give it what systemd's udev rule
    # gives it on a Debian host, group kvm and mode 0666 (50-udev-default.rules), rather than
    # put libvirt's QEMU user in group root.
    chgrp kvm /dev/kvm
    chmod 0666 /dev/kvm
    kvm_changed=1
    echo "==> /dev/kvm was root-only: now $(stat -c '%U:%G %a' /dev/kvm), as udev's default rule sets it"
  else
    echo "warning: libvirt-qemu cannot open /dev/kvm ($(stat -c '%U:%G %a' /dev/kvm)); libvirt will probe QEMU again on every define" >&2
  fi
fi

# A daemon runs when its pid file names a live process (a stale file from a killed daemon
# does not count: the daemon rewrites it on start).
running() {
  local pidfile=$1 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# virtlogd first: without it domain start fails on /run/libvirt/virtlogd-sock.
if running /var/run/virtlogd.pid || running /var/run/libvirt/virtlogd.pid; then
  echo "==> virtlogd already running"
else
  virtlogd -d
  echo "==> started virtlogd"
fi
# libvirtd reads its QEMU user's groups when it starts: after a join, a running one restarts.
# The pid in whichever pid file names the live daemon (the other may be stale).
libvirtd_pid() {
  local f
  for f in /var/run/libvirtd.pid /var/run/libvirt/libvirtd.pid; do
    if running "$f"; then
      cat "$f"
      return
    fi
  done
}
if running /var/run/libvirtd.pid || running /var/run/libvirt/libvirtd.pid; then
  if ((kvm_changed)); then
    pid=$(libvirtd_pid)
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    libvirtd -d
    echo "==> restarted libvirtd (its QEMU user's access to /dev/kvm changed)"
  else
    echo "==> libvirtd already running"
  fi
else
  libvirtd -d
  echo "==> started libvirtd"
fi

# A fresh daemon probes QEMU's capabilities before it answers: slow on a loaded machine.
deadline=$((SECONDS + 90))
while ((SECONDS < deadline)); do
  if version=$(virsh -c qemu:///system version 2>/dev/null); then
    echo "==> qemu:///system answers:"
    printf '%s\n' "$version" | sed -n 's/^Using \(.*\)$/    \1/p; s/^Running hypervisor: \(.*\)$/    hypervisor \1/p'
    exit 0
  fi
  sleep 0.5
done
echo "libvirtd is running but qemu:///system did not answer within 90 s:" >&2
virsh -c qemu:///system version >&2 || true
exit 1
