// Signal intake (issue 10 items 1 and 4): every signal 1–64 that can be caught, sent by kill to the
// real init with 0, 1, 26 and 100 inherited fds, in the three modes (nspawn passes no extra fds).
// The app is sigapp built against glibc, which can wait for 34 (musl reserves it).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { ensureBuilt, fixture, killLeftovers, runInit, signalCounts, type Mode } from "./harness.ts";

beforeAll(async () => {
  await ensureBuilt();
  await fixture("sigapp", { glibc: true });
}, 120_000);
afterAll(killLeftovers);

const STOPS = [15, 2, 37, 38, 39, 40];
/** Handled but not forwarded: CHLD (reaping), 32 (glibc's cancel signal would kill a glibc app) */
const HANDLED_ONLY = [17, 32];
/** Left alone on purpose: PIPE ignored, PWR the engine's, 33 glibc's; each must still not kill the init */
const LEFT_ALONE = [13, 30, 33];
const ALL = Array.from({ length: 64 }, (_, i) => i + 1).filter((s) => s !== 9 && s !== 19 && !STOPS.includes(s));
const FORWARDED = ALL.filter((s) => !HANDLED_ONLY.includes(s) && !LEFT_ALONE.includes(s));

const CASES: Array<[Mode, number]> = [
  ["subreaper", 0], ["subreaper", 1], ["subreaper", 26], ["subreaper", 100],
  ["pid1", 0], ["pid1", 1], ["pid1", 26], ["pid1", 100],
  ["nspawn", 0],
];

describe.each(CASES)("init as %s with %d inherited fds", (mode, fds) => {
  test("no signal kills it: each one is forwarded once, handled, or left to a harmless default; every stop signal stops", async () => {
    const r = await runInit(mode, ({ bin }) => [bin("sigapp-glibc"), "-x", "0"], { inheritFds: fds, envFile: "MAN8S_STOP_TIMEOUT=2\n" });
    await r.waitFor(/^ready /m);
    const pid = await r.initPid();
    // the fds really reached the init (nspawn gives it none of its own)
    expect(readdirSync(`/proc/${pid}/fd`).length).toBeGreaterThanOrEqual(3 + fds);
    expect(r.stderr()).toMatch(/59 signals handled/);
    for (const s of ALL) {
      process.kill(pid, s);
      if (FORWARDED.includes(s)) await r.waitFor(new RegExp(`^sig ${s} from`, "m"), 5000);
      else if (s === 32) await r.waitFor(/signal 32 \(libc's thread-cancel signal\) received: not forwarded/, 5000);
      else await Bun.sleep(30);
      expect([s, readdirSync("/proc").includes(String(pid))]).toEqual([s, true]);
    }
    await Bun.sleep(100);
    const counts = signalCounts(r.stdout());
    for (const s of FORWARDED) expect([s, counts.get(s)]).toEqual([s, 1]);
    expect([...counts.keys()].sort((a, b) => a - b)).toEqual(FORWARDED);

    // the stop: SIGTERM first, then every other stop signal while the app (which ignores it) is given
    // its 2 s; none may kill the init, none is resent; the init then SIGKILLs the app and exits 137
    process.kill(pid, 15);
    await r.waitFor(/SIGTERM: stopping the app/);
    for (const s of STOPS.slice(1)) process.kill(pid, s);
    const e = await r.exited;
    expect(e.signal).toBeNull();
    expect(r.status()?.exit?.code).toBe(137);
    expect(signalCounts(r.stdout()).get(15)).toBe(1);
    expect(r.stderr().match(/stop already in progress, not resent/g)?.length).toBe(STOPS.length - 1);
  }, 60_000);
});
