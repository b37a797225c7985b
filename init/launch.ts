// How the init starts the app and exec: probes: through the bundle's static launcher in exec mode
// (init/launcher.c: `init --man8s-exec UID GID GROUPS FLAGS PATH ARGV0 ARGS...`), which takes the
// image's user (setgroups/setgid/setuid), puts the app in its own process group and, when the init has a
// controlling terminal, makes that group the terminal's foreground group; then it execs the command.
import { accessSync, constants, existsSync, statSync } from "node:fs";
import { dirname } from "node:path";
import type { AppUser } from "../common/user.ts";

export interface LaunchOptions {
  user: AppUser | null;
  /** own process group (setpgid) */
  pgrp: boolean;
  /** with pgrp: the terminal's foreground group when the init has a controlling terminal */
  tty: boolean;
}

let helper: string | null | undefined;

/**
 * The launcher beside the binary: /man8s-init/init in a container, dist/man8s-init/init beside dist/man8s;
 * when the launcher ran the binary through the bundle's loader, execPath is <bundle>/lib/ld-linux….
 */
export function launcherPath(): string | null {
  if (helper !== undefined) return helper;
  const dir = dirname(process.execPath);
  helper = [`${dir}/init`, `${dir}/man8s-init/init`, `${dirname(dir)}/init`, "/man8s-init/init"].find((p) => existsSync(p)) ?? null;
  return helper;
}

/** argv that runs `path` (as argv) through the launcher with `o`. */
export function launchArgv(launcher: string, path: string, argv: readonly string[], o: LaunchOptions): string[] {
  const flags = o.pgrp ? (o.tty ? "pt" : "p") : "-";
  const u = o.user;
  return [launcher, "--man8s-exec", u ? String(u.uid) : "-", u ? String(u.gid) : "-", u ? u.groups.join(",") : "-", flags, path, ...argv];
}

/**
 * Resolve argv[0] as execvp would (PATH of the app's env), so "not found" / "not executable" are told
 * by the init with 127/126 before anything is started.
 */
export function resolveExecutable(argv0: string, env: Record<string, string | undefined>): { path: string } | { failed: 126 | 127; why: string } {
  const candidates = argv0.includes("/") ? [argv0] : (env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":").filter(Boolean).map((d) => `${d}/${argv0}`);
  let denied = false;
  for (const c of candidates) {
    try {
      if (!statSync(c).isFile()) continue;
    } catch {
      continue;
    }
    try {
      accessSync(c, constants.X_OK);
      return { path: c };
    } catch {
      denied = true;
    }
  }
  return denied ? { failed: 126, why: "permission denied (not executable?)" } : { failed: 127, why: "not found" };
}

/** For exec: probes and the Healthcheck: run them as the app's user (null when the init's own user serves). */
export function probeWrapper(user: AppUser | null, env: Record<string, string | undefined>): ((argv: string[]) => string[]) | null {
  const launcher = launcherPath();
  if (!user || !launcher) return null;
  return (argv) => {
    const exe = resolveExecutable(argv[0]!, env);
    // not found: the launcher's execv fails and its message (exit 127/126) becomes the probe's output
    return launchArgv(launcher, "path" in exe ? exe.path : argv[0]!, argv, { user, pgrp: false, tty: false });
  };
}
