// The probes through the real init (test/init/harness.ts), real processes only:
// - readiness: READY=1 through a real systemd-nspawn --notify-ready=yes (the init as PID 2 and as PID 1) with a
//   listener on nspawn's own NOTIFY_SOCKET, and as a subreaper with the listener as its NOTIFY_SOCKET;
// - MAN8S_WAIT_FOR: the ordering of two inits (B waits for A's port), every target needed, the timeout (75),
//   a stop during the wait;
// - MAN8S_HEALTHCHECK: the transitions in the status record, MAN8S_READY=healthy, the stop of running checks
//   (never drained);
// - bad probe variables (65).
// Apps are busybox-static (/bin/busybox on the host and in the rootfs). The nspawn containers share the host's
// network namespace (no --private-network), so a port one container opens on 127.0.0.1 is the one another probes.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { ensureBuilt, killLeftovers, runInit, WORK, type Mode, type RunOptions, type Running } from "../init/harness.ts";
import { NotifyListener, freePort, isRoot, type Message } from "./helpers.ts";

const BB = "/bin/busybox";
const canRun = isRoot && Bun.which("systemd-nspawn") !== null && existsSync(BB) && Bun.which("musl-gcc") !== null;

beforeAll(async () => {
  if (canRun) await ensureBuilt();
}, 120_000);
afterAll(killLeftovers);

let seq = 0;
const sockPath = () => `${WORK}/notify-${++seq}`;

/** The ways the init runs here: a subreaper on the host, or in a real nspawn container as PID 2 or PID 1. */
type Way = "subreaper" | "nspawn-pid2" | "nspawn-pid1";
const asRun = (way: Way): { mode: Mode; opts: RunOptions } =>
  way === "subreaper" ? { mode: "subreaper", opts: {} } : { mode: "nspawn", opts: way === "nspawn-pid1" ? { asPid1: true } : {} };

/** A shell command line for the app, run by busybox's sh (the host's /bin/sh may be another shell). */
const bbsh = (script: string) => [BB, "sh", "-c", script];

async function finish(r: Running, withinMs = 15_000): Promise<{ code: number | null; ms: number }> {
  const t = performance.now();
  const e = await Promise.race([r.exited, Bun.sleep(withinMs).then(() => null)]);
  if (!e) throw new Error(`the init did not exit within ${withinMs} ms\n--- stdout\n${r.stdout()}\n--- stderr\n${r.stderr()}`);
  expect(e.signal).toBeNull();
  return { code: e.code, ms: performance.now() - t };
}

async function until<T>(what: string, f: () => T | null | undefined | false, timeoutMs = 10_000, r?: Running): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${r ? `\n--- stderr\n${r.stderr()}` : ""}`);
    await Bun.sleep(10);
  }
}

async function tcpOpen(port: number): Promise<boolean> {
  try {
    const s = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
    s.end();
    return true;
  } catch {
    return false;
  }
}

/** Polls the port every few ms until it accepts: the last time it was seen closed, the first time open. */
async function watchPort(port: number, timeoutMs: number): Promise<{ lastClosed: number; firstOpen: number }> {
  const deadline = performance.now() + timeoutMs;
  let lastClosed = 0;
  for (;;) {
    const before = performance.now();
    if (await tcpOpen(port)) return { lastClosed, firstOpen: performance.now() };
    lastClosed = before; // it was closed at some moment after `before`
    if (performance.now() > deadline) throw new Error(`port ${port} never opened`);
    await Bun.sleep(3);
  }
}

const isReady = (m: Message) => /^READY=1$/m.test(m.text);

/** Live processes whose command line contains `token` (host view: container processes included). */
function procsWith(token: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const st = readFileSync(`/proc/${name}/stat`, "latin1");
      if (st.slice(st.lastIndexOf(")") + 2).startsWith("Z")) continue;
      if (readFileSync(`/proc/${name}/cmdline`, "latin1").includes(token)) out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}

describe.skipIf(!canRun)("readiness: READY=1 only once MAN8S_READY passes", () => {
  const ways: Way[] = ["nspawn-pid2", "nspawn-pid1", "subreaper"];
  test.each(ways)("%s: the app opens its port after 1 s; READY=1 reaches the listener only after that", async (way) => {
    const { mode, opts } = asRun(way);
    const port = freePort();
    const url = `tcp://127.0.0.1:${port}`;
    const sock = sockPath();
    const listener = new NotifyListener(sock);
    try {
      const inNspawn = mode === "nspawn";
      const r = await runInit(mode, () => bbsh(`sleep 1; echo opening; exec ${BB} httpd -f -p 127.0.0.1:${port}`), {
        ...opts,
        envFile: `MAN8S_READY=${url}\n`,
        // nspawn: the host listener is nspawn's own NOTIFY_SOCKET; it gives the container /run/host/notify.
        // subreaper: the init itself is pointed at the listener.
        ...(inNspawn ? { nspawnArgs: ["--notify-ready=yes"], hostEnv: { NOTIFY_SOCKET: sock } } : { env: { NOTIFY_SOCKET: sock } }),
      });
      const port0 = await watchPort(port, 15_000);
      const ready = await listener.waitFor(isReady, 5000);
      expect(ready).not.toBeNull();
      // nothing said READY while the port was still closed, and it came promptly after it opened
      expect(listener.messages.filter((m) => m.t <= port0.lastClosed).some(isReady)).toBe(false);
      expect(ready!.t).toBeGreaterThan(port0.lastClosed);
      expect(ready!.t - port0.firstOpen).toBeLessThan(1000);
      // the listener was hearing us before the port opened: the "waiting for" STATUS came first
      const waiting = listener.messages.find((m) => m.text.includes(`waiting for ${url}`));
      expect(waiting).toBeDefined();
      expect(waiting!.t).toBeLessThan(port0.lastClosed);
      if (inNspawn) {
        // nspawn forwards our STATUS= with READY=1
        expect(listener.messages.some((m) => m.text.includes(`STATUS=Container running: ready: ${url}`))).toBe(true);
      } else {
        expect(ready!.text).toContain(`STATUS=ready: ${url}`);
        expect(ready!.creds?.pid).toBe(await r.initPid()); // a subreaper claims nobody else's pid
      }
      const rec = await until("the ready field", () => r.status()?.ready as Record<string, any> | null, 5000, r);
      expect(rec.via).toBe(url);
      expect(rec.afterMs).toBeGreaterThan(800);
      expect(rec.attempts).toBeGreaterThan(1);
      expect(rec.notify.sent).toBe(true);
      if (inNspawn) expect(rec.notify).toMatchObject({ claimedPid: 1, socket: "/run/host/notify" });
      expect(r.status()?.mode).toBe(way === "nspawn-pid2" ? "pid2" : way === "nspawn-pid1" ? "pid1" : "subreaper");
      expect(r.stdout()).toContain("opening");
      await r.stop();
      await finish(r);
    } finally {
      listener.close();
    }
  }, 40_000);

  test("nspawn-pid2: MAN8S_READY unset: READY=1 as soon as the app starts", async () => {
    const sock = sockPath();
    const listener = new NotifyListener(sock);
    try {
      const r = await runInit("nspawn", () => [BB, "sleep", "30"], {
        envFile: "MAN8S_STOP_TIMEOUT=5\n",
        nspawnArgs: ["--notify-ready=yes"],
        hostEnv: { NOTIFY_SOCKET: sock },
      });
      const ready = await listener.waitFor(isReady, 15_000);
      expect(ready).not.toBeNull();
      // (READY=1 goes out right after the spawn; the record is written just after it)
      const rec = await until("the record's ready field", () => { const s = r.status(); return s?.ready ? s : null; }, 5000, r);
      expect(rec.app).not.toBeNull();
      // READY=1 came from the init (nspawn withholds its own with --notify-ready=yes), right after the spawn
      expect(listener.messages.some((m) => m.text.includes("STATUS=Container running: app started"))).toBe(true);
      const sinceStart = ready!.wall - Date.parse(rec.app.startedAt);
      expect(sinceStart).toBeGreaterThanOrEqual(-5);
      expect(sinceStart).toBeLessThan(1000);
      expect(rec.ready).toMatchObject({ via: "start", notify: { sent: true, claimedPid: 1, socket: "/run/host/notify" } });
      expect(rec.ready.afterMs).toBeLessThan(100);
      await r.stop();
      await finish(r);
    } finally {
      listener.close();
    }
  }, 40_000);
});

// The agent renders MAN8S_READY=start (no check to wait for) and none (the app notifies itself) by default.
describe.skipIf(!canRun)("MAN8S_READY=start and none, the agent's keywords", () => {
  test("subreaper: start sends READY=1 when the app starts; none never sends it, and neither is refused", async () => {
    for (const kw of ["start", "none"]) {
      const sock = sockPath();
      const listener = new NotifyListener(sock);
      try {
        const r = await runInit("subreaper", () => [BB, "sleep", "30"], { envFile: `MAN8S_READY=${kw}\nMAN8S_STOP_TIMEOUT=5\n`, env: { NOTIFY_SOCKET: sock } });
        const ready = await listener.waitFor(isReady, kw === "start" ? 10_000 : 1500);
        expect([kw, ready !== null]).toEqual([kw, kw === "start"]);
        const rec = await until("the running record", () => { const s = r.status(); return s?.phase === "running" ? s : null; }, 5000, r);
        expect(rec.ready ?? null).toEqual(kw === "start" ? expect.objectContaining({ via: "start" }) : null);
        await r.stop();
        expect((await finish(r)).code).toBe(143); // sleep ended by the stop signal, not exit 65 (bad env)
      } finally {
        listener.close();
      }
    }
  }, 40_000);
});

describe.skipIf(!canRun).each(["subreaper", "nspawn-pid2"] as Way[])("MAN8S_WAIT_FOR, init as %s", (way) => {
  const { mode, opts } = asRun(way);

  test("dependency ordering: B starts its app only after A's port is open", async () => {
    const port = freePort();
    // B first, so it surely has to wait
    const b = await runInit(mode, () => bbsh("echo B app started; exec sleep 30"), {
      ...opts,
      envFile: `MAN8S_WAIT_FOR=tcp://127.0.0.1:${port}\nMAN8S_WAIT_TIMEOUT=30\nMAN8S_STOP_TIMEOUT=5\n`,
    });
    await b.waitFor(/waiting for tcp:\/\/127\.0\.0\.1:\d+/, 15_000);
    const a = await runInit(mode, ({ dir }) => bbsh(`sleep 1; touch ${dir}/opening; echo A opening; exec ${BB} httpd -f -p 127.0.0.1:${port}`), {
      ...opts,
      envFile: "MAN8S_STOP_TIMEOUT=5\n",
    });
    try {
      await Bun.sleep(500); // A is in its 1 s sleep: its port is not open yet, and B is still waiting
      expect(existsSync(`${a.dir}/opening`)).toBe(false);
      expect(b.status()?.app).toBeNull();
      expect(b.status()?.phase).toBe("dependencies");
      await a.waitFor(/A opening/, 15_000);
      await b.waitFor(/B app started/, 10_000);
      const opened = statSync(`${a.dir}/opening`).mtimeMs; // ≤ the moment A's httpd bound the port
      const bRec = await until("B's app in its record", () => { const s = b.status(); return s?.app ? s : null; }, 5000, b);
      expect(Date.parse(bRec.app.startedAt)).toBeGreaterThanOrEqual(Math.floor(opened));
      expect(bRec.phases.dependencies).toBeGreaterThan(900);
      expect(b.stderr()).toMatch(new RegExp(`wait: tcp://127\\.0\\.0\\.1:${port} up after \\d+ ms \\(\\d+ attempts\\)`));
      expect(await tcpOpen(port)).toBe(true);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
      await Promise.all([finish(a), finish(b)]);
    }
  }, 60_000);

  test("every target must pass: an http:// answering 503 then 200, and an exec: probe run in the container", async () => {
    let code = 503;
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("x", { status: code }) });
    try {
      const http = `http://127.0.0.1:${server.port}/healthz`;
      // the exec: probe runs where the app does: in a container it sees the shared dir as /m8
      const go = mode === "nspawn" ? "/m8/go" : `${WORK}/go-${++seq}`;
      const r = await runInit(mode, () => bbsh("echo app started; exec sleep 30"), {
        ...opts,
        envFile: `MAN8S_WAIT_FOR=${http} "exec:test -f ${go}"\nMAN8S_WAIT_TIMEOUT=30\nMAN8S_STOP_TIMEOUT=5\n`,
      });
      const goHost = mode === "nspawn" ? `${r.dir}/go` : go;
      try {
        await r.waitFor(/waiting for /, 15_000);
        await Bun.sleep(500);
        expect(r.stderr()).not.toContain(`wait: ${http} up`); // 503 is not an answer
        code = 200;
        await r.waitFor(new RegExp(`wait: ${http.replace(/[./]/g, "\\$&")} up after`), 5000);
        await Bun.sleep(500); // the http target is up, the exec one is not: still waiting
        expect(r.status()?.app).toBeNull();
        expect(r.stdout()).not.toContain("app started");
        writeFileSync(goHost, "");
        const goAt = statSync(goHost).mtimeMs;
        await r.waitFor(/app started/, 5000);
        const rec = await until("the app in the record", () => { const s = r.status(); return s?.app ? s : null; }, 5000, r);
        expect(Date.parse(rec.app.startedAt)).toBeGreaterThanOrEqual(Math.floor(goAt));
        expect(r.stderr()).toContain(`wait: exec:test -f ${go} up after`);
      } finally {
        await r.stop();
        await finish(r);
      }
    } finally {
      server.stop(true);
    }
  }, 40_000);

  test("the wait times out: exit 75 naming both targets, the app never starts", async () => {
    const [p1, p2] = [freePort(), freePort()];
    const t0 = performance.now();
    const r = await runInit(mode, ({ dir }) => bbsh(`touch ${dir}/app-started`), {
      ...opts,
      envFile: `MAN8S_WAIT_FOR=tcp://127.0.0.1:${p1} http://127.0.0.1:${p2}/x\nMAN8S_WAIT_TIMEOUT=1\n`,
    });
    const f = await finish(r);
    const ms = performance.now() - t0;
    expect(f.code).toBe(75);
    expect(ms).toBeGreaterThan(900);
    expect(ms).toBeLessThan(10_000);
    const line = r.stderr().split("\n").find((l) => l.includes("MAN8S_WAIT_TIMEOUT (1 s) expired")) ?? "";
    expect(line).toContain(`tcp://127.0.0.1:${p1}`);
    expect(line).toContain(`http://127.0.0.1:${p2}/x`);
    expect(line).toContain("ECONNREFUSED");
    const rec = r.status()!;
    expect(rec.exit.code).toBe(75);
    expect(rec.app).toBeNull();
    expect(r.stderr()).not.toContain("starting [");
    expect(existsSync(`${r.dir}/app-started`)).toBe(false);
  }, 30_000);

  test("a stop request during the wait: clean exit 0, the app never starts", async () => {
    const port = freePort();
    const r = await runInit(mode, ({ dir }) => bbsh(`touch ${dir}/app-started`), {
      ...opts,
      envFile: `MAN8S_WAIT_FOR=tcp://127.0.0.1:${port}\nMAN8S_WAIT_TIMEOUT=0\n`,
    });
    await r.waitFor(/waiting for tcp:/, 15_000);
    await Bun.sleep(300); // a few attempts in
    expect(r.status()?.phase).toBe("dependencies");
    await r.stop();
    const f = await finish(r, 5000);
    expect(f.code).toBe(0);
    expect(f.ms).toBeLessThan(3000);
    const rec = r.status()!;
    expect(rec.exit).toMatchObject({ code: 0, app: null, drained: 0 });
    expect(rec.exit.reason).toContain("before the app started");
    expect(rec.app).toBeNull();
    expect(existsSync(`${r.dir}/app-started`)).toBe(false);
  }, 30_000);
});

const ns = (ms: number) => ms * 1_000_000;

/** Where the init's notifications go: nspawn's own NOTIFY_SOCKET (--notify-ready=yes), or the init's directly. */
const notifyTo = (mode: Mode, sock: string): RunOptions =>
  mode === "nspawn" ? { nspawnArgs: ["--notify-ready=yes"], hostEnv: { NOTIFY_SOCKET: sock } } : { env: { NOTIFY_SOCKET: sock } };

type Health = { status: string; failingStreak: number; log: { start: string; end: string; exitCode: number; output: string }[] };

describe.skipIf(!canRun).each(["subreaper", "nspawn-pid2", "nspawn-pid1"] as Way[])("MAN8S_HEALTHCHECK, init as %s", (way) => {
  const { mode, opts } = asRun(way);

  test("starting -> healthy -> unhealthy -> healthy as the app creates and removes its file; MAN8S_READY=healthy; log of 5; prompt stop", async () => {
    const file = `/tmp/m8hc-${process.pid}-${++seq}`;
    const hc = {
      Test: ["CMD-SHELL", `test -f ${file}`],
      Interval: ns(200), Timeout: ns(2000), StartPeriod: ns(60_000), StartInterval: ns(200), Retries: 2,
    };
    const sock = sockPath();
    const listener = new NotifyListener(sock);
    try {
      // the app: USR1 creates the file, USR2 removes it (the init forwards both to its process group: sh -c).
      // The shell outlives each sleep and exits 0 on TERM, so it leaves nothing behind.
      const r = await runInit(mode, () => bbsh(`trap "touch ${file}" USR1; trap "rm -f ${file}" USR2; trap "exit 0" TERM; echo app up; while :; do sleep 0.05; done`), {
        ...opts,
        ...notifyTo(mode, sock),
        envFile: `MAN8S_HEALTHCHECK=${JSON.stringify(hc)}\nMAN8S_READY=healthy\nMAN8S_STOP_TIMEOUT=5\n`,
      });
      await r.waitFor(/app up/, 15_000);
      const seen: string[] = [];
      let maxLog = 0;
      const health = () => {
        const h = r.status()?.health as Health | null;
        if (h) {
          if (seen[seen.length - 1] !== h.status) seen.push(h.status);
          maxLog = Math.max(maxLog, h.log.length);
        }
        return h;
      };
      const at = <T>(what: string, pred: (h: Health) => boolean) => until(what, () => { const h = health(); return h && pred(h) ? h : null; }, 10_000, r);

      // starting, with the failures inside the start period not counted
      const first = await at("two failed checks while starting", (h) => h.log.length >= 2);
      expect(first.status).toBe("starting");
      expect(first.failingStreak).toBe(0);
      expect(first.log.every((l) => l.exitCode === 1)).toBe(true);
      expect(listener.messages.some((m) => m.text.includes("waiting for the health check"))).toBe(true);
      const usr1At = performance.now();
      await r.kill("SIGUSR1");
      const healthy = await at("healthy", (h) => h.status === "healthy");
      // READY=1 (MAN8S_READY=healthy) went out with the first passing check, not before
      const ready = await listener.waitFor(isReady, 5000);
      expect(ready).not.toBeNull();
      expect(ready!.t).toBeGreaterThan(usr1At);
      expect(ready!.wall).toBeGreaterThanOrEqual(Date.parse(healthy.log.find((l) => l.exitCode === 0)!.end));
      expect(listener.messages.some((m) => /^STATUS=(Container running: )?healthy$/m.test(m.text))).toBe(true); // nspawn relays it apart

      await r.kill("SIGUSR2");
      const bad = await at("unhealthy", (h) => h.status === "unhealthy");
      expect(bad.failingStreak).toBeGreaterThanOrEqual(2);
      expect(bad.log.slice(-2).map((l) => l.exitCode)).toEqual([1, 1]);
      // after READY=1, health changes go out as STATUS= lines
      expect(await listener.waitFor((m) => m.text.includes("health: unhealthy (was healthy"), 5000)).not.toBeNull();

      await r.kill("SIGUSR1");
      const good = await at("healthy again", (h) => h.status === "healthy");
      expect(good.failingStreak).toBe(0);
      expect(good.log[good.log.length - 1]!.exitCode).toBe(0);
      await at("a full log", (h) => h.log.length === 5);
      await Bun.sleep(500); // more checks run; the log stays at 5
      health();
      expect(seen).toEqual(["starting", "healthy", "unhealthy", "healthy"]);
      expect(maxLog).toBe(5);
      expect(r.stderr()).toContain("health: unhealthy -> healthy");
      expect(listener.messages.filter(isReady).length).toBe(1);

      await r.stop();
      const f = await finish(r, 5000);
      expect(f.ms).toBeLessThan(3000);
      const rec = r.status()!;
      expect(rec.ready).toMatchObject({ via: "healthy", notify: { sent: true } });
      expect(rec.exit.app).toEqual({ code: 0, signal: null });
      expect(rec.exit.drained).toBe(0); // the app left nothing; the checks were stopped, not drained
      expect(procsWith(file)).toEqual([]);
    } finally {
      listener.close();
      rmSync(file, { force: true }); // in the subreaper way the app's /tmp is the host's
    }
  }, 60_000);

  test("a stop while a check is running: the check is killed, not drained; the app's one leftover is; prompt exit", async () => {
    const token = `77.${process.pid}${++seq}`;
    const leftover = `301.${process.pid}${seq}`;
    const hc = { Test: ["CMD", "sleep", token], Interval: ns(100), Timeout: ns(60_000) };
    // the app leaves one process outside its group (setsid): the drain's to stop, and the only one it counts
    const r = await runInit(mode, () => bbsh(`${BB} setsid ${BB} sleep ${leftover} & exec ${BB} sleep 300`), {
      ...opts,
      envFile: `MAN8S_HEALTHCHECK=${JSON.stringify(hc)}\nMAN8S_STOP_TIMEOUT=20\n`,
    });
    await until("the check process and the app's leftover", () => procsWith(token).length && procsWith(leftover).length, 15_000, r);
    expect(r.status()?.health?.status).toBe("starting");
    await r.stop();
    const f = await finish(r, 10_000);
    expect(f.ms).toBeLessThan(3000); // neither the 60 s check timeout nor the 20 s stop timeout
    const rec = r.status()!;
    expect(rec.exit.app).toEqual({ code: null, signal: "SIGTERM" });
    expect(rec.exit.drained).toBe(1);
    expect(rec.health.log).toEqual([]); // a result after the stop is ignored, as in Docker
    expect(procsWith(token)).toEqual([]);
    expect(procsWith(leftover)).toEqual([]);
  }, 40_000);

  test("the app exits by itself during a check and before readiness: its code passes through, nothing drained", async () => {
    const token = `78.${process.pid}${++seq}`;
    const hc = { Test: ["CMD", "sleep", token], Interval: ns(100), Timeout: ns(60_000) };
    const r = await runInit(mode, () => bbsh("sleep 1; exit 3"), {
      ...opts,
      envFile: `MAN8S_HEALTHCHECK=${JSON.stringify(hc)}\nMAN8S_READY=tcp://127.0.0.1:${freePort()}\nMAN8S_STOP_TIMEOUT=20\n`,
    });
    await until("the check process", () => procsWith(token)[0], 15_000, r);
    const f = await finish(r, 10_000);
    expect(f.code).toBe(3);
    expect(f.ms).toBeLessThan(3000);
    const rec = r.status()!;
    expect(rec.exit).toMatchObject({ code: 3, app: { code: 3, signal: null }, drained: 0 });
    expect(rec.ready).toBeNull();
    expect(procsWith(token)).toEqual([]);
  }, 40_000);
});

describe.skipIf(!canRun)("bad probe variables exit 65 naming the variable, before the app starts", () => {
  const cases: [Way, string, string][] = [
    ["subreaper", "MAN8S_WAIT_FOR=tcp://127.0.0.1:1 ftp://example.org/\n", "MAN8S_WAIT_FOR"],
    ["subreaper", 'MAN8S_HEALTHCHECK={"Test":["CMD","true"],"Interval":"soon"}\n', "MAN8S_HEALTHCHECK"],
    ["subreaper", "MAN8S_READY=tcp://127.0.0.1\n", "MAN8S_READY"],
    ["subreaper", "MAN8S_WAIT_FOR=tcp://127.0.0.1:1\nMAN8S_WAIT_TIMEOUT=forever\n", "MAN8S_WAIT_TIMEOUT"],
    ["subreaper", "MAN8S_WAIT_PROBE_TIMEOUT=2x\n", "MAN8S_WAIT_PROBE_TIMEOUT"], // checked even when unused
    ["nspawn-pid2", 'MAN8S_HEALTHCHECK={"Test":["CMD-SHELL","true"],"Retries":-1}\n', "MAN8S_HEALTHCHECK"],
    ["nspawn-pid2", "MAN8S_READY_INTERVAL=often\n", "MAN8S_READY_INTERVAL"], // MAN8S_READY unset: unused, checked
  ];
  test.each(cases)("%s: %p -> 65 naming %s", async (way, envFile, name) => {
    const { mode, opts } = asRun(way);
    const r = await runInit(mode, ({ dir }) => bbsh(`touch ${dir}/app-started`), { ...opts, envFile });
    const f = await finish(r);
    expect(f.code).toBe(65);
    expect(r.stderr()).toMatch(new RegExp(`man8s-init: ${name}\\b`));
    expect(r.status()?.exit?.code).toBe(65);
    expect(r.status()?.app).toBeNull();
    expect(existsSync(`${r.dir}/app-started`)).toBe(false);
  }, 30_000);
});
