// Delays from the env file longer than Bun's timer limit (2^31-1 ms, 24.8 days) must wait, through the real
// init: before common/timer.ts was used everywhere, each of these fired after 1 ms.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { ensureBuilt, killLeftovers, runInit, WORK, type Running } from "./harness.ts";
import { freePort } from "../probes/helpers.ts";

const BB = "/bin/busybox";
beforeAll(ensureBuilt, 120_000);
afterAll(killLeftovers);

const DAY_NS = 24 * 3600 * 1e9;

async function stopAndWait(r: Running): Promise<number | null> {
  await r.stop();
  const e = await Promise.race([r.exited, Bun.sleep(15_000).then(() => null)]);
  if (!e) throw new Error(`the init did not exit after a stop\n${r.stderr()}`);
  return e.code;
}

/** utime+stime of a process in clock ticks (1/100 s) */
function cpuTicks(pid: number): number {
  const st = readFileSync(`/proc/${pid}/stat`, "latin1");
  const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]);
}

test("MAN8S_WAIT_TIMEOUT=1000h waits (no exit 75 after a few ms)", async () => {
  const port = freePort(); // nothing listens: the wait can only end by the timeout or a stop
  const r = await runInit("subreaper", () => [BB, "true"], {
    envFile: `MAN8S_WAIT_FOR=tcp://127.0.0.1:${port}\nMAN8S_WAIT_TIMEOUT=1000h\n`,
  });
  await r.waitFor(/waiting for tcp:/);
  const early = await Promise.race([r.exited, Bun.sleep(1500).then(() => null)]);
  expect(early).toBeNull(); // before the fix: exit 75 "MAN8S_WAIT_TIMEOUT (3600000 s) expired" at once
  expect(r.status()?.phase).toBe("dependencies");
  expect(await stopAndWait(r)).toBe(0); // a stop during the wait: nothing started, exit 0
  expect(r.stderr()).not.toContain("expired");
}, 30_000);

let seq = 0;
const marker = () => `${WORK}/checks-${process.pid}-${++seq}`;

test("a Healthcheck Interval of 30 days runs no check during the test", async () => {
  const checks = marker();
  const hc = { Test: ["CMD", BB, "sh", "-c", `echo x >> ${checks}`], Interval: 30 * DAY_NS };
  const r = await runInit("subreaper", () => [BB, "sleep", "30"], { envFile: `MAN8S_HEALTHCHECK=${JSON.stringify(hc)}\n` });
  await r.waitFor(/starting \[/);
  await Bun.sleep(2000);
  // before the fix: the check ran back to back (about a thousand times in 2 s)
  expect(existsSync(checks) ? readFileSync(checks, "utf8").length / 2 : 0).toBe(0);
  expect(r.status()?.health?.status).toBe("starting");
  await stopAndWait(r);
}, 30_000);

test('Healthcheck Timeout "720h" does not make every check time out', async () => {
  const hc = { Test: ["CMD", BB, "sh", "-c", "sleep 0.2"], Interval: "300ms", Timeout: "720h" };
  const r = await runInit("subreaper", () => [BB, "sleep", "30"], { envFile: `MAN8S_HEALTHCHECK=${JSON.stringify(hc)}\n` });
  await r.waitFor(/health: starting -> (healthy|unhealthy)/, 10_000);
  const h = r.status()?.health;
  // before the fix: exit -1 "Health check exceeded timeout (720h0m0s)" three times, then unhealthy
  expect(h?.status).toBe("healthy");
  expect(h?.log?.[0]?.exitCode).toBe(0);
  await stopAndWait(r);
}, 30_000);

test("MAN8S_READY_INTERVAL of 30 days: one attempt, then no polling", async () => {
  const attempts = marker();
  const r = await runInit("subreaper", () => [BB, "sleep", "30"], {
    envFile: `MAN8S_READY=exec:echo x >> ${attempts}; exit 1\nMAN8S_READY_INTERVAL=720h\n`,
  });
  await r.waitFor(/starting \[/);
  await Bun.sleep(2000);
  // before the fix: the failing probe ran again ~1 ms after each attempt, hundreds of times
  expect(readFileSync(attempts, "utf8").length / 2).toBe(1);
  await stopAndWait(r);
}, 30_000);

test("a huge MAN8S_NETWORK_TIMEOUT does not poll every 1 ms (a container with no interface)", async () => {
  // --private-network: only lo, so the network phase waits for an interface that never comes
  const r = await runInit("nspawn", () => [BB, "true"], {
    envFile: "MAN8S_NETWORK=v4\nMAN8S_NETWORK_TIMEOUT=2592000\n",
    nspawnArgs: ["--private-network"],
  });
  const pid = await r.initPid();
  await r.waitFor(/starting as/);
  await Bun.sleep(500);
  expect(r.status()?.phase).toBe("network");
  const t0 = cpuTicks(pid);
  await Bun.sleep(2000);
  const used = cpuTicks(pid) - t0;
  // before the fix: a netlink dump every ~1 ms (11 ticks in 2 s measured); waiting on events: none
  expect(used).toBeLessThanOrEqual(3);
  expect(await stopAndWait(r)).toBe(0);
  expect(r.status()?.exit?.code).toBe(0);
}, 40_000);
