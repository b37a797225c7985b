// Zombie reaping beside Bun.spawn. A plain waitpid(-1) would steal the exit status of the app (Bun
// waits for its children through a pidfd and its promise then rejects with ECHILD), so we peek with
// waitid(WNOWAIT) and reap only pids that are not Bun's (docs/notes.md §3).
//
// Every Bun.spawn in the init (the app in supervisor.ts, exec: probes in probes/run.ts) registers its
// child in common/bun-children.ts right after the call, on the JS thread where reap() also runs, so no
// zombie of Bun's can be seen before it is known. (An earlier version found Bun's children by scanning
// /proc/self/fd for pidfds on every reap: under churn, 10,000 orphans cost 10,000 scans and kept ~1 MB of
// RssAnon.)
import { isBunChild } from "../common/bun-children.ts";
import { libc, P_ALL, PR_SET_CHILD_SUBREAPER, SIGINFO_SIZE, siginfo, WEXITED, WNOHANG, WNOWAIT } from "../common/libc.ts";

const info = new Uint8Array(SIGINFO_SIZE);
const infoView = new DataView(info.buffer);
const status = new Int32Array(1);

export function becomeSubreaper(): boolean {
  return libc.prctl(PR_SET_CHILD_SUBREAPER, 1n, 0n, 0n, 0n) === 0;
}

export interface ReapStats {
  reaped: number;
  /** the largest number of zombies reaped in one pass, and how long that pass took */
  largestBatch: { n: number; ms: number };
}
export const reapStats: ReapStats = { reaped: 0, largestBatch: { n: 0, ms: 0 } };

let retry: ReturnType<typeof setTimeout> | null = null;
let gcTimer: ReturnType<typeof setTimeout> | null = null;
const GC_AFTER_BURST_MS = 1000;

/**
 * Reap every zombie child that is not Bun's. If a Bun child is first in line, waitid keeps returning
 * it until Bun collects it on this tick, hiding the zombies behind it; try again shortly.
 */
export function reap(): number {
  const t0 = performance.now();
  let n = 0;
  for (;;) {
    info.fill(0);
    if (libc.waitid(P_ALL, 0, info, WEXITED | WNOHANG | WNOWAIT) !== 0) break; // ECHILD: no children
    const pid = siginfo.pid(infoView);
    if (pid === 0) break; // children exist, none has exited
    if (isBunChild(pid)) {
      retry ??= setTimeout(() => {
        retry = null;
        reap();
      }, 2);
      break;
    }
    if (libc.waitpid(pid, status, WNOHANG) === pid) n++;
  }
  reapStats.reaped += n;
  if (n > 0) {
    // after a burst, once quiet, collect the garbage the burst made, so the heap returns near its idle size
    if (gcTimer) clearTimeout(gcTimer);
    gcTimer = setTimeout(() => {
      gcTimer = null;
      Bun.gc(true);
    }, GC_AFTER_BURST_MS);
  }
  if (n > reapStats.largestBatch.n) reapStats.largestBatch = { n, ms: Math.round((performance.now() - t0) * 1000) / 1000 };
  return n;
}
