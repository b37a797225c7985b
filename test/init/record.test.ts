// The status record says what really happened, through the real init: who killed the app and why, what the
// app did with its stop signal, the health status of a container that is gone, and the record's own writes
// (a full filesystem leaves no temp file behind, and the final record is the one that stays).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { ensureBuilt, killLeftovers, runInit, type Running } from "./harness.ts";

const BB = "/bin/busybox";
beforeAll(ensureBuilt, 120_000);
afterAll(killLeftovers);

async function exited(r: Running, withinMs = 20_000): Promise<number | null> {
  const e = await Promise.race([r.exited, Bun.sleep(withinMs).then(() => null)]);
  if (!e) throw new Error(`the init did not exit within ${withinMs} ms\n${r.stderr()}`);
  expect(e.signal).toBeNull();
  return e.code;
}

describe("killedAfterTimeout and the stop record", () => {
  test("an app SIGKILLed with no stop (as the OOM killer does) was not killed after a timeout", async () => {
    const r = await runInit("subreaper", () => [BB, "sh", "-c", "kill -KILL $$"]);
    expect(await exited(r)).toBe(137);
    const rec = r.status()!;
    expect(rec.exit.app).toEqual({ code: null, signal: "SIGKILL" });
    expect(rec.exit.killedAfterTimeout).toBe(false); // before the fix: true whenever the app died of SIGKILL
    expect(rec.exit.reason).toBe("app killed by SIGKILL");
    expect(rec.stop).toBeNull();
  }, 30_000);

  test("an app still draining at the stop timeout is not described as ignoring its signal", async () => {
    // the app handles SIGTERM and keeps working (as a server finishing its requests would)
    const r = await runInit("subreaper", () => [BB, "sh", "-c", "trap 'echo draining' TERM; echo up; while :; do sleep 0.1; done"], {
      envFile: "MAN8S_STOP_TIMEOUT=1\n",
    });
    await r.waitFor(/^up$/m);
    const t0 = Date.now();
    await r.stop();
    await r.waitFor(/^draining$/m);
    expect(await exited(r)).toBe(137);
    const rec = r.status()!;
    expect(rec.exit.killedAfterTimeout).toBe(true);
    expect(rec.exit.reason).not.toContain("ignored"); // before the fix: "app ignored SIGTERM for 1 s and was killed"
    expect(rec.exit.reason).toContain("handles SIGTERM");
    expect(rec.stop).toMatchObject({ signal: "SIGTERM", sent: "SIGTERM", escalated: true, appSignalState: "handled", timeoutSec: 1 });
    const sentAt = Date.parse(rec.stop.sentAt), escalatedAt = Date.parse(rec.stop.escalatedAt);
    expect(sentAt).toBeGreaterThanOrEqual(t0 - 1000);
    expect(escalatedAt - sentAt).toBeGreaterThanOrEqual(900);
    expect(escalatedAt - sentAt).toBeLessThan(5000);
  }, 30_000);

  test("an app that ignores its stop signal is recorded as ignoring it; one that obeys is not escalated", async () => {
    const [deaf, polite] = await Promise.all([
      runInit("subreaper", () => [BB, "sh", "-c", "trap '' TERM; echo up; while :; do sleep 0.1; done"], { envFile: "MAN8S_STOP_TIMEOUT=1\n" }),
      runInit("subreaper", () => [BB, "sh", "-c", "echo up; exec sleep 30"], { envFile: "MAN8S_STOP_TIMEOUT=1\n" }),
    ]);
    await Promise.all([deaf.waitFor(/^up$/m), polite.waitFor(/^up$/m)]);
    await Promise.all([deaf.stop(), polite.stop()]);
    expect(await exited(deaf)).toBe(137);
    expect(deaf.status()!.stop).toMatchObject({ escalated: true, appSignalState: "ignored" });
    expect(deaf.status()!.exit.reason).toContain("ignores SIGTERM");
    expect(await exited(polite)).toBe(143);
    expect(polite.status()!.stop).toMatchObject({ sent: "SIGTERM", escalated: false, escalatedAt: null, appSignalState: null });
    expect(polite.status()!.exit.killedAfterTimeout).toBe(false);
  }, 30_000);
});

describe("health in the final record", () => {
  test("an app that exits before its first check does not stay 'starting'", async () => {
    const hc = { Test: ["CMD", BB, "false"], Interval: "10s" };
    const r = await runInit("subreaper", () => [BB, "sh", "-c", "sleep 0.5; exit 3"], { envFile: `MAN8S_HEALTHCHECK=${JSON.stringify(hc)}\n` });
    expect(await exited(r)).toBe(3);
    const rec = r.status()!;
    expect(rec.phase).toBe("exited");
    // before the fix: "starting". Docker sets "unhealthy" when the monitor stops; lastStatus keeps the last word
    expect(rec.health.status).toBe("unhealthy");
    expect(rec.health.lastStatus).toBe("starting");
    expect(rec.health.log).toEqual([]);
  }, 30_000);

  test("a healthy app that stops keeps its last status in lastStatus", async () => {
    const hc = { Test: ["CMD", BB, "true"], Interval: "100ms" };
    const r = await runInit("subreaper", () => [BB, "sleep", "30"], { envFile: `MAN8S_HEALTHCHECK=${JSON.stringify(hc)}\n` });
    await r.waitFor(/health: starting -> healthy/);
    await r.stop();
    expect(await exited(r)).toBe(143);
    expect(r.status()!.health).toMatchObject({ status: "unhealthy", lastStatus: "healthy", failingStreak: 0 });
  }, 30_000);
});
