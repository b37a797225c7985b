// Descendants of the init, from /proc. Orphans are reparented to us (PID 1, or a subreaper), so the
// tree under our pid is everything the app left behind, including setsid'd daemons.
// Walks /proc/PID/task/TID/children (cheap: touches only our tree); kernels without
// CONFIG_PROC_CHILDREN fall back to a scan of every /proc/PID/stat.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { procStat } from "../common/procstat.ts";

export interface Proc {
  pid: number;
  pgid: number;
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, "latin1").split(" ")) if (c) out.push(Number(c));
    } catch {
      // thread or process gone
    }
  }
  return out;
}

const haveChildrenFiles = existsSync(`/proc/self/task/${process.pid}/children`);

/** Living descendants (zombies are dead already: reaping handles them). */
export function descendants(root = process.pid): Proc[] {
  return haveChildrenFiles ? walk(root) : scan(root);
}

function walk(root: number): Proc[] {
  const out: Proc[] = [];
  const queue = [root];
  while (queue.length) {
    for (const pid of childrenOf(queue.pop()!)) {
      const st = procStat(pid);
      if (!st || st.state === "Z") continue;
      out.push({ pid, pgid: st.pgid });
      queue.push(pid);
    }
  }
  return out;
}

function scan(root: number): Proc[] {
  const children = new Map<number, Proc[]>();
  for (const name of readdirSync("/proc")) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const st = procStat(name);
    if (!st || st.state === "Z") continue;
    const p = { pid: Number(name), pgid: st.pgid };
    const list = children.get(st.ppid);
    if (list) list.push(p);
    else children.set(st.ppid, [p]);
  }
  const out: Proc[] = [];
  const queue = [root];
  while (queue.length) {
    for (const c of children.get(queue.pop()!) ?? []) {
      out.push(c);
      queue.push(c.pid);
    }
  }
  return out;
}
