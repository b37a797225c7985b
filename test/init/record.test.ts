// The status record says what really happened, through the real init: who killed the app and why, what the
// app did with its stop signal, the health status of a container that is gone, and the record's own writes
// (a full filesystem leaves no temp file behind, and the final record is the one that stays).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { $ } from "zx";
import { busyboxRootfs, ensureBuilt, fixture, killLeftovers, runInit, WORK, type Running } from "./harness.ts";

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

test("leftovers SIGKILLed by the drain are counted apart; the app that obeyed was not escalated", async () => {
  // it says "left" once its trap is set: until then a stop signal to the app's group would end it (a race under load)
  const leftover = "trap '' TERM; echo left; while :; do sleep 0.1; done";
  const r = await runInit("subreaper", () => [BB, "sh", "-c", `${BB} setsid ${BB} sh -c "${leftover}" & echo up; exec ${BB} sleep 30`], {
    envFile: "MAN8S_STOP_TIMEOUT=1\n",
  });
  await Promise.all([r.waitFor(/^up$/m), r.waitFor(/^left$/m)]);
  await r.stop();
  expect(await exited(r)).toBe(143);
  const rec = r.status()!;
  expect(rec.stop).toMatchObject({ escalated: false, escalatedAt: null });
  expect(rec.exit.killedAfterTimeout).toBe(false);
  expect(rec.exit.drained).toBeGreaterThanOrEqual(1);
  expect(rec.exit.drainKilled).toBeGreaterThanOrEqual(1); // before: no such field, only a log line
}, 30_000);

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

let seq = 0;

/** A tmpfs of `size` bytes of our own, unmounted afterwards (each file takes whole 4 KiB pages). */
async function withTmpfs<T>(size: number, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = `${WORK}/tmpfs-${++seq}`;
  mkdirSync(dir, { recursive: true });
  await $`mount -t tmpfs -o size=${size},mode=0755 m8i-full ${dir}`;
  try {
    return await fn(dir);
  } finally {
    await $`umount ${dir}`.nothrow();
  }
}

describe("writing the record on a full filesystem", () => {
  test("room for one record only: the final record says exited, and no temp file is left", async () => {
    await withTmpfs(4096, async (dir) => {
      const file = `${dir}/status.json`;
      const r = await runInit("subreaper", () => [BB, "sh", "-c", "echo up; sleep 0.5; exit 7"], {
        env: { MAN8S_STATUS_FILE: file },
        envFile: `MAN8S_HEALTHCHECK=${JSON.stringify({ Test: ["CMD", BB, "true"], Interval: "100ms" })}\n`,
      });
      expect(await exited(r)).toBe(7);
      const rec = JSON.parse(readFileSync(file, "utf8"));
      // before the fix: "running" (every later write failed for want of room for the temp copy)
      expect(rec.phase).toBe("exited");
      expect(rec.exit.code).toBe(7);
      expect(readdirSync(dir)).toEqual(["status.json"]); // before: status.json.PID.tmp stayed
      expect(statSync(file).mode & 0o777).toBe(0o644);
    });
  }, 30_000);

  test("no room at all: no temp file, and one log line, not one per write", async () => {
    await withTmpfs(4096, async (dir) => {
      writeFileSync(`${dir}/filler`, Buffer.alloc(4096));
      const file = `${dir}/status.json`;
      const r = await runInit("subreaper", () => [BB, "sh", "-c", "sleep 0.5; exit 5"], {
        env: { MAN8S_STATUS_FILE: file },
        envFile: `MAN8S_HEALTHCHECK=${JSON.stringify({ Test: ["CMD", BB, "true"], Interval: "50ms" })}\n`,
      });
      expect(await exited(r)).toBe(5);
      expect(readdirSync(dir)).toEqual(["filler"]);
      expect(r.stderr().match(/cannot write status record/g)?.length).toBe(1);
    });
  }, 30_000);
});

describe("the record's directory is the init's own", () => {
  test("created with mode 0755 and the record 0644 whatever the umask, so any user of the app can read it", async () => {
    const file = `${WORK}/fresh-${++seq}/man8s/status.json`;
    await fixture("sigapp"); // built before the umask changes: nothing else may be made under 077
    const old = process.umask(0o077);
    let r: Running;
    try {
      r = await runInit("subreaper", () => [BB, "true"], { env: { MAN8S_STATUS_FILE: file } });
    } finally {
      process.umask(old);
    }
    expect(await exited(r)).toBe(0);
    // before the fix: 0700 and 0600 (the umask applied)
    expect((statSync(file.replace("/status.json", "")).mode & 0o777).toString(8)).toBe("755");
    expect((statSync(file).mode & 0o777).toString(8)).toBe("644");
  }, 30_000);

  describe("under PrivateUsers=pick (systemd-nspawn -U), as the agent installs containers", () => {
    const agentDir = `${WORK}/agent-dir`;
    const app = [BB, "sh", "-c", "sleep 0.3; stat -c 'dir %u %a' /run/man8s; cat /run/man8s/status.json; echo END"];

    test("the agent's bind at /run/man8s-agent: the init makes /run/man8s (root, 0755) and the app reads the record", async () => {
      mkdirSync(agentDir, { recursive: true });
      const rootfs = await busyboxRootfs("rootfs-userns");
      const r = await runInit("nspawn", () => app, {
        rootfs, bindRunMan8s: false, nspawnArgs: ["-U", `--bind-ro=${agentDir}:/run/man8s-agent`],
      });
      expect(await exited(r)).toBe(0);
      const out = r.stdout();
      expect(out).toContain("dir 0 755");
      const rec = JSON.parse(out.slice(out.indexOf("{"), out.lastIndexOf("}") + 1));
      expect(rec.phase).toBe("running");
      expect(r.stderr()).not.toContain("status record");
    }, 60_000);

    test("a bind below /run/man8s (the old agent layout): the init says why the record cannot be written", async () => {
      mkdirSync(agentDir, { recursive: true });
      const rootfs = await busyboxRootfs("rootfs-userns");
      const r = await runInit("nspawn", () => [BB, "true"], {
        rootfs, bindRunMan8s: false, nspawnArgs: ["-U", `--bind-ro=${agentDir}:/run/man8s/agent`],
      });
      expect(await exited(r)).toBe(0);
      // before the fix: only "cannot write status record /run/man8s/status.json: EACCES ..."
      expect(r.stderr()).toMatch(/directory \/run\/man8s is not usable: .*owned by uid 65534.*bind nothing under it \(the agent's directory is \/run\/man8s-agent\)/);
      expect(r.stderr().match(/cannot write status record/g)?.length).toBe(1);
    }, 60_000);
  });
});
