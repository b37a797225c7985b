// MAN8S_READY: when the app counts as ready, send READY=1 (+ STATUS=) to $NOTIFY_SOCKET (notify.ts).
//
//   startReady(env, opts): ReadyHandle
//     MAN8S_READY unset/empty/start → ready at once (the app has started)
//     MAN8S_READY=none        → never sends READY=1 (the app notifies nspawn itself)
//     MAN8S_READY=healthy     → ready at the first "healthy" of opts.health (the MAN8S_HEALTHCHECK monitor);
//                               without a health monitor: a warning, then ready at once
//     MAN8S_READY=<probe URL> → the probe is run every MAN8S_READY_INTERVAL (default 100 ms; "250ms", "0.5", "1s")
//                               with a per-attempt timeout of min(2 s, max(interval, 1 s)) until it passes
//   After READY=1, health changes are sent as STATUS= lines too. handle.done resolves with the ReadyInfo
//   (or null when stopped first). stop() cancels the polling and the running attempt; afterwards nothing
//   keeps the process alive.
import { parseProbeUrl, type Probe } from "./url.ts";
import { runProbe } from "./run.ts";
import { sdNotify, type NotifyOutcome } from "./notify.ts";
import type { HealthHandle, HealthState, HealthStatus } from "./healthcheck.ts";
import { parseWaitTimeoutMs } from "./waitfor.ts";

export const DEFAULT_READY_INTERVAL_MS = 100;
import { sleepLong } from "../common/timer.ts";

export interface ReadyInfo {
  /** "start", "healthy", or the probe URL */
  via: string;
  /** the STATUS= text sent with READY=1 */
  status: string;
  /** ms from startReady() to readiness */
  afterMs: number;
  /** Date.now() at readiness */
  at: number;
  attempts: number;
  notify: NotifyOutcome;
}

export interface ReadyHandle {
  readonly done: Promise<ReadyInfo | null>;
  isReady(): boolean;
  stop(): Promise<void>;
}

export interface ReadyOptions {
  log: (msg: string) => void;
  onReady?: (info: ReadyInfo) => void;
  health?: HealthHandle | null;
  /** override MAN8S_READY_INTERVAL (ms) */
  intervalMs?: number;
  /** the pid to claim in SCM_CREDENTIALS (default: 1 when we are PID 2, else our own) */
  claimPid?: number;
  /** environment of an exec: readiness probe (the app's environment; default process.env) */
  spawnEnv?: Record<string, string | undefined>;
  /** exec: probes as the app's user (init/launch.ts) */
  wrap?: (argv: string[]) => string[];
}

export function readyIntervalMs(env: Record<string, string | undefined>): number {
  return parseWaitTimeoutMs(env.MAN8S_READY_INTERVAL, "MAN8S_READY_INTERVAL", DEFAULT_READY_INTERVAL_MS) || DEFAULT_READY_INTERVAL_MS;
}

export function startReady(env: Record<string, string | undefined>, opts: ReadyOptions): ReadyHandle {
  const t0 = performance.now();
  const spec = env.MAN8S_READY?.trim() ?? "";
  const abort = new AbortController();
  let ready = false;
  let stopped = false;
  let unsubscribe: (() => void) | null = null;
  let resolveDone!: (v: ReadyInfo | null) => void;
  const done = new Promise<ReadyInfo | null>((r) => (resolveDone = r));
  const notifyOpts = { env, ...(opts.claimPid !== undefined ? { claimPid: opts.claimPid } : {}) };
  const send = (fields: string[]) => sdNotify(fields, notifyOpts);

  const followHealth = () => {
    if (!opts.health) return;
    unsubscribe?.();
    unsubscribe = opts.health.subscribe((s: HealthState, prev: HealthStatus) => {
      if (!stopped) send([`STATUS=health: ${s.status} (was ${prev}, failing streak ${s.failingStreak})`]);
    });
  };

  const becomeReady = (via: string, status: string, attempts: number) => {
    if (ready || stopped) return;
    ready = true;
    const outcome = send(["READY=1", `STATUS=${status}`]);
    const info: ReadyInfo = { via, status, afterMs: performance.now() - t0, at: Date.now(), attempts, notify: outcome };
    if (outcome.sent) opts.log(`ready (${status}); READY=1 sent to ${outcome.socket} as pid ${outcome.claimedPid}${outcome.error ? ` (${outcome.error})` : ""}`);
    else opts.log(`ready (${status}); READY=1 not sent: ${outcome.error}`);
    followHealth();
    try {
      opts.onReady?.(info);
    } catch (e) {
      opts.log(`ready: onReady failed: ${(e as Error).message}`);
    }
    resolveDone(info);
  };

  let poll: Promise<void> | null = null;
  if (spec === "none") {
    // the app sends READY=1 itself; done resolves only when stopped
  } else if (spec === "" || spec === "start") {
    queueMicrotask(() => becomeReady("start", "app started", 0));
  } else if (spec === "healthy") {
    const h = opts.health;
    if (!h) {
      opts.log("MAN8S_READY=healthy but there is no MAN8S_HEALTHCHECK: ready now");
      queueMicrotask(() => becomeReady("start", "app started (no health check to wait for)", 0));
    } else {
      send(["STATUS=waiting for the health check"]);
      const check = (s: HealthState) => {
        if (s.status === "healthy") becomeReady("healthy", "healthy", s.log.length);
      };
      unsubscribe = h.subscribe((s) => check(s));
      queueMicrotask(() => check(h.state()));
    }
  } else {
    const probe: Probe = parseProbeUrl(spec); // validated earlier by checkProbeEnv; throws ProbeUrlError
    const interval = opts.intervalMs ?? readyIntervalMs(env);
    const attemptTimeout = Math.min(2000, Math.max(interval, 1000));
    send([`STATUS=waiting for ${probe.url}`]);
    poll = (async () => {
      let attempts = 0;
      let lastLog = performance.now();
      while (!stopped) {
        const started = performance.now();
        const r = await runProbe(probe, { timeoutMs: attemptTimeout, env, signal: abort.signal, ...(opts.spawnEnv ? { spawnEnv: opts.spawnEnv } : {}), ...(opts.wrap ? { wrap: opts.wrap } : {}) });
        if (stopped) return;
        attempts++;
        if (r.ok) return becomeReady(probe.url, `ready: ${probe.url} (${r.output.trim().split("\n")[0] || "exit 0"})`, attempts);
        if (performance.now() - lastLog >= 10_000) {
          lastLog = performance.now();
          opts.log(`ready: still waiting for ${probe.url}: ${r.output.trim().split("\n").slice(-1)[0] || `exit ${r.exitCode}`}`);
        }
        const wait = interval - (performance.now() - started);
        // MAN8S_READY_INTERVAL may be longer than a plain setTimeout can wait
        if (wait > 0) await sleepLong(wait, abort.signal);
      }
    })();
  }

  return {
    done,
    isReady: () => ready,
    async stop() {
      stopped = true;
      abort.abort();
      unsubscribe?.();
      unsubscribe = null;
      if (poll) await poll;
      if (!ready) resolveDone(null);
    },
  };
}
