// The supervisor's state machine alone (init/supervisor-state.ts): no root, no processes, a fake clock and
// process table. The same sequences run end to end through the real init in supervise.test.ts,
// record.test.ts, signals.test.ts and health-action.test.ts; these pin the transitions.
import { describe, expect, test } from "bun:test";
import {
  type Ctx, DRAIN_POLL_MS, exitRecord, HUP_WINDOW_MS, type Input, KILL_WAIT_MS, newCtx, type Output, type Proc,
  type SignalState, step, stopRecord, type Timer,
} from "../../init/supervisor-state.ts";

const APP = 100;
const TIMEOUT = 10_000;

/** A machine with a fake clock, a fake process table and the timers it armed. */
function machine(o: { pid1?: boolean; signalState?: SignalState } = {}) {
  let now = 1_000_000;
  const procs: Proc[] = [];
  const c: Ctx = newCtx({ stopSignal: 15, stopTimeoutMs: TIMEOUT, pid1: o.pid1 ?? false });
  const armed = new Map<Timer, number>();
  const io = { now: () => now, descendants: () => procs.slice(), signalState: () => o.signalState ?? "handled" };
  const feed = (i: Input): Output[] => {
    const out = step(c, i, io);
    for (const x of out) {
      if (x.do === "arm") armed.set(x.timer, now + x.ms);
      if (x.do === "cancel") armed.delete(x.timer);
    }
    return out;
  };
  /** advance the clock to the timer's due time and fire it (it must be armed) */
  const fire = (t: Timer): Output[] => {
    const due = armed.get(t);
    if (due === undefined) throw new Error(`timer ${t} is not armed (${[...armed.keys()].join(",")})`);
    now = Math.max(now, due);
    armed.delete(t);
    return feed({ type: "timer", timer: t });
  };
  const start = (group = false) => {
    procs.push({ pid: APP, pgid: group ? APP : 1 });
    feed({ type: "spawned", pid: APP, group });
  };
  /** the app leaves the process table and its exit is fed in */
  const exit = (e: { code: number; signal: number | null }) => {
    procs.splice(procs.findIndex((p) => p.pid === APP), 1);
    return feed({ type: "appExited", pid: APP, exit: e });
  };
  return { c, feed, fire, armed, procs, start, exit, advance: (ms: number) => (now += ms), get now() { return now; } };
}
const kills = (o: Output[]) => o.filter((x): x is Extract<Output, { do: "kill" }> => x.do === "kill").map((x) => [x.pid, x.signo]);
const logs = (o: Output[]) => o.filter((x): x is Extract<Output, { do: "log" }> => x.do === "log").map((x) => x.msg).join("\n");
const has = (o: Output[], d: Output["do"]) => o.some((x) => x.do === d);

describe("supervisor state machine", () => {
  test("stop signal → the stop signal once, the grace period, SIGKILL at the timeout → exit 137", () => {
    const m = machine();
    m.start();
    const out = m.feed({ type: "signal", signo: 37 }); // SIGRTMIN+3, nspawn's poweroff
    expect(m.c.state).toBe("stopping");
    expect(kills(out)).toEqual([[APP, 15]]);
    expect(out).toContainEqual({ do: "write", phase: "stopping" });
    expect(has(out, "stopRequested")).toBe(true);
    expect(m.armed.get("stop")).toBe(m.now + TIMEOUT);
    expect(stopRecord(m.c)).toMatchObject({ signal: "SIGRTMIN+3", sent: "SIGTERM", timeoutSec: 10, escalated: false, appSignalState: null });

    m.procs.push({ pid: 101, pgid: 101 }); // something the app started
    const esc = m.fire("stop");
    expect(m.c.state).toBe("killing");
    expect(kills(esc)).toEqual([[APP, 9], [101, 9]]);
    expect(stopRecord(m.c)).toMatchObject({ escalated: true, appSignalState: "handled" });
    m.procs.splice(1, 1);
    m.exit({ code: 137, signal: 9 });
    expect(m.c.state).toBe("ended");
    const end = m.feed({ type: "drain" });
    expect(m.c.state).toBe("exited");
    expect(has(end, "finished")).toBe(true);
    expect(m.c.outcome).toMatchObject({ code: 137, killedAfterTimeout: true, drained: 0, drainKilled: 0 });
    expect(m.c.outcome!.reason).toBe("app still running 10 s after SIGTERM (it handles SIGTERM and was still at work): killed with SIGKILL at the stop timeout");
  });

  test("a process group gets the stop signal and the SIGKILL as a group", () => {
    const m = machine({ signalState: "ignored" });
    m.start(true);
    m.procs.push({ pid: 102, pgid: APP });
    expect(kills(m.feed({ type: "signal", signo: 15 }))).toEqual([[-APP, 15]]);
    expect(kills(m.fire("stop"))).toEqual([[-APP, 9], [APP, 9], [102, 9]]);
    m.procs.splice(1, 1);
    m.exit({ code: 137, signal: 9 });
    m.feed({ type: "drain" });
    expect(m.c.outcome!.reason).toContain("it ignores SIGTERM");
  });

  test("the app exits on its own within the grace period: its code, no SIGKILL, the stop timer cancelled", () => {
    const m = machine();
    m.start();
    m.feed({ type: "signal", signo: 15 });
    m.advance(500);
    const out = m.exit({ code: 143, signal: 15 });
    expect(m.armed.has("stop")).toBe(false);
    expect(logs(out)).toBe(`app (pid ${APP}) killed by SIGTERM`);
    expect(kills(m.feed({ type: "timer", timer: "stop" }))).toEqual([]); // a stale expiry does nothing
    m.feed({ type: "drain" });
    expect(m.c.outcome).toEqual({ code: 143, reason: "app killed by SIGTERM after stop request SIGTERM", app: { code: 143, signal: 15 }, killedAfterTimeout: false, drained: 0, drainKilled: 0 });
  });

  test("the app exits with no stop: its code; an app SIGKILLed by someone else is not 'killed after the timeout'", () => {
    const m = machine();
    m.start();
    m.exit({ code: 3, signal: null });
    m.feed({ type: "drain" });
    expect(m.c.outcome).toMatchObject({ code: 3, reason: "app exited with 3", killedAfterTimeout: false });
    expect(stopRecord(m.c)).toBeNull();

    const k = machine();
    k.start();
    k.exit({ code: 137, signal: 9 });
    k.feed({ type: "drain" });
    expect(k.c.outcome).toMatchObject({ code: 137, reason: "app killed by SIGKILL", killedAfterTimeout: false });
  });

  test("a second stop signal is not resent; SIGHUP during the stop is swallowed; other signals still reach the app", () => {
    const m = machine();
    m.start();
    m.feed({ type: "signal", signo: 15 });
    const again = m.feed({ type: "signal", signo: 2 });
    expect(kills(again)).toEqual([]);
    expect(logs(again)).toBe("SIGINT: stop already in progress, not resent");
    expect(stopRecord(m.c)!.signal).toBe("SIGTERM"); // the first request stands
    const hup = m.feed({ type: "signal", signo: 1 });
    expect([kills(hup), logs(hup)]).toEqual([[], "SIGHUP during the stop sequence: swallowed"]);
    expect(kills(m.feed({ type: "signal", signo: 10 }))).toEqual([[APP, 10]]);
  });

  test("SIGHUP alone is forwarded after the window; next to a stop request it is swallowed", () => {
    const m = machine();
    m.start();
    const h = m.feed({ type: "signal", signo: 1 });
    expect(kills(h)).toEqual([]);
    expect(m.armed.get("hup")).toBe(m.now + HUP_WINDOW_MS);
    expect(kills(m.feed({ type: "signal", signo: 1 }))).toEqual([]); // still deciding about the first
    expect(kills(m.fire("hup"))).toEqual([[APP, 1]]);

    const s = machine();
    s.start();
    s.feed({ type: "signal", signo: 1 });
    const stop = s.feed({ type: "signal", signo: 37 });
    expect(s.armed.has("hup")).toBe(false);
    expect(logs(stop)).toContain("SIGHUP next to a stop request: swallowed");
    expect(kills(stop)).toEqual([[APP, 15]]);
  });

  test("one signal switch: SIGCHLD reaps, 32 is logged, anything with no app running is ignored", () => {
    const m = machine();
    expect(m.feed({ type: "signal", signo: 17 })).toEqual([{ do: "reap" }]);
    expect(logs(m.feed({ type: "signal", signo: 32 }))).toContain("not forwarded");
    expect(logs(m.feed({ type: "signal", signo: 10 }))).toBe("SIGUSR1 received with no app running: ignored");
  });

  test("a stop before the app started: nothing to signal, exit 0; a reboot request as PID 1 exits 133", () => {
    const m = machine();
    const out = m.feed({ type: "signal", signo: 15 });
    expect(m.c.state).toBe("ended");
    expect(kills(out)).toEqual([]);
    expect(logs(out)).toBe("SIGTERM: stop requested before the app started");
    expect(stopRecord(m.c)).toMatchObject({ sent: null, sentAt: null });
    expect(() => m.feed({ type: "spawned", pid: APP, group: false })).toThrow(/spawned in state ended/);
    m.feed({ type: "drain" });
    expect(m.c.outcome).toMatchObject({ code: 0, app: null, reason: "stop requested (SIGTERM) before the app started" });

    const r = machine({ pid1: true });
    r.start();
    r.feed({ type: "signal", signo: 39 }); // SIGRTMIN+5, nspawn's reboot
    r.exit({ code: 143, signal: 15 });
    r.feed({ type: "drain" });
    expect(r.c.outcome!.code).toBe(133);
    expect(r.c.outcome!.reason).toContain("exit 133 asks nspawn to restart");
  });

  test("configure after a stop request: the drain deadline counts from the request with the new timeout", () => {
    const m = machine();
    m.feed({ type: "signal", signo: 15 });
    const at = m.now;
    m.feed({ type: "configure", signal: 10, timeoutMs: 2000 });
    m.procs.push({ pid: 200, pgid: 200 });
    m.advance(500);
    const out = m.feed({ type: "drain" });
    expect(kills(out)).toEqual([[200, 10]]);
    expect(m.c.drain!.deadline).toBe(at + 2000);
  });

  test("drain: the stop signal once to each leftover, SIGKILL at the deadline, then done when they are gone", () => {
    const m = machine();
    m.start(true);
    m.procs.push({ pid: 300, pgid: APP }, { pid: 301, pgid: 301 });
    m.feed({ type: "signal", signo: 15 }); // the group, 300 included, got SIGTERM already
    m.exit({ code: 0, signal: null });
    const d = m.feed({ type: "drain" });
    expect(d[0]).toEqual({ do: "write", phase: "draining" });
    expect(kills(d)).toEqual([[301, 15]]); // not sent twice to 300
    expect(logs(d)).toMatch(/^draining 2 remaining process\(es\): SIGTERM to 1, deadline 10\.0 s$/);
    expect(m.armed.get("poll")).toBe(m.now + DRAIN_POLL_MS);
    expect(kills(m.fire("poll"))).toEqual([]); // before the deadline: only polls
    m.advance(TIMEOUT);
    const k = m.fire("poll");
    expect(m.c.state).toBe("drainKilling");
    expect(kills(k)).toEqual([[300, 9], [301, 9]]);
    m.procs.splice(0, 1);
    expect(kills(m.fire("poll"))).toEqual([[301, 9]]); // again, until it goes
    m.procs.splice(0, 1);
    expect(has(m.fire("poll"), "finished")).toBe(true);
    expect(m.c.outcome).toMatchObject({ code: 0, drained: 2, drainKilled: 2 });
    expect(m.armed.size).toBe(0);
  });

  test("drain: a process that survives SIGKILL (uninterruptible) is given up after KILL_WAIT_MS", () => {
    const m = machine();
    m.start();
    m.procs.push({ pid: 400, pgid: 400 });
    m.exit({ code: 0, signal: null });
    m.feed({ type: "drain" });
    m.advance(TIMEOUT);
    m.fire("poll");
    m.advance(KILL_WAIT_MS);
    const out = m.fire("poll");
    expect(logs(out)).toBe("still alive after SIGKILL (uninterruptible?): 400");
    expect(m.c.state).toBe("exited");
    expect(m.c.outcome).toMatchObject({ drained: 1, drainKilled: 1 });
  });

  test("health kill: SIGKILL to the app at once, exit 79 whatever the app's code", () => {
    const m = machine();
    m.start(true);
    expect(kills(m.feed({ type: "health", act: "kill" }))).toEqual([[-APP, 9]]);
    expect(m.c.request).toBeNull();
    m.exit({ code: 137, signal: 9 });
    m.feed({ type: "drain" });
    expect(m.c.outcome).toMatchObject({ code: 79, reason: "app unhealthy: killed (MAN8S_HEALTH_ON_FAILURE=kill), exit 79", killedAfterTimeout: false });
  });

  test("health stop: a stop request (SIGTERM) and the app's own code, with the reason", () => {
    const m = machine();
    m.start();
    m.feed({ type: "configure", signal: 10, timeoutMs: TIMEOUT });
    expect(kills(m.feed({ type: "health", act: "stop" }))).toEqual([[APP, 10]]);
    expect(stopRecord(m.c)).toMatchObject({ signal: "SIGTERM", sent: "SIGUSR1" });
    m.exit({ code: 44, signal: null });
    m.feed({ type: "drain" });
    expect(m.c.outcome).toMatchObject({ code: 44, reason: "app exited with 44 after stop request SIGTERM; the app was unhealthy (MAN8S_HEALTH_ON_FAILURE=stop)" });
  });

  test("health restart: stop signal, SIGKILL at the timeout, the group's leftovers killed, then a new app", () => {
    const m = machine();
    m.start(true);
    const end = m.feed({ type: "health", act: "restart" });
    expect([m.c.state, kills(end)]).toEqual(["ending", [[-APP, 15]]]);
    expect(m.c.request).toBeNull(); // not a stop: the container goes on
    expect(kills(m.fire("end"))).toEqual([[-APP, 9]]);
    const gone = m.exit({ code: 137, signal: 9 });
    expect([m.c.state, kills(gone)]).toEqual(["restarting", [[-APP, 9]]]);
    expect(logs(m.feed({ type: "signal", signo: 10 }))).toContain("no app running"); // not sent to a dead pid
    m.start(true);
    expect(m.c.state).toBe("running");
  });

  test("a stop while a restart waits: nothing is signalled (the old pid is gone), nothing restarts", () => {
    const m = machine();
    m.start();
    m.feed({ type: "health", act: "restart" });
    m.exit({ code: 47, signal: null });
    const out = m.feed({ type: "signal", signo: 15 });
    expect(kills(out)).toEqual([]);
    expect(logs(out)).toBe("SIGTERM: stop requested with no app running");
    expect(m.c.state).toBe("ended");
    expect(stopRecord(m.c)).toMatchObject({ sent: null });
    m.feed({ type: "noRespawn" });
    m.feed({ type: "drain" });
    expect(m.c.outcome).toMatchObject({ code: 47, reason: "app exited with 47 after stop request SIGTERM" });
  });

  test("a stop while the health action ends the app: the stop timer takes over from the restart's", () => {
    const m = machine();
    m.start();
    m.feed({ type: "health", act: "restart" });
    const out = m.feed({ type: "signal", signo: 15 });
    expect(m.c.state).toBe("stopping");
    expect(m.armed.has("end")).toBe(false);
    expect(kills(out)).toEqual([[APP, 15]]);
    m.exit({ code: 0, signal: null });
    expect(m.c.state).toBe("ended"); // not restarting
  });

  test("abort: a start-up failure ends the run with its code from any state", () => {
    const m = machine();
    m.feed({ type: "abort", code: 127, reason: "cannot execute nope" });
    expect(m.c.state).toBe("exited");
    expect(m.c.outcome).toEqual({ code: 127, reason: "cannot execute nope", app: null, killedAfterTimeout: false, drained: 0, drainKilled: 0 });
    expect(m.feed({ type: "signal", signo: 15 })).toEqual([]); // exited is final
  });

  test("the exit record: the outcome, the app's signal by name, the reaper's counters", () => {
    const rec = exitRecord(
      { code: 143, reason: "r", app: { code: 143, signal: 15 }, killedAfterTimeout: false, drained: 2, drainKilled: 1 },
      { reaped: 5, largestBatch: { n: 3, ms: 0.1 } },
      0,
    );
    expect(rec).toEqual({
      code: 143, reason: "r", app: { code: null, signal: "SIGTERM" }, killedAfterTimeout: false, drained: 2, drainKilled: 1,
      orphansReaped: 5, largestReap: { n: 3, ms: 0.1 }, at: "1970-01-01T00:00:00.000Z",
    });
  });
});
