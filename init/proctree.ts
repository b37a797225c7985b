// Descendants of the init, from /proc. Orphans are reparented to us (PID 1, or a subreaper), so the
// tree under our pid is everything the app left behind, including setsid'd daemons.
import { readdirSync, readFileSync } from "node:fs";

export interface Proc {
  pid: number;
  pgid: number;
}

/** /proc/PID/stat fields after the command name (which may contain spaces and parentheses). */
function statOf(pid: string): { state: string; ppid: number; pgid: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { state: f[0]!, ppid: Number(f[1]), pgid: Number(f[2]) };
  } catch {
    return null; // exited meanwhile
  }
}

/** Living descendants (zombies are dead already: reaping handles them). */
export function descendants(root = process.pid): Proc[] {
  const children = new Map<number, Proc[]>();
  for (const name of readdirSync("/proc")) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const st = statOf(name);
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
