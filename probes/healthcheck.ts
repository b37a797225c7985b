// MAN8S_HEALTHCHECK: the image's Docker `Healthcheck`, run with Docker's state machine (moby daemon/health.go;
// docs/notes.md §12).
//
//   parseHealthcheck(text, opts?): HealthcheckConfig | null   null = no healthcheck (unset, Test [] or ["NONE"]);
//                                                             throws HealthcheckError on bad JSON / values
//   startHealth(env, opts): HealthHandle | null               starts the monitor; null when disabled
//   applyResult(state, result, sinceStartMs, cfg): boolean    the pure state transition (true = status changed)
//   nextDelayMs(cfg, elapsedMs, status): number               the pure scheduling rule
//
// JSON (field names case-insensitive, as Go's encoding/json reads them):
//   {"Test": ["CMD", "curl", "-f", "http://localhost/"] | ["CMD-SHELL", "curl -f http://localhost/"] | ["NONE"],
//    "Interval": ns, "Timeout": ns, "StartPeriod": ns, "StartInterval": ns, "Retries": n}
// Durations are integer nanoseconds as Docker stores them (a Go duration string such as "30s" or "250ms" is
// accepted too); 0 or absent means the default: Interval 30 s, Timeout 30 s, StartPeriod 0, StartInterval 5 s,
// Retries 3. Non-zero durations under 1 ms and negative Retries are rejected, as Docker's API does.
// An unknown Test[0] disables the check with a warning (Docker does the same). A string Test is CMD-SHELL.
//
// State machine (handleProbeResult): status starts "starting"; exit 0 → "healthy", FailingStreak = 0; any other
// exit (including -1 for a timeout or a command that cannot start) → FailingStreak++ unless the status is still
// "starting" and the probe started within StartPeriod of the app's start; FailingStreak >= Retries → "unhealthy".
// Every result is appended to Log, which keeps the last 5. Output: stdout+stderr, first 4096 bytes, "..." when cut.
// Timeout: the probe's process group gets SIGKILL; the result is exit -1, "Health check exceeded timeout (D)".
// Scheduling (monitor): the first probe runs one delay after start; the delay is measured from the end of the
// previous probe; after the start period it is Interval; inside it, it is StartInterval while "starting" and
// Interval once healthy, each capped by what remains of the start period (moby #52317), so a probe runs right
// when the start period ends.
import { setLongTimeout, type LongTimer } from "../common/timer.ts";
// the JSON is a setting the agent validates too: its parser lives in settings.ts
import { DEFAULTS, HealthcheckError, parseDurationMs, parseHealthcheck, type HealthcheckConfig } from "./settings.ts";
import { runCommand, goDuration, type RunOptions } from "./run.ts";

export type HealthStatus = "starting" | "healthy" | "unhealthy";

export interface HealthResult {
  /** RFC 3339 timestamps, as in `docker inspect` */
  start: string;
  end: string;
  exitCode: number;
  output: string;
}

export interface HealthState {
  status: HealthStatus;
  failingStreak: number;
  log: HealthResult[];
}

export { DEFAULTS, HealthcheckError, parseDurationMs, parseHealthcheck, type HealthcheckConfig };

export const MAX_LOG_ENTRIES = 5;

/** Docker's handleProbeResult. Mutates state; returns true when the status changed. */
export function applyResult(state: HealthState, result: HealthResult, sinceStartMs: number, cfg: HealthcheckConfig): boolean {
  const old = state.status;
  state.log.push(result);
  if (state.log.length > MAX_LOG_ENTRIES) state.log.splice(0, state.log.length - MAX_LOG_ENTRIES);
  if (result.exitCode === 0) {
    state.failingStreak = 0;
    state.status = "healthy";
  } else {
    const inGrace = state.status === "starting" && sinceStartMs < cfg.startPeriodMs;
    if (!inGrace) {
      state.failingStreak++;
      if (state.failingStreak >= cfg.retries) state.status = "unhealthy";
    }
  }
  return state.status !== old;
}

/** Delay before the next probe, measured from now (= end of the previous probe, or start). */
export function nextDelayMs(cfg: HealthcheckConfig, elapsedMs: number, status: HealthStatus): number {
  if (elapsedMs >= cfg.startPeriodMs) return cfg.intervalMs;
  const base = status === "starting" ? cfg.startIntervalMs : cfg.intervalMs;
  // +1 ms: timers have millisecond granularity; a probe that fired a fraction early would still count as
  // "inside" the period and the next one would wait a whole Interval
  const remaining = Math.ceil(cfg.startPeriodMs - elapsedMs) + 1;
  return Math.min(base, remaining);
}

export interface HealthHandle {
  readonly config: HealthcheckConfig;
  /** a copy of the current state (Docker's State.Health) */
  state(): HealthState;
  /** called after every status change; returns an unsubscribe function */
  subscribe(fn: (state: HealthState, previous: HealthStatus) => void): () => void;
  /** stops scheduling, SIGKILLs a running probe and waits for it; afterwards nothing keeps the process alive */
  stop(): Promise<void>;
}

export interface HealthOptions {
  log: (msg: string) => void;
  onChange?: (state: HealthState, previous: HealthStatus) => void;
  /** also called after every probe (status record updates); optional */
  onResult?: (state: HealthState, result: HealthResult) => void;
  /** performance.now() at which the app started (default: now) */
  startedAt?: number;
  /** CMD-SHELL shell (the image's Config.Shell; default /bin/sh -c) */
  shell?: string[];
  /** environment, working directory and identity of the check command (the app's) */
  spawnEnv?: RunOptions["spawnEnv"];
  wrap?: RunOptions["wrap"];
  cwd?: string;
  uid?: number;
  gid?: number;
}

function copyState(s: HealthState): HealthState {
  return { status: s.status, failingStreak: s.failingStreak, log: s.log.map((r) => ({ ...r })) };
}

/**
 * Starts the monitor for MAN8S_HEALTHCHECK in env. Returns null when no healthcheck is configured.
 * Throws HealthcheckError for an invalid value (validate early with parseHealthcheck).
 */
export function startHealth(env: Record<string, string | undefined>, opts: HealthOptions): HealthHandle | null {
  const cfg = parseHealthcheck(env.MAN8S_HEALTHCHECK, { ...(opts.shell ? { shell: opts.shell } : {}), warn: opts.log });
  if (!cfg) return null;
  const startedAt = opts.startedAt ?? performance.now();
  const state: HealthState = { status: "starting", failingStreak: 0, log: [] };
  const listeners = new Set<(s: HealthState, prev: HealthStatus) => void>();
  if (opts.onChange) listeners.add(opts.onChange);
  const abort = new AbortController();
  let timer: LongTimer | null = null;
  let running: Promise<void> | null = null;
  let stopped = false;

  const schedule = () => {
    if (stopped) return;
    const delay = nextDelayMs(cfg, performance.now() - startedAt, state.status);
    // an Interval of 30 days is longer than a plain setTimeout can wait
    timer = setLongTimeout(() => {
      timer = null;
      running = probeOnce().finally(() => {
        running = null;
        schedule();
      });
    }, delay);
  };

  const probeOnce = async () => {
    const startMono = performance.now();
    const start = new Date();
    const r = await runCommand(cfg.argv, {
      timeoutMs: cfg.timeoutMs,
      signal: abort.signal,
      ...(opts.spawnEnv ? { spawnEnv: opts.spawnEnv } : {}),
      ...(opts.wrap ? { wrap: opts.wrap } : {}),
      ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
      ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
      ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    });
    if (stopped) return; // Docker ignores a result that arrives after the monitor was stopped
    let output = r.output;
    if (r.timedOut) output = r.output ? `Health check exceeded timeout (${goDuration(cfg.timeoutMs)}): ${r.output}` : `Health check exceeded timeout (${goDuration(cfg.timeoutMs)})`;
    const result: HealthResult = { start: start.toISOString(), end: new Date().toISOString(), exitCode: r.timedOut ? -1 : r.exitCode, output };
    const previous = state.status;
    const changed = applyResult(state, result, startMono - startedAt, cfg);
    try {
      opts.onResult?.(copyState(state), { ...result });
    } catch (e) {
      opts.log(`health: onResult failed: ${(e as Error).message}`);
    }
    if (changed) {
      opts.log(`health: ${previous} -> ${state.status} (exit ${result.exitCode}, failing streak ${state.failingStreak})`);
      for (const fn of listeners) {
        try {
          fn(copyState(state), previous);
        } catch (e) {
          opts.log(`health: listener failed: ${(e as Error).message}`);
        }
      }
    }
  };

  schedule();
  return {
    config: cfg,
    state: () => copyState(state),
    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    async stop() {
      stopped = true;
      timer?.clear();
      timer = null;
      abort.abort();
      if (running) await running;
      listeners.clear();
    },
  };
}
