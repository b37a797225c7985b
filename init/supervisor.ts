// Runs the app and owns everything after: signal forwarding, the stop sequence, the drain of what the
// app left behind, escalation to SIGKILL and the exit code (DESIGN §3.2–§3.4).
import type { Subprocess } from "bun";
import { readFileSync } from "node:fs";
import { EXIT, ExitError, log } from "../common/log.ts";
import { libc } from "../common/libc.ts";
import {
  parseSignal, SIG_HALT, SIG_KEXEC, SIG_POWEROFF, SIG_REBOOT, SIGCANCEL, SIGCHLD, SIGHUP, SIGINT, SIGKILL, SIGTERM, signalName,
} from "../common/signals.ts";
import { launcherPath, launchArgv, resolveExecutable } from "./launch.ts";
import { descendants } from "./proctree.ts";
import { trackBunChild, untrackBunChild } from "../common/bun-children.ts";
import { reap, reapStats } from "./reaper.ts";
import type { StatusFile } from "./status.ts";
import type { AppUser } from "../common/user.ts";

/** poweroff group (SIGTERM, SIGRTMIN+3/+4) and reboot group (SIGINT, SIGRTMIN+5/+6) */
const STOP_SIGNALS = new Set([SIGTERM, SIG_HALT, SIG_POWEROFF, SIGINT, SIG_REBOOT, SIG_KEXEC]);
const REBOOT_SIGNALS = new Set([SIGINT, SIG_REBOOT, SIG_KEXEC]);
/** nspawn's stub sends TERM, CONT, HUP back to back and the kernel hands over HUP first. */
const HUP_WINDOW_MS = 50;
const DRAIN_POLL_MS = 20;
const KILL_WAIT_MS = 5000;

export interface SupervisorOptions {
  stopSignal: number;
  stopTimeoutMs: number;
  pid1: boolean;
  status: StatusFile;
}

export interface AppExit {
  code: number;
  signal: number | null;
}

export class Supervisor {
  private app: Subprocess | null = null;
  private group = false;
  private appDone = false;
  private stopRequest: { signo: number; at: number } | null = null;
  private stopDeadline = 0;
  private stopTimer: ReturnType<typeof setTimeout> | null = null;
  private pendingHup: ReturnType<typeof setTimeout> | null = null;
  /** set when the stop timeout ran out with the app still there and it was sent SIGKILL */
  private escalation: { at: number; appSignalState: SignalState } | null = null;
  /** processes the drain had to SIGKILL at its deadline (the app's leftovers, not the app) */
  private drainKilled = 0;
  /** pids that already got the stop signal: the drain does not send it twice */
  private readonly signalled = new Set<number>();
  private readonly stopListeners: Array<() => void> = [];
  /**
   * MAN8S_HEALTH_ON_FAILURE=restart: called when the app exits with no stop requested; it may spawn() a new
   * app and return true, and waitAndDrain then waits for that one instead (init/health-action.ts).
   */
  respawn: ((exit: AppExit) => Promise<boolean>) | null = null;

  constructor(private readonly opts: SupervisorOptions) {}

  /** Stop settings come from the env file, read after signal intake is already running. */
  configureStop(signal: number, timeoutMs: number): void {
    this.opts.stopSignal = signal;
    this.opts.stopTimeoutMs = timeoutMs;
    if (this.stopRequest) this.stopDeadline = this.stopRequest.at + timeoutMs;
  }

  get stopping(): boolean {
    return this.stopRequest !== null;
  }

  /** Called when a stop is requested (so start-up phases can give up waiting); at once if already stopping. */
  onStop(fn: () => void): void {
    if (this.stopRequest) fn();
    else this.stopListeners.push(fn);
  }

  handleSignal(signo: number): void {
    if (signo === SIGCHLD) {
      reap();
      return;
    }
    if (signo === SIGCANCEL) {
      log("signal 32 (libc's thread-cancel signal) received: not forwarded, it would kill a glibc app");
      return;
    }
    if (STOP_SIGNALS.has(signo)) {
      this.requestStop(signo);
      return;
    }
    if (signo === SIGHUP) {
      if (this.stopRequest) {
        log("SIGHUP during the stop sequence: swallowed");
        return;
      }
      if (this.pendingHup) return; // still deciding about the previous one
      this.pendingHup = setTimeout(() => {
        this.pendingHup = null;
        if (!this.stopRequest) this.forward(SIGHUP);
      }, HUP_WINDOW_MS);
      return;
    }
    this.forward(signo);
  }

  private forward(signo: number): void {
    const app = this.app;
    if (!app || this.appDone) {
      log(`${signalName(signo)} received with no app running: ignored`);
      return;
    }
    libc.kill(this.group ? -app.pid : app.pid, signo);
  }

  requestStop(signo: number): void {
    if (this.pendingHup) {
      clearTimeout(this.pendingHup);
      this.pendingHup = null;
      log("SIGHUP next to a stop request: swallowed (part of nspawn's stop sequence)");
    }
    if (this.stopRequest) {
      log(`${signalName(signo)}: stop already in progress, not resent`);
      return;
    }
    this.stopRequest = { signo, at: Date.now() };
    this.stopDeadline = Date.now() + this.opts.stopTimeoutMs;
    const rec = this.opts.status.record;
    const running = this.app !== null && !this.appDone;
    const now = new Date().toISOString();
    rec.stop = {
      signal: signalName(signo),
      requestedAt: now,
      sent: running ? signalName(this.opts.stopSignal) : null,
      sentAt: running ? now : null,
      timeoutSec: this.opts.stopTimeoutMs / 1000,
      escalated: false,
      escalatedAt: null,
      appSignalState: null,
    };
    if (running) {
      log(`${signalName(signo)}: stopping the app with ${signalName(this.opts.stopSignal)} (timeout ${this.opts.stopTimeoutMs / 1000} s)`);
      rec.phase = "stopping";
      this.sendStopSignal();
      this.stopTimer = setTimeout(() => this.escalate(), this.opts.stopTimeoutMs);
    } else {
      log(`${signalName(signo)}: stop requested before the app started`);
    }
    this.opts.status.write();
    for (const fn of this.stopListeners.splice(0)) fn();
  }

  private sendStopSignal(): void {
    const app = this.app!;
    if (this.group) {
      for (const p of descendants()) if (p.pgid === app.pid) this.signalled.add(p.pid);
      libc.kill(-app.pid, this.opts.stopSignal);
    } else {
      libc.kill(app.pid, this.opts.stopSignal);
    }
    this.signalled.add(app.pid);
  }

  /** The stop timeout ran out with the app still there: SIGKILL the app and everything under us. */
  private escalate(): void {
    if (this.appDone || !this.app) return;
    // what the app did with the stop signal: a handler means it was still at work (draining), not ignoring it
    const appSignalState = signalState(this.app.pid, this.opts.stopSignal);
    log(`stop timeout (${this.opts.stopTimeoutMs / 1000} s): the app is still running (${signalName(this.opts.stopSignal)} ${appSignalState}); killing it and its descendants`);
    this.escalation = { at: Date.now(), appSignalState };
    const stop = this.opts.status.record.stop;
    if (stop) Object.assign(stop, { escalated: true, escalatedAt: new Date(this.escalation.at).toISOString(), appSignalState });
    if (this.group) libc.kill(-this.app.pid, SIGKILL);
    for (const p of descendants()) libc.kill(p.pid, SIGKILL);
  }

  /**
   * Start the app through the launcher's exec mode: as `user`, in a process group of its own, made the
   * terminal's foreground group when the init has a controlling terminal (docs/signals.md). Returns the
   * 126/127 code (and logs) when the command cannot be executed; nothing is started then.
   */
  spawn(argv: string[], env: Record<string, string>, group: boolean, user: AppUser | null = null): { pid: number } | { failed: number } {
    this.group = group;
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
    this.app = proc;
    return { pid: proc.pid };
  }

  /** Wait for the app, drain the rest, and compute the exit code (DESIGN §3.4). */
  async waitAndDrain(beforeDrain?: () => Promise<void>): Promise<{ code: number; reason: string; app: AppExit | null; drained: number; drainKilled: number; killedAfterTimeout: boolean }> {
    const status = this.opts.status;
    let app: AppExit | null = null;
    while (this.app) {
      const current = this.app;
      await current.exited.catch(() => undefined);
      untrackBunChild(current.pid);
      app = exitOf(current);
      log(`app (pid ${current.pid}) ${app.signal ? `killed by ${signalName(app.signal)}` : `exited with ${app.code}`}`);
      if (this.respawn && !this.stopRequest && (await this.respawn(app)) && this.app !== current) continue;
      this.appDone = true;
      break;
    }
    await beforeDrain?.();
    status.record.phase = "draining";
    status.write();
    const drained = await this.drain();
    if (this.stopTimer) clearTimeout(this.stopTimer);
    reap();

    let code: number;
    let reason: string;
    // killed after the timeout only when we escalated and SIGKILL is what ended it (an app that exited on
    // its own in the same instant, or was SIGKILLed by the OOM killer with no stop, was not)
    const killedAfterTimeout = this.escalation !== null && app?.signal === SIGKILL;
    if (!app) {
      code = 0;
      reason = `stop requested (${signalName(this.stopRequest?.signo ?? SIGTERM)}) before the app started`;
    } else if (killedAfterTimeout) {
      code = 137;
      reason = `app still running ${this.opts.stopTimeoutMs / 1000} s after ${signalName(this.opts.stopSignal)} (${describeSignalState(this.escalation!.appSignalState, this.opts.stopSignal)}): killed with SIGKILL at the stop timeout`;
    } else {
      code = app.signal ? 128 + app.signal : app.code;
      reason = app.signal ? `app killed by ${signalName(app.signal)}` : `app exited with ${app.code}`;
      if (this.stopRequest) reason += ` after stop request ${signalName(this.stopRequest.signo)}`;
      if (this.escalation) reason += " (as the stop timeout ran out)";
    }
    if (this.opts.pid1 && this.stopRequest && REBOOT_SIGNALS.has(this.stopRequest.signo)) {
      code = 133;
      reason += "; exit 133 asks nspawn to restart (reboot request)";
    }
    return { code, reason, app, drained, drainKilled: this.drainKilled, killedAfterTimeout };
  }

  /** Stop signal to every remaining descendant, wait until the deadline, then SIGKILL what is left. */
  private async drain(): Promise<number> {
    let left = descendants();
    if (left.length === 0) return 0;
    const total = left.length;
    const deadline = this.stopRequest ? Math.max(this.stopDeadline, Date.now()) : Date.now() + this.opts.stopTimeoutMs;
    const fresh = left.filter((p) => !this.signalled.has(p.pid));
    log(`draining ${total} remaining process(es): ${signalName(this.opts.stopSignal)} to ${fresh.length}, deadline ${((deadline - Date.now()) / 1000).toFixed(1)} s`);
    for (const p of fresh) {
      libc.kill(p.pid, this.opts.stopSignal);
      this.signalled.add(p.pid);
    }
    while (left.length && Date.now() < deadline) {
      await Bun.sleep(DRAIN_POLL_MS);
      reap();
      left = descendants();
    }
    if (left.length) {
      log(`drain timeout: SIGKILL to ${left.length} process(es)`);
      this.drainKilled = left.length;
      // a process stuck in uninterruptible sleep ignores even SIGKILL: do not wait for it forever
      const giveUp = Date.now() + KILL_WAIT_MS;
      while (left.length && Date.now() < giveUp) {
        for (const p of left) libc.kill(p.pid, SIGKILL);
        await Bun.sleep(DRAIN_POLL_MS);
        reap();
        left = descendants();
      }
      if (left.length) log(`still alive after SIGKILL (uninterruptible?): ${left.map((p) => p.pid).join(" ")}`);
    }
    return total;
  }

  orphansReaped(): number {
    return reapStats.reaped;
  }
}

/** What a process does with a signal, from /proc/PID/status ("unknown": it is gone). */
export type SignalState = "handled" | "ignored" | "blocked" | "default" | "unknown";

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

function exitOf(proc: Subprocess): AppExit {
  if (proc.signalCode) {
    const n = parseSignal(String(proc.signalCode));
    if (n) return { code: 128 + n, signal: n };
  }
  return { code: proc.exitCode ?? 0, signal: null };
}
