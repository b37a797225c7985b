/*
 * /man8s-init/init: a tiny static launcher in front of the Bun binary.
 *
 * Why it exists: a Bun program needs a few milliseconds before JavaScript can install signal handlers.
 * A SIGTERM in that window would kill PID 2 (nspawn then reports 255), and the kernel silently drops
 * it for a namespace's PID 1. Blocking signals here makes them pend across execve until the init has
 * its handlers and unblocks them, so no signal at any moment of start-up is lost or fatal.
 * It also mounts /proc when it is missing, because the Bun runtime aborts without it.
 *
 * It execs <dir>/man8s through <dir>/lib/ld-linux-x86-64.so.2 with the original argv[0] (the init role
 * is chosen by that name), so the bundle runs from any directory, not only /man8s-init.
 *
 * Exec mode, `init --man8s-exec UID GID GROUPS FLAGS PATH ARGV0 ARGS...`: the supervisor starts the
 * app and exec: probes through it, because Bun.spawn can set neither supplementary groups, nor a
 * process group of the child's own, nor the terminal's foreground group (docs/user.md, docs/signals.md).
 *   UID GID  numbers, or "-" to keep the init's
 *   GROUPS   comma-separated gids, or "-" to keep the init's
 *   FLAGS    "-" or letters: p = own process group (setpgid); t = with p, make it the foreground group
 *            of the controlling terminal when there is one (tcsetpgrp)
 * Exit 67 when the identity cannot be taken, 127/126 when PATH cannot be executed (with a message).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#define MAX_GROUPS 65536

static int parse_id(const char *s, unsigned long *out) {
  char *end;
  if (!*s || *s == '-' || *s == '+') return -1;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || *end || v > 4294967294UL) return -1;
  *out = v;
  return 0;
}

static int die(int code, const char *what, const char *arg) {
  fprintf(stderr, "man8s-init: %s%s: %s\n", what, arg, strerror(errno));
  return code;
}

static int exec_mode(int argc, char **argv) {
  if (argc < 8) {
    fprintf(stderr, "man8s-init: --man8s-exec UID GID GROUPS FLAGS PATH ARGV0 [ARGS...]\n");
    return 70;
  }
  const char *uid_s = argv[2], *gid_s = argv[3], *groups_s = argv[4], *flags = argv[5], *path = argv[6];
  unsigned long uid = 0, gid = 0;
  int set_uid = strcmp(uid_s, "-") != 0, set_gid = strcmp(gid_s, "-") != 0;
  if ((set_uid && parse_id(uid_s, &uid)) || (set_gid && parse_id(gid_s, &gid))) {
    fprintf(stderr, "man8s-init: invalid uid/gid '%s' '%s'\n", uid_s, gid_s);
    return 70;
  }

  if (strchr(flags, 'p')) {
    if (setpgid(0, 0) != 0) return die(70, "setpgid", "");
    int tty = strchr(flags, 't') ? open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC) : -1;
    if (tty >= 0) {
      /* from a background group tcsetpgrp raises SIGTTOU, unless it is blocked */
      sigset_t ttou, old;
      sigemptyset(&ttou);
      sigaddset(&ttou, SIGTTOU);
      sigprocmask(SIG_BLOCK, &ttou, &old);
      if (tcsetpgrp(tty, getpid()) != 0) fprintf(stderr, "man8s-init: tcsetpgrp: %s (the app is not the terminal's foreground)\n", strerror(errno));
      sigprocmask(SIG_SETMASK, &old, NULL);
      close(tty);
    }
  }

  if (strcmp(groups_s, "-") != 0) {
    static gid_t list[MAX_GROUPS];
    size_t n = 0;
    char buf[16];
    for (const char *p = groups_s; *p;) {
      size_t len = strcspn(p, ",");
      unsigned long g;
      if (len == 0 || len >= sizeof buf || n == MAX_GROUPS) {
        fprintf(stderr, "man8s-init: invalid group list\n");
        return 70;
      }
      memcpy(buf, p, len);
      buf[len] = 0;
      if (parse_id(buf, &g)) {
        fprintf(stderr, "man8s-init: invalid group '%s'\n", buf);
        return 70;
      }
      list[n++] = (gid_t)g;
      p += len;
      if (*p == ',') p++;
    }
    if (setgroups(n, list) != 0) return die(67, "setgroups", "");
  }
  if (set_gid && setgid((gid_t)gid) != 0) return die(67, "setgid ", gid_s);
  if (set_uid && setuid((uid_t)uid) != 0) return die(67, "setuid ", uid_s);

  execv(path, argv + 7);
  int e = errno;
  fprintf(stderr, "man8s-init: cannot execute %s: %s\n", path, e == ENOENT ? "not found" : e == EACCES ? "permission denied" : strerror(e));
  return e == ENOENT ? 127 : 126;
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--man8s-exec")) return exec_mode(argc, argv);
  sigset_t set;
  sigfillset(&set);
  /* synchronous faults must stay deliverable; SIGPWR is used by the JS engine to suspend threads */
  int keep[] = {SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS, SIGPWR};
  for (unsigned i = 0; i < sizeof keep / sizeof keep[0]; i++) sigdelset(&set, keep[i]);
  sigprocmask(SIG_BLOCK, &set, NULL);

  struct stat st;
  if (stat("/proc/self/maps", &st) != 0) {
    mkdir("/proc", 0555);
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
      fprintf(stderr, "man8s-init: /proc is missing and cannot be mounted: %s\n", strerror(errno));
  }

  /* run <dir>/man8s through <dir>/lib's loader, so the bundle works wherever it is mounted */
  char dir[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
  if (n > 0) {
    dir[n] = 0;
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
  } else {
    snprintf(dir, sizeof dir, "/man8s-init");
  }
  static char ld[PATH_MAX + 40], lib[PATH_MAX + 8], bin[PATH_MAX + 8];
  snprintf(ld, sizeof ld, "%s/lib/ld-linux-x86-64.so.2", dir);
  snprintf(lib, sizeof lib, "%s/lib", dir);
  snprintf(bin, sizeof bin, "%s/man8s", dir);
  char *args[argc + 7];
  int k = 0;
  args[k++] = ld;
  args[k++] = "--library-path";
  args[k++] = lib;
  args[k++] = "--argv0";
  args[k++] = argv[0];
  args[k++] = bin;
  for (int i = 1; i < argc; i++) args[k++] = argv[i];
  args[k] = NULL;
  /* at its home the binary's own (patched) interpreter works, and ps shows "man8s", not the loader */
  if (!strcmp(dir, "/man8s-init")) execv(bin, argv);
  execv(ld, args);
  fprintf(stderr, "man8s-init: cannot execute %s: %s\n", ld, strerror(errno));
  return errno == ENOENT ? 127 : 126;
}
