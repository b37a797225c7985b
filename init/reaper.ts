// Zombie reaping beside Bun.spawn. A plain waitpid(-1) would steal the exit status of the app (Bun
// waits for its children through a pidfd and its promise then rejects with ECHILD), so we peek with
// waitid(WNOWAIT) and reap only pids that are not Bun's (notes/bun-lab.md §3).
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { libc, P_ALL, PR_SET_CHILD_SUBREAPER, SIGINFO_SIZE, siginfo, WEXITED, WNOHANG, WNOWAIT } from "../common/libc.ts";

const info = new Uint8Array(SIGINFO_SIZE);
const infoView = new DataView(info.buffer);
const status = new Int32Array(1);

/** Pids started through Bun (the app, probes); never reaped here. */
const bunChildren = new Set<number>();
export function trackBunChild(pid: number): void {
  bunChildren.add(pid);
}
export function untrackBunChild(pid: number): void {
  bunChildren.delete(pid);
}

export function becomeSubreaper(): boolean {
  return libc.prctl(PR_SET_CHILD_SUBREAPER, 1n, 0n, 0n, 0n) === 0;
}

/** Pids for which this process holds a pidfd: Bun's own children, including ones we did not track. */
function pidfdPids(): Set<number> {
  const pids = new Set<number>();
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) !== "anon_inode:[pidfd]") continue;
      const m = /^Pid:\s+(-?\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"));
      if (m) pids.add(Number(m[1]));
    } catch {
      // fd closed meanwhile
    }
  }
  return pids;
}

export interface ReapStats {
  reaped: number;
  /** the largest number of zombies reaped in one pass, and how long that pass took */
  largestBatch: { n: number; ms: number };
}
export const reapStats: ReapStats = { reaped: 0, largestBatch: { n: 0, ms: 0 } };

let retry: ReturnType<typeof setTimeout> | null = null;

/**
 * Reap every zombie child that is not Bun's. If a Bun child is first in line, waitid keeps returning
 * it until Bun collects it on this tick, hiding the zombies behind it; try again shortly.
 */
export function reap(): number {
  const t0 = performance.now();
  let owned: Set<number> | null = null;
  let n = 0;
  for (;;) {
    info.fill(0);
    if (libc.waitid(P_ALL, 0, info, WEXITED | WNOHANG | WNOWAIT) !== 0) break; // ECHILD: no children
    const pid = siginfo.pid(infoView);
    if (pid === 0) break; // children exist, none has exited
    if (bunChildren.has(pid) || (owned ??= pidfdPids()).has(pid)) {
      retry ??= setTimeout(() => {
        retry = null;
        reap();
      }, 2);
      break;
    }
    if (libc.waitpid(pid, status, WNOHANG) === pid) n++;
  }
  reapStats.reaped += n;
  if (n > reapStats.largestBatch.n) reapStats.largestBatch = { n, ms: Math.round((performance.now() - t0) * 1000) / 1000 };
  return n;
}
