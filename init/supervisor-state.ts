// The supervisor's state and its one transition function. As runit's runsv.c keeps all supervision state in
// one struct of small enums and tini takes every signal decision in one switch, everything the init knows
// about the app's life and its stop sequence is in `Ctx`, with `state` the one enum, and only `step` changes
// it. Pure: the clock and the process table are injected (`Sensors`), and every effect (kill, timer, log,
// record write) is an output the runner (init/supervisor.ts) carries out, so the stop sequence has unit tests
// that run without root (test/init/supervisor-state.test.ts). docs/signals.md § "The stop sequence".
//
//   state          input                          next          effect
//   idle           spawned                        running
//   idle           stop signal                    ended         nothing to signal
//   running        stop signal, health stop       stopping      the stop signal to the app once; stop timer
//   running        health restart                 ending        the stop signal to the app; end timer
//   running        app exited                     ended
//   ending         end timer                      ending        SIGKILL to the app
//   ending         stop signal                    stopping      as from running; the stop timer replaces the end timer
//   ending         app exited                     restarting    SIGKILL to what the app's group left
//   restarting     spawned                        running
//   restarting     stop signal, noRespawn         ended
//   stopping       stop timer                     killing       SIGKILL to the app (its group) and every descendant
//   stopping       app exited                     ended
//   killing        app exited                     ended
//   idle, ended    drain                          draining      the stop signal to leftovers not yet sent it; poll
//                                                 exited        (nothing left)
//   draining       poll, past the deadline        drainKilling  SIGKILL to what is left; poll
//   draining       poll, nothing left             exited
//   drainKilling   poll, past KILL_WAIT_MS        exited        what survived SIGKILL is logged
//   drainKilling   poll, nothing left             exited
//   drainKilling   poll                           drainKilling  SIGKILL again to what is left
//   any            abort                          exited
// Other signals change no state: forwarded to the app while it runs, SIGHUP held for HUP_WINDOW_MS first.
import { EXIT } from "../common/log.ts";
import type { ExitRecord, StatusRecord } from "../common/report.ts";
import { SIG_HALT, SIG_KEXEC, SIG_POWEROFF, SIG_REBOOT, SIGCANCEL, SIGCHLD, SIGHUP, SIGINT, SIGKILL, SIGTERM, signalName } from "../common/signals.ts";

export { SIGCANCEL, SIGCHLD, SIGHUP, SIGINT, SIGKILL, SIGTERM };
/** poweroff group (SIGTERM, SIGRTMIN+3/+4) and reboot group (SIGINT, SIGRTMIN+5/+6) */
const STOP_SIGNALS = new Set([SIGTERM, SIG_HALT, SIG_POWEROFF, SIGINT, SIG_REBOOT, SIG_KEXEC]);
const REBOOT_SIGNALS = new Set([SIGINT, SIG_REBOOT, SIG_KEXEC]);
/** nspawn's stub sends TERM, CONT, HUP back to back and the kernel hands over HUP first. */
export const HUP_WINDOW_MS = 50;
export const DRAIN_POLL_MS = 20;
/** a process stuck in uninterruptible sleep ignores even SIGKILL: the drain waits this long, not forever */
export const KILL_WAIT_MS = 5000;

export const SUPERVISOR_STATES = [
  /** before the app starts (the start-up phases) */
  "idle",
  /** the app runs */
  "running",
  /** MAN8S_HEALTH_ON_FAILURE=restart ended the app: stop signal sent, SIGKILL at the stop timeout */
  "ending",
  /** the app it ended is gone: the runner's respawn starts the next (running) or gives up (ended) */
  "restarting",
  /** stop requested: the app got the stop signal once; SIGKILL at the stop timeout */
  "stopping",
  /** the stop timeout ran out: SIGKILL to the app and every descendant; waiting for the app */
  "killing",
  /** no app runs and none will: it exited, or a stop came before it started. The drain comes next */
  "ended",
  /** what the app left got the stop signal; waiting until the stop deadline */
  "draining",
  /** past the deadline: SIGKILL to what is left, for at most KILL_WAIT_MS */
  "drainKilling",
  /** final: `outcome` holds the exit code and reason */
  "exited",
] as const;
export type SupState = (typeof SUPERVISOR_STATES)[number];

export type StopRecord = NonNullable<StatusRecord["stop"]>;
/** What a process does with a signal, from /proc/PID/status ("unknown": it is gone). */
export type SignalState = NonNullable<StopRecord["appSignalState"]>;
export type Timer = "hup" | "stop" | "end" | "poll";
export type HealthAct = "stop" | "kill" | "restart";

export interface AppExit {
  code: number;
  signal: number | null;
}

export interface Proc {
  pid: number;
  pgid: number;
}

/** What the machine reads from the world: injected, so tests give a fake clock and process table. */
export interface Sensors {
  /** wall clock, ms since the epoch */
  now(): number;
  /** every process under the init (the app included while it runs) */
  descendants(): Proc[];
  signalState(pid: number, signo: number): SignalState;
}

/** How the run ended: everything the exit record says but the reaper's counters. */
export interface Outcome {
  code: number;
  reason: string;
  app: AppExit | null;
  killedAfterTimeout: boolean;
  drained: number;
  drainKilled: number;
}

export interface Ctx {
  state: SupState;
  stopSignal: number;
  stopTimeoutMs: number;
  readonly pid1: boolean;
  /** the app while it runs (running, ending, stopping, killing) */
  app: { pid: number; group: boolean } | null;
  /** how the last app ended */
  lastExit: AppExit | null;
  /** the stop request as received; `sent`: the stop signal that went to the running app then (null: none ran) */
  request: { signo: number; at: number; sent: number | null } | null;
  /** the stop timeout ran out with the app still there, and what it did with the stop signal then */
  escalation: { at: number; appSignalState: SignalState } | null;
  /** a SIGHUP waiting HUP_WINDOW_MS to see whether a stop request follows it */
  hupPending: boolean;
  /** what MAN8S_HEALTH_ON_FAILURE did that ends the container (restart does not) */
  health: "stop" | "kill" | null;
  /** pids that already got the stop signal: the drain does not send it twice */
  readonly signalled: Set<number>;
  drain: { deadline: number; total: number; killed: number; giveUp: number } | null;
  outcome: Outcome | null;
}

export type Input =
  | { type: "signal"; signo: number }
  | { type: "configure"; signal: number; timeoutMs: number }
  | { type: "spawned"; pid: number; group: boolean }
  | { type: "appExited"; pid: number; exit: AppExit }
  /** the runner's respawn did not start a new app */
  | { type: "noRespawn" }
  | { type: "health"; act: HealthAct }
  | { type: "timer"; timer: Timer }
  /** the app is gone and the probes are stopped: drain what is left */
  | { type: "drain" }
  /** a start-up failure ends the run with this code, nothing started */
  | { type: "abort"; code: number; reason: string };

export type Output =
  /** pid > 0: that process; pid < 0: that process group */
  | { do: "kill"; pid: number; signo: number }
  | { do: "arm"; timer: Timer; ms: number }
  | { do: "cancel"; timer: Timer }
  | { do: "reap" }
  | { do: "log"; msg: string }
  /** write the status record (its `stop` is always stopRecord(ctx)), with this phase when given */
  | { do: "write"; phase?: "stopping" | "draining" }
  /** a stop was requested: start-up phases waiting for something give up */
  | { do: "stopRequested" }
  /** state is "exited": ctx.outcome is final */
  | { do: "finished" };

export function newCtx(o: { stopSignal: number; stopTimeoutMs: number; pid1: boolean }): Ctx {
  return {
    state: "idle", stopSignal: o.stopSignal, stopTimeoutMs: o.stopTimeoutMs, pid1: o.pid1, app: null, lastExit: null,
    request: null, escalation: null, hupPending: false, health: null, signalled: new Set(), drain: null, outcome: null,
  };
}

const appRuns = (s: SupState) => s === "running" || s === "ending" || s === "stopping" || s === "killing";
const target = (app: { pid: number; group: boolean }) => (app.group ? -app.pid : app.pid);

/** The transition function: updates `c` in place and returns what the runner must do, in order. */
export function step(c: Ctx, input: Input, io: Sensors): Output[] {
  const out: Output[] = [];
  if (c.state === "exited") return out;
  switch (input.type) {
    case "signal":
      signal(c, out, input.signo, io);
      break;
    case "configure":
      // the stop settings come from the env file, read after signal intake is already running; a stop
      // requested before counts its deadline from the request with the new timeout
      c.stopSignal = input.signal;
      c.stopTimeoutMs = input.timeoutMs;
      break;
    case "spawned":
      if (c.state !== "idle" && c.state !== "restarting") throw new Error(`supervisor: app spawned in state ${c.state}`);
      c.app = { pid: input.pid, group: input.group };
      c.state = "running";
      break;
    case "appExited":
      appExited(c, out, input.pid, input.exit);
      break;
    case "noRespawn":
      if (c.state === "restarting") c.state = "ended";
      break;
    case "health":
      health(c, out, input.act, io);
      break;
    case "timer":
      timer(c, out, input.timer, io);
      break;
    case "drain":
      // idle: no app was started and no stop came (not reached today: start-up either starts one or fails)
      if (c.state !== "ended" && c.state !== "idle") throw new Error(`supervisor: drain in state ${c.state}`);
      drain(c, out, io);
      break;
    case "abort":
      c.app = null;
      finish(c, out, { code: input.code, reason: input.reason, app: null, killedAfterTimeout: false, drained: 0, drainKilled: 0 });
      break;
  }
  return out;
}

/** Every signal decision, in one switch (docs/signals.md has the table). */
function signal(c: Ctx, out: Output[], signo: number, io: Sensors): void {
  if (signo === SIGCHLD) {
    out.push({ do: "reap" });
  } else if (signo === SIGCANCEL) {
    out.push({ do: "log", msg: "signal 32 (libc's thread-cancel signal) received: not forwarded, it would kill a glibc app" });
  } else if (STOP_SIGNALS.has(signo)) {
    requestStop(c, out, signo, io);
  } else if (signo === SIGHUP) {
    if (c.request) out.push({ do: "log", msg: "SIGHUP during the stop sequence: swallowed" });
    else if (!c.hupPending) {
      // still deciding about a previous one otherwise
      c.hupPending = true;
      out.push({ do: "arm", timer: "hup", ms: HUP_WINDOW_MS });
    }
  } else {
    forward(c, out, signo);
  }
}

function forward(c: Ctx, out: Output[], signo: number): void {
  if (c.app && appRuns(c.state)) out.push({ do: "kill", pid: target(c.app), signo });
  else out.push({ do: "log", msg: `${signalName(signo)} received with no app running: ignored` });
}

function requestStop(c: Ctx, out: Output[], signo: number, io: Sensors): void {
  if (c.hupPending) {
    c.hupPending = false;
    out.push({ do: "cancel", timer: "hup" }, { do: "log", msg: "SIGHUP next to a stop request: swallowed (part of nspawn's stop sequence)" });
  }
  if (c.request) {
    out.push({ do: "log", msg: `${signalName(signo)}: stop already in progress, not resent` });
    return;
  }
  const running = c.app !== null && (c.state === "running" || c.state === "ending");
  c.request = { signo, at: io.now(), sent: running ? c.stopSignal : null };
  if (running) {
    out.push({ do: "log", msg: `${signalName(signo)}: stopping the app with ${signalName(c.stopSignal)} (timeout ${c.stopTimeoutMs / 1000} s)` });
    if (c.state === "ending") out.push({ do: "cancel", timer: "end" }); // the stop timer governs from now on
    c.state = "stopping";
    sendStopSignal(c, out, c.app!, io);
    out.push({ do: "arm", timer: "stop", ms: c.stopTimeoutMs }, { do: "write", phase: "stopping" });
  } else {
    out.push({ do: "log", msg: `${signalName(signo)}: stop requested ${c.state === "idle" ? "before the app started" : "with no app running"}` });
    if (c.state === "idle" || c.state === "restarting") c.state = "ended";
    out.push({ do: "write" });
  }
  out.push({ do: "stopRequested" });
}

function sendStopSignal(c: Ctx, out: Output[], app: { pid: number; group: boolean }, io: Sensors): void {
  if (app.group) for (const p of io.descendants()) if (p.pgid === app.pid) c.signalled.add(p.pid);
  out.push({ do: "kill", pid: target(app), signo: c.stopSignal });
  c.signalled.add(app.pid);
}

function health(c: Ctx, out: Output[], act: HealthAct, io: Sensors): void {
  if (act === "stop") {
    // as a stop request (SIGTERM): the image's stop signal, the stop timeout, the drain
    c.health = "stop";
    requestStop(c, out, SIGTERM, io);
  } else if (act === "kill") {
    c.health = "kill";
    if (c.app && appRuns(c.state)) out.push({ do: "kill", pid: target(c.app), signo: SIGKILL });
  } else if (c.state === "running" && c.app) {
    // restart: end this app as a stop would (stop signal, SIGKILL at the timeout); a new one follows
    c.state = "ending";
    out.push({ do: "kill", pid: target(c.app), signo: c.stopSignal }, { do: "arm", timer: "end", ms: c.stopTimeoutMs });
  }
}

function timer(c: Ctx, out: Output[], t: Timer, io: Sensors): void {
  switch (t) {
    case "hup":
      if (!c.hupPending) return;
      c.hupPending = false;
      if (!c.request) forward(c, out, SIGHUP);
      return;
    case "end":
      if (c.state === "ending" && c.app) out.push({ do: "kill", pid: target(c.app), signo: SIGKILL });
      return;
    case "stop":
      if (c.state === "stopping" && c.app) escalate(c, out, c.app, io);
      return;
    case "poll":
      if (c.state === "draining" || c.state === "drainKilling") drainTick(c, out, io);
      return;
  }
}

/** The stop timeout ran out with the app still there: SIGKILL the app and everything under us. */
function escalate(c: Ctx, out: Output[], app: { pid: number; group: boolean }, io: Sensors): void {
  // what the app did with the stop signal: a handler means it was still at work (draining), not ignoring it
  const appSignalState = io.signalState(app.pid, c.stopSignal);
  out.push({ do: "log", msg: `stop timeout (${c.stopTimeoutMs / 1000} s): the app is still running (${signalName(c.stopSignal)} ${appSignalState}); killing it and its descendants` });
  c.escalation = { at: io.now(), appSignalState };
  c.state = "killing";
  if (app.group) out.push({ do: "kill", pid: -app.pid, signo: SIGKILL });
  for (const p of io.descendants()) out.push({ do: "kill", pid: p.pid, signo: SIGKILL });
}

function appExited(c: Ctx, out: Output[], pid: number, exit: AppExit): void {
  if (!c.app || c.app.pid !== pid || !appRuns(c.state)) return;
  const app = c.app;
  c.app = null;
  c.lastExit = exit;
  out.push({ do: "log", msg: `app (pid ${pid}) ${exit.signal ? `killed by ${signalName(exit.signal)}` : `exited with ${exit.code}`}` });
  if (c.state === "ending") {
    out.push({ do: "cancel", timer: "end" });
    if (app.group) out.push({ do: "kill", pid: -app.pid, signo: SIGKILL }); // what the old app's group left behind
    c.state = "restarting";
  } else {
    out.push({ do: "cancel", timer: "stop" });
    c.state = "ended";
  }
}

/** Stop signal to every remaining descendant, wait until the deadline, then SIGKILL what is left. */
function drain(c: Ctx, out: Output[], io: Sensors): void {
  c.state = "draining";
  out.push({ do: "write", phase: "draining" });
  const left = io.descendants();
  const now = io.now();
  const deadline = c.request ? Math.max(c.request.at + c.stopTimeoutMs, now) : now + c.stopTimeoutMs;
  c.drain = { deadline, total: left.length, killed: 0, giveUp: 0 };
  if (left.length === 0) return finish(c, out, outcome(c));
  const fresh = left.filter((p) => !c.signalled.has(p.pid));
  out.push({ do: "log", msg: `draining ${left.length} remaining process(es): ${signalName(c.stopSignal)} to ${fresh.length}, deadline ${((deadline - now) / 1000).toFixed(1)} s` });
  for (const p of fresh) {
    out.push({ do: "kill", pid: p.pid, signo: c.stopSignal });
    c.signalled.add(p.pid);
  }
  out.push({ do: "arm", timer: "poll", ms: DRAIN_POLL_MS });
}

/** One poll of the drain; the runner reaps before feeding it. */
function drainTick(c: Ctx, out: Output[], io: Sensors): void {
  const d = c.drain!;
  const left = io.descendants();
  const now = io.now();
  if (left.length === 0) return finish(c, out, outcome(c));
  if (c.state === "draining") {
    if (now < d.deadline) {
      out.push({ do: "arm", timer: "poll", ms: DRAIN_POLL_MS });
      return;
    }
    out.push({ do: "log", msg: `drain timeout: SIGKILL to ${left.length} process(es)` });
    d.killed = left.length;
    d.giveUp = now + KILL_WAIT_MS;
    c.state = "drainKilling";
  } else if (now >= d.giveUp) {
    out.push({ do: "log", msg: `still alive after SIGKILL (uninterruptible?): ${left.map((p) => p.pid).join(" ")}` });
    return finish(c, out, outcome(c));
  }
  for (const p of left) out.push({ do: "kill", pid: p.pid, signo: SIGKILL });
  out.push({ do: "arm", timer: "poll", ms: DRAIN_POLL_MS });
}

function finish(c: Ctx, out: Output[], o: Outcome): void {
  c.state = "exited";
  c.outcome = o;
  for (const t of ["hup", "stop", "end", "poll"] as const) out.push({ do: "cancel", timer: t });
  out.push({ do: "finished" });
}

/** The exit code and reason (DESIGN §3.4), from the state the run ended in. */
export function outcome(c: Ctx): Outcome {
  const app = c.lastExit;
  const stopName = signalName(c.stopSignal);
  // killed after the timeout only when we escalated and SIGKILL is what ended it (an app that exited on
  // its own in the same instant, or was SIGKILLed by the OOM killer with no stop, was not)
  const killedAfterTimeout = c.escalation !== null && app?.signal === SIGKILL;
  let code: number;
  let reason: string;
  if (!app) {
    code = 0;
    reason = `stop requested (${signalName(c.request?.signo ?? SIGTERM)}) before the app started`;
  } else if (killedAfterTimeout) {
    code = 137;
    reason = `app still running ${c.stopTimeoutMs / 1000} s after ${stopName} (${describeSignalState(c.escalation!.appSignalState, c.stopSignal)}): killed with SIGKILL at the stop timeout`;
  } else {
    code = app.signal ? 128 + app.signal : app.code;
    reason = app.signal ? `app killed by ${signalName(app.signal)}` : `app exited with ${app.code}`;
    if (c.request) reason += ` after stop request ${signalName(c.request.signo)}`;
    if (c.escalation) reason += " (as the stop timeout ran out)";
  }
  if (c.pid1 && c.request && REBOOT_SIGNALS.has(c.request.signo)) {
    code = 133;
    reason += "; exit 133 asks nspawn to restart (reboot request)";
  }
  if (c.health === "kill") {
    code = EXIT.unhealthy;
    reason = `app unhealthy: killed (MAN8S_HEALTH_ON_FAILURE=kill), exit ${EXIT.unhealthy}`;
  } else if (c.health === "stop") {
    reason += "; the app was unhealthy (MAN8S_HEALTH_ON_FAILURE=stop)";
  }
  return { code, reason, app, killedAfterTimeout, drained: c.drain?.total ?? 0, drainKilled: c.drain?.killed ?? 0 };
}

/** The status record's `stop`: the request and what the init did about it, derived from the state. */
export function stopRecord(c: Ctx): StopRecord | null {
  const r = c.request;
  if (!r) return null;
  const iso = (ms: number) => new Date(ms).toISOString();
  return {
    signal: signalName(r.signo), requestedAt: iso(r.at), sent: r.sent === null ? null : signalName(r.sent), sentAt: r.sent === null ? null : iso(r.at),
    timeoutSec: c.stopTimeoutMs / 1000, escalated: c.escalation !== null, escalatedAt: c.escalation ? iso(c.escalation.at) : null,
    appSignalState: c.escalation?.appSignalState ?? null,
  };
}

/** The exit record, whole: the outcome plus the reaper's counters. */
export function exitRecord(o: Outcome, reaped: { reaped: number; largestBatch: { n: number; ms: number } }, at: number): ExitRecord {
  return {
    code: o.code, reason: o.reason,
    app: o.app ? { code: o.app.signal ? null : o.app.code, signal: o.app.signal ? signalName(o.app.signal) : null } : null,
    killedAfterTimeout: o.killedAfterTimeout, drained: o.drained, drainKilled: o.drainKilled,
    orphansReaped: reaped.reaped, largestReap: { ...reaped.largestBatch }, at: new Date(at).toISOString(),
  };
}

function describeSignalState(s: SignalState, signo: number): string {
  const name = signalName(signo);
  switch (s) {
    case "handled": return `it handles ${name} and was still at work`;
    case "ignored": return `it ignores ${name}`;
    case "blocked": return `it blocks ${name}`;
    case "default": return `${name} left at its default action did not end it`;
    default: return "its signal state could not be read";
  }
}
