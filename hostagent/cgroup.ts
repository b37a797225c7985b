// Which cgroup.procs files put a process beside another one, in every hierarchy the host has mounted
// (cgroup v2, or v1/hybrid with one mount per controller set). `machines exec` writes the exec'd
// process into these before it enters the machine, so it is counted, limited and killed with it.
import { readFileSync } from "node:fs";

interface Mount {
  v2: boolean;
  root: string;
  point: string;
  controllers: Set<string>;
}

/** the most lines read from /proc/PID/cgroup and /proc/self/mountinfo (both kernel-made, still bounded) */
const MAX_LINES = 4096;

function cgroupMounts(): Mount[] {
  const mounts: Mount[] = [];
  for (const l of readFileSync("/proc/self/mountinfo", "utf8").split("\n").slice(0, MAX_LINES)) {
    const sep = l.indexOf(" - ");
    if (sep < 0) continue;
    const f = l.slice(0, sep).split(" ");
    const [fstype, , superOpts] = l.slice(sep + 3).split(" ");
    if (fstype !== "cgroup" && fstype !== "cgroup2") continue;
    // octal escapes (a space in the path) never occur under /sys/fs/cgroup; skip such mounts
    if (!f[3] || !f[4] || f[3].includes("\\") || f[4].includes("\\")) continue;
    mounts.push({ v2: fstype === "cgroup2", root: f[3], point: f[4], controllers: new Set((superOpts ?? "").split(",")) });
  }
  return mounts;
}

/**
 * The cgroup.procs file of each hierarchy `pid` belongs to (seen from the agent's cgroup namespace, the
 * host's). One file per hierarchy: the first mount of it that shows the process's cgroup.
 */
export function cgroupProcsFiles(pid: number): string[] {
  const mounts = cgroupMounts();
  const files: string[] = [];
  for (const l of readFileSync(`/proc/${pid}/cgroup`, "utf8").split("\n").slice(0, MAX_LINES)) {
    const m = /^\d+:([^:]*):(\/.*)$/.exec(l);
    if (!m) continue;
    const ctrls = m[1]!;
    const path = m[2]!;
    // a path outside our cgroup namespace ("/..") cannot be reached from here
    if (path.split("/").includes("..")) continue;
    const mount = mounts.find((mt) => {
      if (ctrls === "" ? !mt.v2 : mt.v2 || !ctrls.split(",").every((c) => mt.controllers.has(c))) return false;
      return mt.root === "/" || path === mt.root || path.startsWith(`${mt.root}/`);
    });
    if (!mount) continue;
    const rel = mount.root === "/" ? path : path.slice(mount.root.length) || "/";
    files.push(`${mount.point}${rel === "/" ? "" : rel}/cgroup.procs`);
  }
  return files;
}
