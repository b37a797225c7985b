// MAN8S_HEALTH_ON_FAILURE through the real init (subreaper mode; busybox apps and checks): an app whose
// health check fails is restarted with backoff (restart), stopped cleanly with the image's stop signal
// (stop), killed with exit 79 (kill), or only reported (none); a bad value exits 65 before the app starts.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { ensureBuilt, killLeftovers, runInit, type Running } from "./harness.ts";

const BB = "/bin/busybox";
const canRun = process.getuid?.() === 0 && existsSync(BB);
const ns = (ms: number) => ms * 1_000_000;
/** fails from the start: unhealthy after Retries (2) failures, ~0.2-0.3 s in */
const FAILING = JSON.stringify({ Test: ["CMD", BB, "false"], Interval: ns(100), Timeout: ns(5000), Retries: 2 });

beforeAll(async () => {
  if (canRun) await ensureBuilt();
}, 120_000);
afterAll(killLeftovers);

async function exitOf(r: Running, withinMs = 15_000): Promise<number | null> {
  const e = await Promise.race([r.exited, Bun.sleep(withinMs).then(() => null)]);
  if (!e) {
    await r.kill("SIGKILL");
    throw new Error(`the init did not exit within ${withinMs} ms\n--- stderr\n${r.stderr()}`);
  }
  return e.code;
}

/** an app that exits with `code` on `signal` and ignores SIGTERM otherwise */
const app = (signal: string, code: number) => [BB, "sh", "-c", `${signal === "TERM" ? "" : "trap '' TERM; "}trap 'exit ${code}' ${signal}; while :; do ${BB} sleep 1 & wait $!; done`];

describe.skipIf(!canRun)("MAN8S_HEALTH_ON_FAILURE", () => {
  test("stop: unhealthy → a clean stop with the image's stop signal (the app's own exit code), recorded", async () => {
    const r = await runInit("subreaper", () => app("USR1", 44), {
      envFile: `MAN8S_HEALTHCHECK=${FAILING}\nMAN8S_HEALTH_ON_FAILURE=stop\nMAN8S_STOP_SIGNAL=SIGUSR1\nMAN8S_STOP_TIMEOUT=10\n`,
    });
    const t0 = performance.now();
    expect(await exitOf(r)).toBe(44);
    expect(performance.now() - t0).toBeLessThan(8000); // not the stop timeout
    const rec = r.status()!;
    expect(rec.exit).toMatchObject({ code: 44, app: { code: 44, signal: null }, killedAfterTimeout: false });
    expect(rec.exit.reason).toContain("MAN8S_HEALTH_ON_FAILURE=stop");
    expect(rec.stop).toMatchObject({ signal: "SIGTERM", sent: "SIGUSR1" });
    expect(rec.health.onFailure.action).toBe("stop");
    expect(typeof rec.health.onFailure.at).toBe("string");
    expect(rec.health.lastStatus).toBe("unhealthy");
    expect(r.stderr()).toContain("health: unhealthy, MAN8S_HEALTH_ON_FAILURE=stop: stopping the container");
  }, 30_000);

  test("kill: unhealthy → the app (which ignores SIGTERM) is SIGKILLed at once and the container exits 79", async () => {
    const r = await runInit("subreaper", () => app("USR1", 44), {
      envFile: `MAN8S_HEALTHCHECK=${FAILING}\nMAN8S_HEALTH_ON_FAILURE=kill\nMAN8S_STOP_TIMEOUT=20\n`,
    });
    const t0 = performance.now();
    expect(await exitOf(r)).toBe(79);
    expect(performance.now() - t0).toBeLessThan(8000);
    const rec = r.status()!;
    expect(rec.exit).toMatchObject({ code: 79, app: { code: null, signal: "SIGKILL" } });
    expect(rec.exit.reason).toContain("killed (MAN8S_HEALTH_ON_FAILURE=kill)");
    expect(rec.stop).toBeNull();
    expect(rec.health.onFailure.action).toBe("kill");
  }, 30_000);

  test("none (and unset): unhealthy is only reported; the app keeps running until a stop", async () => {
    for (const line of ["MAN8S_HEALTH_ON_FAILURE=none\n", ""]) {
      const r = await runInit("subreaper", () => app("TERM", 45), { envFile: `MAN8S_HEALTHCHECK=${FAILING}\n${line}` });
      await r.waitFor(/health: starting -> unhealthy/, 10_000);
      await Bun.sleep(1000);
      expect(r.status()!.exit).toBeNull();
      expect(r.status()!.health.status).toBe("unhealthy");
      await r.stop();
      expect(await exitOf(r)).toBe(45);
      expect(r.status()!.health.onFailure).toBeUndefined();
    }
  }, 40_000);

  test("restart: each time the app turns unhealthy it gets the stop signal and starts again, after 1 s, then 2 s (counted)", async () => {
    const r = await runInit("subreaper", ({ dir }) => [BB, "sh", "-c", `${BB} cut -d' ' -f1 /proc/uptime >> ${dir}/starts; trap '' TERM; trap 'exit 46' USR1; while :; do ${BB} sleep 1 & wait $!; done`], {
      envFile: `MAN8S_HEALTHCHECK=${FAILING}\nMAN8S_HEALTH_ON_FAILURE=restart\nMAN8S_STOP_SIGNAL=SIGUSR1\nMAN8S_STOP_TIMEOUT=10\n`,
    });
    const starts = () => (existsSync(`${r.dir}/starts`) ? readFileSync(`${r.dir}/starts`, "utf8").trim().split("\n").map(Number) : []);
    const end = Date.now() + 20_000;
    while (starts().length < 3 && Date.now() < end) await Bun.sleep(50);
    const t = starts();
    expect(t.length).toBeGreaterThanOrEqual(3);
    // unhealthy ~0.2-0.4 s after a start, then the backoff: 1 s before the 2nd start, 2 s before the 3rd
    const gap1 = t[1]! - t[0]!;
    const gap2 = t[2]! - t[1]!;
    expect(gap1).toBeGreaterThanOrEqual(1);
    expect(gap2).toBeGreaterThanOrEqual(2);
    expect(gap2).toBeGreaterThan(gap1 + 0.5);
    const running = r.status()!;
    expect(running.exit).toBeNull();
    expect(running.health.onFailure).toMatchObject({ action: "restart", restarts: 2, lastDelayMs: 2000 });
    expect(r.stderr()).toMatch(/app \(pid \d+\) exited with 46/); // the old app got the image's stop signal
    await r.stop();
    expect(await exitOf(r)).toBe(46);
    expect(r.status()!.exit.app).toEqual({ code: 46, signal: null });
  }, 40_000);

  test("restart: a stop during the backoff ends the container at once; nothing is started again", async () => {
    const r = await runInit("subreaper", ({ dir }) => [BB, "sh", "-c", `echo x >> ${dir}/starts; trap 'exit 47' TERM; while :; do ${BB} sleep 1 & wait $!; done`], {
      envFile: `MAN8S_HEALTHCHECK=${FAILING}\nMAN8S_HEALTH_ON_FAILURE=restart\n`,
    });
    await r.waitFor(/restarting the app in 1 s/, 10_000);
    const t0 = performance.now();
    await r.stop();
    expect(await exitOf(r)).toBe(47);
    expect(performance.now() - t0).toBeLessThan(900);
    // the ended app is gone: the stop signal goes to no one (before: SIGTERM to its old pid, maybe reused)
    expect(r.status()!.stop).toMatchObject({ signal: "SIGTERM", sent: null });
    expect(r.stderr()).toContain("SIGTERM: stop requested with no app running");
    await Bun.sleep(1200);
    expect(readFileSync(`${r.dir}/starts`, "utf8").trim().split("\n").length).toBe(1);
  }, 30_000);

  test("a bad value: exit 65 naming the variable; the app never starts", async () => {
    for (const v of ["reboot", "Restart"]) {
      const r = await runInit("subreaper", () => [BB, "sh", "-c", "echo started; sleep 30"], { envFile: `MAN8S_HEALTHCHECK=${FAILING}\nMAN8S_HEALTH_ON_FAILURE=${v}\n` });
      expect(await exitOf(r)).toBe(65);
      expect(r.stderr()).toContain(`MAN8S_HEALTH_ON_FAILURE must be none, restart, stop, kill, got '${v}'`);
      expect(r.stdout()).not.toContain("started");
    }
  }, 30_000);
});
