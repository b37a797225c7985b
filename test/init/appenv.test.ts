// What reaches the app's environment, through the real init: the init's own control variables stay with
// the init (MAN8S_APPLICATION_ARGV alone made a long argv fail with E2BIG), everything else is exported.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { ensureBuilt, killLeftovers, runInit, WORK, type Running } from "./harness.ts";

const BB = "/bin/busybox";
beforeAll(ensureBuilt, 120_000);
afterAll(killLeftovers);

async function exited(r: Running, withinMs = 20_000): Promise<number | null> {
  const e = await Promise.race([r.exited, Bun.sleep(withinMs).then(() => null)]);
  if (!e) throw new Error(`the init did not exit within ${withinMs} ms\n${r.stderr()}`);
  expect(e.signal).toBeNull();
  return e.code;
}

const names = (envOutput: string) => envOutput.split("\n").map((l) => l.slice(0, l.indexOf("="))).filter(Boolean);

test("a 40,000-word argv runs; the app gets no MAN8S_APPLICATION_ARGV but the container's own variables", async () => {
  const words = Array.from({ length: 40_000 }, (_, i) => `word-${i}`);
  const argv = [BB, "sh", "-c", 'echo "argc $# last ${40000}"; env', "sh", ...words];
  expect(JSON.stringify(argv).length).toBeGreaterThan(128 * 1024); // over the kernel's limit for one env string
  const r = await runInit("subreaper", () => [], {
    envFile: `MAN8S_APPLICATION_ARGV=${JSON.stringify(argv)}\nMAN8S_APPLICATION_ARGS=unused\nMAN8S_CONTAINER_NAME=m8i-argv\nMAN8S_STOP_TIMEOUT=5\nMY_SETTING=1\n`,
  });
  // before the fix: E2BIG, "cannot execute /bin/busybox", 126
  expect(await exited(r)).toBe(0);
  const out = r.stdout();
  expect(out).toContain("argc 40000 last word-39999");
  const seen = names(out);
  expect(seen).toContain("MY_SETTING");
  expect(seen).toContain("MAN8S_CONTAINER_NAME");
  expect(seen).toContain("MAN8S_STOP_TIMEOUT"); // small settings stay visible
  expect(seen).not.toContain("MAN8S_APPLICATION_ARGV");
  expect(seen).not.toContain("MAN8S_APPLICATION_ARGS");
  // the record keeps the first words and the count, not 440 KB rewritten at every change
  const rec = r.status()!;
  expect(rec.app.argc).toBe(argv.length);
  expect(rec.app.argv.slice(0, 3)).toEqual([BB, "sh", "-c"]);
  expect(JSON.stringify(rec).length).toBeLessThan(16 * 1024);
}, 30_000);

test("health checks run with the app's environment, without the init's command-carrying variables", async () => {
  const file = `${WORK}/hc-env-${process.pid}`;
  const hc = { Test: ["CMD-SHELL", `env > ${file}`], Interval: "100ms" };
  const r = await runInit("subreaper", () => [BB, "sleep", "30"], {
    envFile: `MAN8S_HEALTHCHECK=${JSON.stringify(hc)}\nMAN8S_READY=healthy\nMAN8S_WAIT_FOR=exec:true\nMAN8S_CONTAINER_NAME=m8i-hc\nMY_SETTING=2\n`,
  });
  await r.waitFor(/health: starting -> healthy/);
  await r.stop();
  await exited(r);
  const seen = names(readFileSync(file, "utf8"));
  expect(seen).toContain("MY_SETTING");
  expect(seen).toContain("MAN8S_CONTAINER_NAME");
  // before the fix: the check saw its own definition and every other control variable
  expect(seen.filter((n) => ["MAN8S_HEALTHCHECK", "MAN8S_READY", "MAN8S_WAIT_FOR"].includes(n))).toEqual([]);
}, 30_000);

test("an exported variable longer than the kernel allows fails with 65 naming it, nothing started", async () => {
  const r = await runInit("subreaper", () => [BB, "echo", "started"], { envFile: `HUGE=${"x".repeat(200_000)}\n` });
  // before the fix: 126 "cannot execute /bin/busybox" (E2BIG), naming no variable
  expect(await exited(r)).toBe(65);
  expect(r.stderr()).toContain("HUGE: 200006 bytes; one environment string may not exceed 131072 bytes");
  expect(r.stdout()).not.toContain("started");
}, 30_000);
