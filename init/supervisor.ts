// Runs the app and owns everything after: signal forwarding, the stop sequence, the drain of what the
// app left behind, escalation to SIGKILL, the exit code and the exit record (DESIGN §3.2–§3.4). The
// decisions are the state machine's (init/supervisor-state.ts); this file does the I/O.
import type { Subprocess } from "bun";
import { readFileSync } from "node:fs";
import { EXIT, ExitError, log } from "../common/log.ts";
import { libc } from "../common/libc.ts";
import { parseSignal } from "../common/signals.ts";
import { type LongTimer, setLongTimeout } from "../common/timer.ts";
import { launcherPath, launchArgv, resolveExecutable } from "./launch.ts";
import { descendants } from "./proctree.ts";
import { trackBunChild, untrackBunChild } from "../common/bun-children.ts";
import { reap, reapStats } from "./reaper.ts";
import type { StatusFile } from "./status.ts";
import type { AppUser } from "../common/user.ts";
import {
  type AppExit, type Ctx, exitRecord, type HealthAct, type Input, newCtx, type Outcome, type Output, type Sensors,
  type SignalState, step, stopRecord, type SupState, type Timer,
} from "./supervisor-state.ts";

export interface SupervisorOptions {
  stopSignal: number;
  stopTimeoutMs: number;
  pid1: boolean;
  status: StatusFile;
}

export type { AppExit, SignalState } from "./supervisor-state.ts";

/** The real world behind the state machine's sensors. */
const SENSORS: Sensors = { now: () => Date.now(), descendants, signalState };

/**
 * The runner of the state machine in init/supervisor-state.ts: it owns the app's Subprocess, the timers and
 * the status record, feeds in signals, timer expiries and the app's exit, and carries out the outputs.
 */
export class Supervisor {
  private readonly c: Ctx;
  private proc: Subprocess | null = null;
  private readonly timers = new Map<Timer, LongTimer>();
  private readonly stopListeners: Array<() => void> = [];
  private finished: (() => void) | null = null;
  /** inputs that arrive while outputs are carried out (a listener that signals) wait their turn */
  private readonly queue: Input[] = [];
  private feeding = false;
  /**
   * MAN8S_HEALTH_ON_FAILURE=restart: called when the app the health action ended has exited; it may spawn()
   * a new app and return true, and waitAndDrain then waits for that one instead (init/health-action.ts).
   */
  respawn: ((exit: AppExit) => Promise<boolean>) | null = null;

  constructor(private readonly opts: SupervisorOptions) {
    this.c = newCtx(opts);
  }

  /** The machine's state, for tests and logs. */
  get state(): SupState {
    return this.c.state;
  }

  /** Stop settings come from the env file, read after signal intake is already running. */
  configureStop(signal: number, timeoutMs: number): void {
    this.feed({ type: "configure", signal, timeoutMs });
  }

  get stopping(): boolean {
    return this.c.request !== null;
  }

  /** Called when a stop is requested (so start-up phases can give up waiting); at once if already stopping. */
  onStop(fn: () => void): void {
    if (this.stopping) fn();
    else this.stopListeners.push(fn);
  }

  handleSignal(signo: number): void {
    this.feed({ type: "signal", signo });
  }

  /** What MAN8S_HEALTH_ON_FAILURE decided (init/health-action.ts): stop, kill, or end the app for a restart. */
  health(act: HealthAct): void {
    this.feed({ type: "health", act });
  }

  private feed(input: Input): void {
    this.queue.push(input);
    if (this.feeding) return;
    this.feeding = true;
    try {
      for (let i = this.queue.shift(); i; i = this.queue.shift()) {
        const outs = step(this.c, i, SENSORS);
        this.opts.status.record.stop = stopRecord(this.c);
        for (const o of outs) this.run(o);
      }
    } finally {
      this.feeding = false;
    }
  }

  private run(o: Output): void {
    switch (o.do) {
      case "kill":
        libc.kill(o.pid, o.signo);
        return;
      case "arm": {
        this.timers.get(o.timer)?.clear();
        const t = o.timer;
        this.timers.set(t, setLongTimeout(() => {
          this.timers.delete(t);
          if (t === "poll") reap(); // the drain counts what is left after reaping
          this.feed({ type: "timer", timer: t });
        }, o.ms));
        return;
      }
      case "cancel":
        this.timers.get(o.timer)?.clear();
        this.timers.delete(o.timer);
        return;
      case "reap":
        reap();
        return;
      case "log":
        log(o.msg);
        return;
      case "write":
        if (o.phase) this.opts.status.record.phase = o.phase;
        this.opts.status.write();
        return;
      case "stopRequested":
        for (const fn of this.stopListeners.splice(0)) fn();
        return;
      case "finished":
        this.finished?.();
        return;
    }
  }

  /**
   * Start the app through the launcher's exec mode: as `user`, in a process group of its own, made the
   * terminal's foreground group when the init has a controlling terminal (docs/signals.md). Returns the
   * 126/127 code (and logs) when the command cannot be executed; nothing is started then.
   */
  spawn(argv: string[], env: Record<string, string>, group: boolean, user: AppUser | null = null): { pid: number } | { failed: number } {
    const exe = resolveExecutable(argv[0]!, env);
    if ("failed" in exe) {
      log(`cannot execute ${argv[0]}: ${exe.why}`);
      return { failed: exe.failed };
    }
    const launcher = launcherPath();
    if (!launcher && user) throw new ExitError(EXIT.internal, `MAN8S_APPLICATION_USER is set but the launcher (init) is not beside ${process.execPath}`);
    let proc: Subprocess;
    try {
      proc = launcher
        ? Bun.spawn(launchArgv(launcher, exe.path, argv, { user, pgrp: true, tty: true }), { env, stdio: ["inherit", "inherit", "inherit"] })
        : Bun.spawn(argv, { env, stdio: ["inherit", "inherit", "inherit"], detached: group });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why = code === "ENOENT" ? "not found" : code === "EACCES" ? "permission denied (not executable?)" : (e as Error).message;
      log(`cannot execute ${argv[0]}: ${why}`);
      return { failed: code === "ENOENT" ? 127 : 126 };
    }
    trackBunChild(proc.pid);
    this.proc = proc;
    this.feed({ type: "spawned", pid: proc.pid, group });
    return { pid: proc.pid };
  }

  /**
   * Wait for the app (and the ones a health restart starts), drain what is left and return how the run
   * ended (DESIGN §3.4). finish() writes it.
   */
  async waitAndDrain(beforeDrain?: () => Promise<void>): Promise<Outcome> {
    while (this.proc) {
      const current = this.proc;
      await current.exited.catch(() => undefined);
      untrackBunChild(current.pid);
      const exit = exitOf(current);
      this.proc = null;
      this.feed({ type: "appExited", pid: current.pid, exit });
      if (this.c.state !== "restarting") break;
      if (this.respawn && (await this.respawn(exit)) && this.proc) continue;
      this.feed({ type: "noRespawn" });
    }
    await beforeDrain?.();
    const done = new Promise<void>((resolve) => (this.finished = resolve));
    this.feed({ type: "drain" });
    if (this.c.state !== "exited") await done;
    reap();
    return this.c.outcome!;
  }

  /** A start-up failure ends the run before (or instead of) the app: the record says why, with `code`. */
  abort(code: number, reason: string): number {
    this.feed({ type: "abort", code, reason });
    return this.write(this.c.outcome!);
  }

  /** The end of a run: writes the exit record and returns the init's exit code. */
  finish(o: Outcome): number {
    const code = this.write(o);
    log(`exit ${o.code}: ${o.reason}; ${o.drained} drained, ${reapStats.reaped} orphans reaped`);
    return code;
  }

  /** The one place the exit record is written: the status record's last word. */
  private write(o: Outcome): number {
    const rec = this.opts.status.record;
    rec.exit = exitRecord(o, reapStats, Date.now());
    rec.phase = "exited";
    this.opts.status.write();
    return o.code;
  }
}

/** What a process does with a signal, from /proc/PID/status ("unknown": it is gone). */
function signalState(pid: number, signo: number): SignalState {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, "latin1");
  } catch {
    return "unknown";
  }
  const has = (field: string) => {
    const m = new RegExp(`^${field}:\\s*([0-9a-f]+)$`, "m").exec(text);
    return m ? ((BigInt(`0x${m[1]}`) >> BigInt(signo - 1)) & 1n) === 1n : false;
  };
  if (has("SigBlk")) return "blocked";
  if (has("SigIgn")) return "ignored";
  if (has("SigCgt")) return "handled";
  return "default";
}

function exitOf(proc: Subprocess): AppExit {
  if (proc.signalCode) {
    const n = parseSignal(String(proc.signalCode));
    if (n) return { code: 128 + n, signal: n };
  }
  return { code: proc.exitCode ?? 0, signal: null };
}
