// /proc/PID/stat (proc(5)), the one parser. Field 2, the command name, is in parentheses and may itself
// contain spaces and ')': the fields after it restart after the LAST ')'.
import { readFileSync } from "node:fs";

export interface ProcStat {
  /** field 3: R, S, D, Z, T... */
  state: string;
  /** field 4 */
  ppid: number;
  /** field 5: the process group */
  pgid: number;
  /** field 22: start time in clock ticks since boot, as text (with the pid, it names one process across pid reuse) */
  startTime: string;
}

/** The process's stat fields, or null when there is no such process (or it exited meanwhile). */
export function procStat(pid: number | string): ProcStat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "latin1");
  } catch {
    return null;
  }
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  if (f.length < 20) return null;
  return { state: f[0]!, ppid: Number(f[1]), pgid: Number(f[2]), startTime: f[19]! };
}
