// sd_notify over a real AF_UNIX datagram socket (credentials checked with SO_PASSCRED), and MAN8S_READY in-process.
import { describe, expect, test } from "bun:test";
import { sdNotify, claimPidFor, notifySocket } from "../../common/sd-notify.ts";
import { startReady } from "../../probes/ready.ts";
import { startHealth } from "../../probes/healthcheck.ts";
import { checkProbeEnv } from "../../probes/settings.ts";
import { NotifyListener, freePort, isRoot, tempDir } from "./helpers.ts";
import { waitFor } from "../wait.ts";

describe("sd_notify with SCM_CREDENTIALS", () => {
  test("one datagram with our credentials to a path socket and to an abstract @socket", async () => {
    const dir = tempDir("notify");
    const abstract = `@m8p-notify-${process.pid}`;
    const a = new NotifyListener(`${dir.path}/notify`);
    const b = new NotifyListener(abstract);
    try {
      const r1 = sdNotify(["READY=1", "STATUS=hello"], { env: { NOTIFY_SOCKET: `${dir.path}/notify` } });
      expect(r1).toMatchObject({ sent: true, claimedPid: process.pid });
      const r2 = sdNotify("STATUS=abstract\n", { env: { NOTIFY_SOCKET: abstract } });
      expect(r2.sent).toBe(true);
      const m1 = await a.waitFor(() => true, 2000);
      const m2 = await b.waitFor(() => true, 2000);
      expect(m1?.text).toBe("READY=1\nSTATUS=hello\n");
      expect(m1?.creds).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
      expect(m2?.text).toBe("STATUS=abstract\n");
    } finally {
      a.close();
      b.close();
      dir.remove();
    }
  });

  test.skipIf(!isRoot)("claiming another pid (what PID 2 does for nspawn) puts that pid in the credentials", async () => {
    const dir = tempDir("notify");
    const l = new NotifyListener(`${dir.path}/notify`);
    try {
      const r = sdNotify("READY=1", { env: { NOTIFY_SOCKET: `${dir.path}/notify` }, claimPid: process.ppid });
      expect(r).toMatchObject({ sent: true, claimedPid: process.ppid });
      const m = await l.waitFor(() => true, 2000);
      expect(m?.creds?.pid).toBe(process.ppid);
    } finally {
      l.close();
      dir.remove();
    }
  });

  test("PID 2 claims pid 1; no socket or a dead socket is reported, not thrown", () => {
    expect(claimPidFor(2)).toBe(1);
    expect(claimPidFor(1)).toBe(1);
    expect(claimPidFor(4242)).toBe(4242);
    expect(notifySocket({})).toBeNull();
    expect(notifySocket({ NOTIFY_SOCKET: "vsock:2:1" })).toBeNull();
    expect(sdNotify("READY=1", { env: {} })).toMatchObject({ sent: false });
    const dead = sdNotify("READY=1", { env: { NOTIFY_SOCKET: "/nonexistent/m8p/notify" } });
    expect(dead.sent).toBe(false);
    expect(dead.error).toContain("/nonexistent/m8p/notify");
  });
});

describe("MAN8S_READY", () => {
  test("a probe URL: READY=1 only after the port opens, within one interval (+ slack)", async () => {
    const dir = tempDir("ready");
    const l = new NotifyListener(`${dir.path}/notify`);
    const port = freePort();
    let server: Bun.TCPSocketListener<undefined> | undefined;
    let opened = 0;
    const env = { NOTIFY_SOCKET: `${dir.path}/notify`, MAN8S_READY: `tcp://127.0.0.1:${port}`, MAN8S_READY_INTERVAL: "50ms" };
    const readyCalls: unknown[] = [];
    const h = startReady(env, { log: () => {}, onReady: (i) => readyCalls.push(i) });
    try {
      expect(await l.waitFor((m) => m.text.includes(`STATUS=waiting for tcp://127.0.0.1:${port}`), 3000)).not.toBeNull();
      await Bun.sleep(300); // several intervals with the port closed
      expect(h.isReady()).toBe(false);
      expect(l.messages.some((m) => m.text.includes("READY=1"))).toBe(false);
      server = Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } });
      opened = performance.now();
      const m = await l.waitFor((x) => x.text.includes("READY=1"), 3000);
      expect(m).not.toBeNull();
      expect(m!.t).toBeGreaterThanOrEqual(opened);
      expect(m!.t - opened).toBeLessThan(50 + 250); // interval + generous slack for a shared machine
      expect(m!.text).toContain(`STATUS=ready: tcp://127.0.0.1:${port}`);
      const info = await h.done;
      expect(info).toMatchObject({ via: `tcp://127.0.0.1:${port}`, notify: { sent: true } });
      expect(info!.attempts).toBeGreaterThan(1);
      expect(readyCalls).toHaveLength(1);
    } finally {
      await h.stop();
      server?.stop(true);
      l.close();
      dir.remove();
    }
  });

  test("healthy: READY=1 at the first healthy result; later health changes are sent as STATUS=", async () => {
    const dir = tempDir("ready");
    const l = new NotifyListener(`${dir.path}/notify`);
    const flag = `${dir.path}/ok`;
    const env = {
      NOTIFY_SOCKET: `${dir.path}/notify`,
      MAN8S_READY: "healthy",
      MAN8S_HEALTHCHECK: JSON.stringify({ Test: ["CMD-SHELL", `test -e ${flag}`], Interval: 30_000_000, Retries: 1 }),
    };
    const health = startHealth(env, { log: () => {} })!;
    const h = startReady(env, { log: () => {}, health });
    try {
      await waitFor("the first health check", () => health.state().status !== "starting", 3000, 10);
      expect(health.state().status).toBe("unhealthy");
      expect(h.isReady()).toBe(false);
      await Bun.write(flag, "");
      const m = await l.waitFor((x) => x.text.includes("READY=1"), 3000);
      expect(m?.text).toBe("READY=1\nSTATUS=healthy\n");
      const { rmSync } = await import("node:fs");
      rmSync(flag);
      const s = await l.waitFor((x) => x.text.includes("STATUS=health: unhealthy"), 3000);
      expect(s?.text).toContain("was healthy");
    } finally {
      await h.stop();
      await health.stop();
      l.close();
      dir.remove();
    }
  });

  test("unset: ready at once; stop() before readiness resolves done with null and sends nothing", async () => {
    const dir = tempDir("ready");
    const l = new NotifyListener(`${dir.path}/notify`);
    try {
      const a = startReady({ NOTIFY_SOCKET: `${dir.path}/notify` }, { log: () => {} });
      expect((await a.done)?.via).toBe("start");
      expect((await l.waitFor((x) => x.text.includes("READY=1"), 2000))?.text).toBe("READY=1\nSTATUS=app started\n");
      await a.stop();
      const before = l.messages.length;
      const b = startReady({ NOTIFY_SOCKET: `${dir.path}/notify`, MAN8S_READY: `tcp://127.0.0.1:${freePort()}` }, { log: () => {}, intervalMs: 20 });
      await Bun.sleep(100);
      await b.stop();
      expect(await b.done).toBeNull();
      await Bun.sleep(60);
      expect(l.messages.slice(before).some((m) => m.text.includes("READY=1"))).toBe(false);
    } finally {
      l.close();
      dir.remove();
    }
  });

  test("checkProbeEnv rejects every bad probe variable with exit code 65 and the variable named", () => {
    const bad: [Record<string, string>, string][] = [
      [{ MAN8S_WAIT_FOR: "tcp://x" }, "MAN8S_WAIT_FOR"],
      [{ MAN8S_WAIT_TIMEOUT: "x" }, "MAN8S_WAIT_TIMEOUT"],
      [{ MAN8S_HEALTHCHECK: "{" }, "MAN8S_HEALTHCHECK"],
      [{ MAN8S_READY: "nope" }, "MAN8S_READY"],
      [{ MAN8S_READY_INTERVAL: "fast" }, "MAN8S_READY_INTERVAL"],
    ];
    for (const [env, name] of bad) {
      let err: { code?: number; message?: string } = {};
      try {
        checkProbeEnv(env);
      } catch (e) {
        err = e as typeof err;
      }
      expect(err.code).toBe(65);
      expect(err.message).toContain(name);
    }
    const warnings: string[] = [];
    checkProbeEnv({ MAN8S_WAIT_FOR: "tcp://a:1 exec:true", MAN8S_READY: "healthy" }, (w) => warnings.push(w));
    expect(warnings[0]).toContain("MAN8S_READY=healthy without a MAN8S_HEALTHCHECK");
  });
});
