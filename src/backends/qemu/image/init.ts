/**
 * The text of the `tiny` guest's /init and helper scripts. They are part of the image's
 * content hash, so any edit here rebuilds the image on the next `buildTinyImage`.
 * `@EARLY_MODULES@` and `@LATE_MODULES@` are replaced by dependency-ordered module names.
 */

/** Where the tiny guest keeps its kernel modules (flat, uncompressed `<name>.ko`). */
export const GUEST_MODULE_DIR = '/lib/modules';

/** The virtio-serial port name qemu-ga listens on. */
export const GUEST_AGENT_PORT = 'org.qemu.guest_agent.0';

// PID 1 until busybox init takes over. The kernel found no /dev/console in the archive (we
// pack it unprivileged, so no device nodes), hence the redirect once devtmpfs is mounted.
const INIT = `#!/bin/sh
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mkdir -p /run/qga
hostname -F /etc/hostname
ip link set lo up
# The agent's port must exist before busybox init starts qemu-ga, and the power button must
# be heard once the agent answers (acpid opens only the input devices present when it starts).
for m in @EARLY_MODULES@; do insmod ${GUEST_MODULE_DIR}/$m.ko; done
# Daemonized acpid logs to /var/log/acpid.log and dies if it cannot open it.
acpid -c /etc/acpi -l /run/acpid.log
/sbin/vport-links
# Disks, network and entropy are not needed for the first agent answer: load them while
# the agent starts, so they do not delay readiness.
(
  for m in @LATE_MODULES@; do insmod ${GUEST_MODULE_DIR}/$m.ko; done
  /sbin/vport-links
  for n in /sys/class/net/*; do
    n=\${n##*/}
    [ "$n" = lo ] && continue
    ip link set "$n" up
    udhcpc -i "$n" -s /etc/udhcpc.script -n -q -t 5 -T 1 >/dev/null 2>&1 &
  done
) &
exec /sbin/init
`;

// udev normally creates /dev/virtio-ports/<name>; the tiny guest has no udev.
const VPORT_LINKS = `#!/bin/sh
mkdir -p /dev/virtio-ports
for d in /sys/class/virtio-ports/*; do
  [ -r "$d/name" ] || continue
  n=$(cat "$d/name")
  [ -n "$n" ] && [ ! -e "/dev/virtio-ports/$n" ] && ln -s "../\${d##*/}" "/dev/virtio-ports/$n"
done
exit 0
`;

// The port's name arrives from the host asynchronously after virtio_console binds, so
// wait for it (bounded) instead of letting qemu-ga fail and respawn in a tight loop.
const START_QGA = `#!/bin/sh
p=/dev/virtio-ports/${GUEST_AGENT_PORT}
i=0
while [ ! -e "$p" ] && [ $i -lt 500 ]; do
  /sbin/vport-links
  [ -e "$p" ] && break
  usleep 10000
  i=$((i + 1))
done
mkdir -p /run/qga
exec /usr/sbin/qemu-ga -m virtio-serial -p "$p" -t /run/qga
`;

// qemu-ga 7.2's guest-shutdown runs "/sbin/shutdown -h -P +0 <msg>" (-r to reboot, -H to
// halt); busybox has no shutdown, so map the flags wherever they appear.
const SHUTDOWN = `#!/bin/sh
action=poweroff
for a in "$@"; do
  case "$a" in
    -r) action=reboot ;;
    -H) action=halt ;;
    -P) action=poweroff ;;
  esac
done
sync
exec $action -f
`;

// QMP system_powerdown presses the ACPI power button; busybox acpid runs this handler.
const POWER_BUTTON = `#!/bin/sh
sync
poweroff -f
`;

const UDHCPC_SCRIPT = `#!/bin/sh
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/\${mask:-24}" dev "$interface"
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    ;;
esac
exit 0
`;

const INITTAB = `::respawn:/sbin/start-qga
::ctrlaltdel:/sbin/reboot -f
::shutdown:/bin/sync
`;

export interface InitFile {
  /** Path inside the guest, without the leading slash. */
  path: string;
  content: string;
  mode: number;
}

/** The templates exactly as hashed; `renderInitFiles` fills in the module lists. */
export const INIT_TEMPLATES: readonly InitFile[] = [
  { path: 'init', content: INIT, mode: 0o755 },
  { path: 'sbin/vport-links', content: VPORT_LINKS, mode: 0o755 },
  { path: 'sbin/start-qga', content: START_QGA, mode: 0o755 },
  { path: 'sbin/shutdown', content: SHUTDOWN, mode: 0o755 },
  { path: 'etc/acpi/PWRF/00000080', content: POWER_BUTTON, mode: 0o755 },
  { path: 'etc/udhcpc.script', content: UDHCPC_SCRIPT, mode: 0o755 },
  { path: 'etc/inittab', content: INITTAB, mode: 0o644 },
  { path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\n', mode: 0o644 },
  { path: 'etc/group', content: 'root:x:0:\n', mode: 0o644 },
  { path: 'etc/hostname', content: 'localvm\n', mode: 0o644 },
  { path: 'etc/resolv.conf', content: '', mode: 0o644 },
];

/** The guest's scripts and config files with the ordered module lists substituted. */
export function renderInitFiles(early: readonly string[], late: readonly string[]): InitFile[] {
  return INIT_TEMPLATES.map((f) => ({
    ...f,
    content: f.content.replaceAll('@EARLY_MODULES@', early.join(' ')).replaceAll('@LATE_MODULES@', late.join(' ')),
  }));
}
