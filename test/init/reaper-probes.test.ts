// The probes are a lazy module with its own copy of the init's modules (lazy.ts): a probe child it starts must
// still be known to the init's reaper, or the reaper takes its exit status and Bun's wait fails with ECHILD.
import { afterAll, describe, expect, test } from "bun:test";
import { killLeftovers, MODES, runInit } from "./harness.ts";

afterAll(killLeftovers);

describe.each(MODES)("exec health checks beside the reaper (%s)", (mode) => {
  test("exec checks every 50 ms for 3 s: every one recorded with its exit code, none reaped as an orphan, no internal error", async () => {
    const hc = { Test: ["CMD", "/bin/sh", "-c", "exit 0"], Interval: 50_000_000, Timeout: 2_000_000_000 };
    const r = await runInit(mode, () => ["/bin/sleep", "3"], {
      envFile: `MAN8S_HEALTHCHECK=${JSON.stringify(hc)}\n`,
    });
    const exit = await r.exited;
    expect(exit.code).toBe(0);
    expect(r.stderr()).not.toContain("internal error");
    expect(r.stderr()).not.toContain("ECHILD");
    const st = r.status()!;
    expect(st.exit.orphansReaped).toBe(0);
    expect(st.health.lastStatus ?? st.health.status).toBe("healthy");
    expect(st.health.log.every((l: { exitCode: number }) => l.exitCode === 0)).toBe(true);
  }, 30_000);
});
