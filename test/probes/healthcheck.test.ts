// MAN8S_HEALTHCHECK: parsing, the pure state machine and schedule, and the real monitor running real commands
// with millisecond intervals (a state file decides whether the check passes).
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import {
  parseHealthcheck, applyResult, nextDelayMs, startHealth, HealthcheckError, DEFAULTS,
  type HealthcheckConfig, type HealthState, type HealthStatus,
} from "../../probes/healthcheck.ts";
import { groupExists, tempDir } from "./helpers.ts";

const MS = 1_000_000; // nanoseconds per millisecond

describe("parsing MAN8S_HEALTHCHECK", () => {
  test("defaults 30s / 30s / 0 / 5s / 3 and the three Test forms", () => {
    const c = parseHealthcheck(JSON.stringify({ Test: ["CMD", "curl", "-f", "http://localhost/"] }))!;
    expect(c.argv).toEqual(["curl", "-f", "http://localhost/"]);
    expect(c).toMatchObject({ intervalMs: 30_000, timeoutMs: 30_000, startPeriodMs: 0, startIntervalMs: 5_000, retries: 3 });
    expect(parseHealthcheck('{"Test":["CMD-SHELL","curl -f http://localhost/ || exit 1"]}')!.argv).toEqual(["/bin/sh", "-c", "curl -f http://localhost/ || exit 1"]);
    expect(parseHealthcheck('{"Test":["CMD-SHELL","x"]}', { shell: ["/bin/bash", "-lc"] })!.argv).toEqual(["/bin/bash", "-lc", "x"]);
    expect(parseHealthcheck('{"Test":["NONE"]}')).toBeNull();
    expect(parseHealthcheck('{"Test":[]}')).toBeNull();
    expect(parseHealthcheck("{}")).toBeNull();
    expect(parseHealthcheck(undefined)).toBeNull();
    expect(parseHealthcheck("  ")).toBeNull();
  });

  test("durations are nanoseconds as Docker stores them; Go duration strings accepted; keys case-insensitive", () => {
    const c = parseHealthcheck(JSON.stringify({ test: ["CMD", "true"], interval: 2_500 * MS, TIMEOUT: "1.5s", StartPeriod: "1m30s", StartInterval: 250 * MS, Retries: 7 }))!;
    expect(c).toMatchObject({ intervalMs: 2500, timeoutMs: 1500, startPeriodMs: 90_000, startIntervalMs: 250, retries: 7 });
    // a value of 0 means "default", like Docker's timeoutWithDefault
    expect(parseHealthcheck('{"Test":["CMD","true"],"Interval":0,"Retries":0}')).toMatchObject({ intervalMs: DEFAULTS.intervalMs, retries: 3 });
    expect(parseHealthcheck('{"Test":"curl -f x"}')!.argv).toEqual(["/bin/sh", "-c", "curl -f x"]);
  });

  test("bad values are rejected with the field named; unknown Test types disable with a warning", () => {
    const bad: [string, RegExp][] = [
      ["{", /not valid JSON/],
      ["[]", /JSON object/],
      ['{"Test":"x","Interval":500}', /Interval cannot be less than 1ms/],
      ['{"Test":"x","Timeout":-1}', /Timeout must be a non-negative/],
      ['{"Test":"x","Retries":-2}', /Retries must be a non-negative/],
      ['{"Test":"x","StartPeriod":"soon"}', /StartPeriod 'soon' is not a duration/],
      ['{"Test":["CMD"]}', /CMD needs a command/],
      ['{"Test":[1]}', /array of strings/],
    ];
    for (const [text, why] of bad) expect(() => parseHealthcheck(text)).toThrow(why);
    expect(() => parseHealthcheck("{")).toThrow(HealthcheckError);
    const warnings: string[] = [];
    expect(parseHealthcheck('{"Test":["HTTP","/"]}', { warn: (m) => warnings.push(m) })).toBeNull();
    expect(warnings[0]).toContain("unknown Test type 'HTTP'");
  });
});

function cfg(over: Partial<HealthcheckConfig>): HealthcheckConfig {
  return { test: ["CMD", "true"], argv: ["true"], ...DEFAULTS, ...over };
}
const res = (exitCode: number) => ({ start: "", end: "", exitCode, output: "" });

describe("the state machine (handleProbeResult) and the schedule (monitor)", () => {
  test("Retries consecutive failures make it unhealthy; one success resets; log keeps the last 5", () => {
    const c = cfg({ retries: 3 });
    const s: HealthState = { status: "starting", failingStreak: 0, log: [] };
    expect(applyResult(s, res(1), 0, c)).toBe(false);
    expect(applyResult(s, res(1), 0, c)).toBe(false);
    expect(s).toMatchObject({ status: "starting", failingStreak: 2 });
    expect(applyResult(s, res(2), 0, c)).toBe(true); // any non-zero code is a failure
    expect(s).toMatchObject({ status: "unhealthy", failingStreak: 3 });
    expect(applyResult(s, res(0), 0, c)).toBe(true);
    expect(s).toMatchObject({ status: "healthy", failingStreak: 0 });
    applyResult(s, res(-1), 0, c);
    expect(s).toMatchObject({ status: "healthy", failingStreak: 1 });
    for (let i = 0; i < 4; i++) applyResult(s, res(10 + i), 0, c);
    expect(s.log.map((r) => r.exitCode)).toEqual([-1, 10, 11, 12, 13]);
  });

  test("StartPeriod: failures not counted while starting and within it; counted after it or after a success", () => {
    const c = cfg({ retries: 1, startPeriodMs: 1000 });
    const s: HealthState = { status: "starting", failingStreak: 0, log: [] };
    applyResult(s, res(1), 999, c);
    expect(s).toMatchObject({ status: "starting", failingStreak: 0 });
    applyResult(s, res(1), 1000, c); // probe started at the end of the period: counts
    expect(s).toMatchObject({ status: "unhealthy", failingStreak: 1 });
    const t: HealthState = { status: "starting", failingStreak: 0, log: [] };
    applyResult(t, res(0), 10, c);
    applyResult(t, res(1), 20, c); // after the first success, failures count even inside the period
    expect(t).toMatchObject({ status: "unhealthy", failingStreak: 1 });
  });

  test("schedule: StartInterval while starting inside the start period, capped by what is left of it; Interval otherwise", () => {
    const c = cfg({ intervalMs: 30_000, startPeriodMs: 60_000, startIntervalMs: 5_000 });
    expect(nextDelayMs(c, 0, "starting")).toBe(5_000);
    expect(nextDelayMs(c, 58_000, "starting")).toBe(2_001); // +1 ms so it starts after the period ended
    expect(nextDelayMs(c, 10_000, "healthy")).toBe(30_000);
    expect(nextDelayMs(c, 40_000, "healthy")).toBe(20_001);
    expect(nextDelayMs(c, 60_000, "starting")).toBe(30_000);
    expect(nextDelayMs(cfg({ startPeriodMs: 0 }), 0, "starting")).toBe(30_000);
    // a start period shorter than the start interval: the next probe runs when the period ends (moby #52317)
    expect(nextDelayMs(cfg({ startPeriodMs: 1_000, startIntervalMs: 5_000 }), 0, "starting")).toBe(1_001);
  });
});

/** A monitor whose check exits with the number in a file; collects transitions with their times. */
function monitor(hc: object, dir: string, initial: number) {
  const file = `${dir}/rc`;
  writeFileSync(file, String(initial));
  const changes: { to: HealthStatus; from: HealthStatus; at: number; streak: number }[] = [];
  const t0 = performance.now();
  const logs: string[] = [];
  const h = startHealth(
    { MAN8S_HEALTHCHECK: JSON.stringify({ Test: ["CMD-SHELL", `read rc < ${file}; echo "rc=$rc"; exit $rc`], ...hc }) },
    { log: (m) => logs.push(m), startedAt: t0, onChange: (s, prev) => changes.push({ to: s.status, from: prev, at: performance.now() - t0, streak: s.failingStreak }) },
  )!;
  return { h, changes, t0, set: (rc: number) => writeFileSync(file, String(rc)), logs };
}

async function until(pred: () => boolean, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (pred()) return true;
    await Bun.sleep(5);
  }
  return pred();
}

describe("the monitor running real checks", () => {
  test("starting -> unhealthy after Retries failures -> healthy when the check recovers -> unhealthy again", async () => {
    const dir = tempDir("hc");
    const m = monitor({ Interval: 40 * MS, Timeout: 2000 * MS, Retries: 2 }, dir.path, 1);
    try {
      expect(m.h.state().status).toBe("starting");
      expect(await until(() => m.changes.length >= 1, 5000)).toBe(true);
      expect(m.changes[0]).toMatchObject({ from: "starting", to: "unhealthy", streak: 2 });
      expect(m.changes[0]!.at).toBeGreaterThanOrEqual(80); // two probes, the first one Interval after start
      const st = m.h.state();
      expect(st.log.length).toBe(2);
      expect(st.log.every((r) => r.exitCode === 1 && r.output === "rc=1\n")).toBe(true);
      expect(Date.parse(st.log[0]!.end)).toBeGreaterThanOrEqual(Date.parse(st.log[0]!.start));
      m.set(0);
      expect(await until(() => m.changes.length >= 2, 5000)).toBe(true);
      expect(m.changes[1]).toMatchObject({ from: "unhealthy", to: "healthy", streak: 0 });
      m.set(3);
      expect(await until(() => m.changes.length >= 3, 5000)).toBe(true);
      expect(m.changes[2]).toMatchObject({ from: "healthy", to: "unhealthy", streak: 2 });
      await Bun.sleep(200);
      const s = m.h.state();
      expect(s.log.length).toBe(5); // many more probes ran; only the last 5 kept
      expect(s.log.at(-1)!.exitCode).toBe(3);
      expect(m.changes.length).toBe(3); // no transition without a change
    } finally {
      await m.h.stop();
      dir.remove();
    }
  });

  test("StartPeriod: failures ignored and StartInterval used while starting; counted from the end of the period", async () => {
    const dir = tempDir("hc");
    // Interval is 10 s: any probe in the first 600 ms can only come from StartInterval (30 ms)
    const m = monitor({ Interval: 10_000 * MS, StartPeriod: 600 * MS, StartInterval: 30 * MS, Retries: 1 }, dir.path, 1);
    try {
      await Bun.sleep(450);
      const mid = m.h.state();
      expect(mid.status).toBe("starting");
      expect(mid.failingStreak).toBe(0);
      expect(mid.log.length).toBeGreaterThanOrEqual(4);
      expect(await until(() => m.changes.length >= 1, 3000)).toBe(true);
      expect(m.changes[0]).toMatchObject({ from: "starting", to: "unhealthy", streak: 1 });
      expect(m.changes[0]!.at).toBeGreaterThanOrEqual(590);
      expect(m.changes[0]!.at).toBeLessThan(1500); // a probe ran right at the end of the period, not 10 s later
    } finally {
      await m.h.stop();
      dir.remove();
    }
  });

  test("a success inside the start period ends it: the next failure counts at once", async () => {
    const dir = tempDir("hc");
    const m = monitor({ Interval: 40 * MS, StartPeriod: 60_000 * MS, StartInterval: 20 * MS, Retries: 1 }, dir.path, 0);
    try {
      expect(await until(() => m.changes.length >= 1, 3000)).toBe(true);
      expect(m.changes[0]).toMatchObject({ from: "starting", to: "healthy" });
      m.set(1);
      expect(await until(() => m.changes.length >= 2, 3000)).toBe(true);
      expect(m.changes[1]).toMatchObject({ from: "healthy", to: "unhealthy", streak: 1 });
      expect(m.changes[1]!.at).toBeLessThan(5000); // long before the 60 s start period ends
    } finally {
      await m.h.stop();
      dir.remove();
    }
  });

  test("a hung check is killed at Timeout: exit -1, Docker's message with the partial output, group gone", async () => {
    const dir = tempDir("hc");
    const pidFile = `${dir.path}/pid`;
    const h = startHealth(
      { MAN8S_HEALTHCHECK: JSON.stringify({ Test: ["CMD-SHELL", `echo $$ > ${pidFile}; echo partial; sleep 30 & wait`], Interval: 20 * MS, Timeout: 150 * MS, Retries: 1 }) },
      { log: () => {} },
    )!;
    try {
      expect(await until(() => h.state().status === "unhealthy", 5000)).toBe(true);
      const r = h.state().log[0]!;
      expect(r.exitCode).toBe(-1);
      expect(r.output).toBe("Health check exceeded timeout (150ms): partial\n");
      const took = Date.parse(r.end) - Date.parse(r.start);
      expect(took).toBeGreaterThanOrEqual(140);
      expect(took).toBeLessThan(2000);
      const pgid = Number(await Bun.file(pidFile).text());
      await Bun.sleep(30);
      expect(groupExists(pgid)).toBe(false);
    } finally {
      await h.stop();
      dir.remove();
    }
  });

  test("output is capped at 4096 bytes plus '...'", async () => {
    const h = startHealth(
      { MAN8S_HEALTHCHECK: JSON.stringify({ Test: ["CMD-SHELL", "head -c 5000 /dev/zero | tr '\\0' y"], Interval: 10 * MS }) },
      { log: () => {} },
    )!;
    try {
      expect(await until(() => h.state().status === "healthy", 5000)).toBe(true);
      const out = h.state().log[0]!.output;
      expect(out.length).toBe(4099);
      expect(out).toBe(`${"y".repeat(4096)}...`);
    } finally {
      await h.stop();
    }
  });

  test("stop() kills a running check, waits for it, and no result arrives afterwards", async () => {
    const dir = tempDir("hc");
    const pidFile = `${dir.path}/pid`;
    const h = startHealth(
      { MAN8S_HEALTHCHECK: JSON.stringify({ Test: ["CMD-SHELL", `echo $$ > ${pidFile}; sleep 30`], Interval: 10 * MS, Timeout: 60_000 * MS }) },
      { log: () => {} },
    )!;
    try {
      expect(await until(() => Bun.file(pidFile).size > 0, 3000)).toBe(true);
      const pgid = Number(await Bun.file(pidFile).text());
      const t0 = performance.now();
      await h.stop();
      expect(performance.now() - t0).toBeLessThan(1000);
      // SIGKILL is sent; the process dies when next scheduled, which on a loaded machine takes a moment
      expect(await until(() => !groupExists(pgid), 1000)).toBe(true);
      await Bun.sleep(100);
      expect(h.state().log.length).toBe(0);
      expect(h.state().status).toBe("starting");
    } finally {
      dir.remove();
    }
  });

  test("NONE or no healthcheck: startHealth returns null", () => {
    expect(startHealth({ MAN8S_HEALTHCHECK: '{"Test":["NONE"]}' }, { log: () => {} })).toBeNull();
    expect(startHealth({}, { log: () => {} })).toBeNull();
  });
});
