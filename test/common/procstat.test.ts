// The one /proc/PID/stat parser on real processes, including a command name with spaces and parentheses.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { procStat } from "../../common/procstat.ts";

test("a process whose name contains ') (' and spaces still parses", async () => {
  const p = Bun.spawn(["sh", "-c", 'printf "x) S 1 (y" > /proc/$$/comm; echo; sleep 5; :'], { stdout: "pipe" });
  try {
    const reader = p.stdout.getReader();
    await reader.read(); // the name is set
    expect(readFileSync(`/proc/${p.pid}/comm`, "utf8")).toBe("x) S 1 (y\n");
    const st = procStat(p.pid);
    expect(st).not.toBeNull();
    expect(st!.ppid).toBe(process.pid);
    expect(st!.state).toMatch(/^[A-Z]$/); // one state letter (R, S, D...); a parse at the first ")" reads ppid 1
    expect(st!.pgid).toBe(procStat(process.pid)!.pgid);
    expect(st!.startTime).toMatch(/^\d+$/);
    expect(procStat(p.pid)!.startTime).toBe(st!.startTime);
  } finally {
    p.kill("SIGKILL");
    await p.exited;
  }
});

test("no such process: null", () => {
  expect(procStat(0x3fffffff)).toBeNull();
  expect(procStat("self")?.ppid).toBe(process.ppid);
});
