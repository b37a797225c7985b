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
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
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
