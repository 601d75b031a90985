/*
 * The identity helper as one static program (see identity.ts and identityProgram.ts).
 *
 * A template, just before it is frozen, starts this program in its guest. It opens the
 * virtio-serial port named argv[1], makes the socket it will set the MAC through, says
 * "parked" and blocks reading one line. Every clone inherits it mid-read. After `cont` the
 * host writes "EPOCH HOSTNAME MAC" (MAC may be absent: keep it); the program sets the
 * hostname, the MAC of the first interface that is not loopback and the clock with three
 * system calls, answers "ok EPOCH" (or "error: ...") and exits.
 *
 * It exists because under software emulation a restored guest runs every code path cold: the
 * shell helper's `ip` and `date` (an exec, a netlink dump, a packet socket, two exits, a
 * wait) cost ~70 ms of a clone's ~150 ms of guest time; three system calls cost a few.
 *
 * The host checks each value before sending it; this program checks them again, into fixed
 * buffers, and treats the line as data only. argv[2], when given, is this program's own file:
 * it is removed once the program runs, so nothing of it is left in the guest.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port = -1;

static void say(const char *text) {
  size_t left = strlen(text);
  while (left > 0) {
    ssize_t n = write(port, text, left);
    if (n <= 0) _exit(9);
    text += n;
    left -= (size_t)n;
  }
}

static void fail(const char *what, const char *value) {
  char line[300];
  snprintf(line, sizeof line, "error: %s%s%s\n", what, value ? " " : "", value ? value : "");
  say(line);
  _exit(1);
}

/* The first line of a small file (a sysfs attribute) into buf; -1 when it cannot be read. */
static int read_line(const char *path, char *buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, size - 1);
  close(fd);
  if (n < 0) return -1;
  buf[n] = 0;
  buf[strcspn(buf, "\n")] = 0;
  return 0;
}

static int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* A host name as the host sends it: a VM name ([a-z0-9][a-z0-9-]*), 1-63 bytes. */
static int valid_hostname(const char *h) {
  size_t n = strlen(h);
  if (n == 0 || n > 63 || h[0] == '-') return 0;
  return strspn(h, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) return 2;
  if (argc == 3) unlink(argv[2]);

  char device[300] = "", name[300], path[600];
  DIR *dir = opendir("/sys/class/virtio-ports");
  if (!dir) return 3;
  for (struct dirent *e; (e = readdir(dir)) != NULL;) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
    if (read_line(path, name, sizeof name) == 0 && strcmp(name, argv[1]) == 0)
      snprintf(device, sizeof device, "/dev/%s", e->d_name);
  }
  closedir(dir);
  if (!device[0]) return 3;

  char ifname[IFNAMSIZ] = "";
  dir = opendir("/sys/class/net");
  if (dir) {
    for (struct dirent *e; (e = readdir(dir)) != NULL;) {
      if (e->d_name[0] == '.' || strcmp(e->d_name, "lo") == 0 || strlen(e->d_name) >= IFNAMSIZ) continue;
      strcpy(ifname, e->d_name);
      break;
    }
    closedir(dir);
  }
  /* Made now, in the template: a clone only calls ioctl on it. */
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

  port = open(device, O_RDWR | O_CLOEXEC);
  if (port < 0) return 5;
  say("parked\n");

  char line[256];
  size_t len = 0;
  for (;;) {
    ssize_t n = read(port, line + len, sizeof line - 1 - len);
    /* End-of-file: no host is connected (a held clone resumed by another process). */
    if (n <= 0) return 6;
    len += (size_t)n;
    line[len] = 0;
    if (strchr(line, '\n')) break;
    if (len == sizeof line - 1) fail("identity line too long", NULL);
  }
  line[strcspn(line, "\n")] = 0;

  char *save = NULL;
  char *t = strtok_r(line, " ", &save), *h = strtok_r(NULL, " ", &save), *m = strtok_r(NULL, " ", &save);
  if (!t || !h || strtok_r(NULL, " ", &save)) fail("malformed identity line", NULL);
  if (strlen(t) > 12 || strspn(t, "0123456789") != strlen(t)) fail("not a time:", t);
  if (!valid_hostname(h)) fail("not a host name:", h);

  if (sethostname(h, strlen(h)) != 0) fail("hostname could not be set:", h);

  if (m) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    if (strlen(m) != 17) fail("not a MAC:", m);
    for (int i = 0; i < 6; i++) {
      int hi = hex(m[i * 3]), lo = hex(m[i * 3 + 1]);
      if (hi < 0 || lo < 0 || (i < 5 && m[i * 3 + 2] != ':')) fail("not a MAC:", m);
      ifr.ifr_hwaddr.sa_data[i] = (char)(hi * 16 + lo);
    }
    if (!ifname[0]) fail("no network interface for MAC", m);
    strcpy(ifr.ifr_name, ifname);
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    if (sock < 0 || ioctl(sock, SIOCSIFHWADDR, &ifr) != 0) fail("MAC could not be set:", m);
  }

  struct timespec now = {.tv_sec = (time_t)strtoll(t, NULL, 10), .tv_nsec = 0};
  if (clock_settime(CLOCK_REALTIME, &now) != 0) fail("clock could not be set to", t);

  char answer[64];
  snprintf(answer, sizeof answer, "ok %s\n", t);
  say(answer);
  return 0;
}
