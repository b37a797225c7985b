// MAN8S_WAIT_FOR: every listed probe must pass before the app starts.
//
//   waitFor(env, opts): Promise<WaitReport>    resolves when all passed (at once when unset/empty);
//                                              throws ExitError(75) at MAN8S_WAIT_TIMEOUT naming the targets
//                                              that never answered and their last error;
//                                              throws ExitError(65) for a bad URL or timeout value;
//                                              rejects with opts.signal.reason when aborted (stop request)
//   parseWaitTimeoutMs(text): number           seconds ("30", "1.5") or with a unit ("500ms", "2m"); 0 = forever
//
// Each target is retried on its own, in parallel: one attempt (timeout = min(MAN8S_WAIT_PROBE_TIMEOUT, default
// 2 s, and the time left)), and the next attempt starts RETRY_MS (250 ms) after the previous one started (at once
// if that attempt took longer). Progress is logged when a target passes and every 5 s for targets still failing.
import { ExitError, EXIT } from "../common/log.ts";
import { parseProbeUrl, splitProbeList, ProbeUrlError, type Probe } from "./url.ts";
import { runProbe } from "./run.ts";
import { setLongTimeout, sleepLong } from "../common/timer.ts";

// the durations are settings the agent validates too: parsed in settings.ts
import { DEFAULT_ATTEMPT_TIMEOUT_MS, DEFAULT_WAIT_TIMEOUT_MS, parseWaitTimeoutMs } from "./settings.ts";
export { DEFAULT_ATTEMPT_TIMEOUT_MS, DEFAULT_WAIT_TIMEOUT_MS, parseWaitTimeoutMs };
export const RETRY_MS = 250;

export interface WaitReport {
  targets: { url: string; ms: number; attempts: number; detail: string }[];
  totalMs: number;
}

export interface WaitOptions {
  log: (msg: string) => void;
  signal?: AbortSignal;
  /** override the retry spacing (tests) */
  retryMs?: number;
  /** environment of exec: probes (the app's environment; default process.env) */
  spawnEnv?: Record<string, string | undefined>;
  /** exec: probes as the app's user (init/launch.ts) */
  wrap?: (argv: string[]) => string[];
}

function parseTargets(text: string): Probe[] {
  try {
    return splitProbeList(text).map(parseProbeUrl);
  } catch (e) {
    if (e instanceof ProbeUrlError) throw new ExitError(EXIT.badEnv, `MAN8S_WAIT_FOR: ${e.message}`);
    throw e;
  }
}

export async function waitFor(env: Record<string, string | undefined>, opts: WaitOptions): Promise<WaitReport> {
  const t0 = performance.now();
  const text = env.MAN8S_WAIT_FOR?.trim() ?? "";
  if (text === "") return { targets: [], totalMs: 0 };
  const probes = parseTargets(text);
  const timeoutMs = parseWaitTimeoutMs(env.MAN8S_WAIT_TIMEOUT);
  const attemptMs = parseWaitTimeoutMs(env.MAN8S_WAIT_PROBE_TIMEOUT, "MAN8S_WAIT_PROBE_TIMEOUT", DEFAULT_ATTEMPT_TIMEOUT_MS) || DEFAULT_ATTEMPT_TIMEOUT_MS;
  const retryMs = opts.retryMs ?? RETRY_MS;
  const deadline = timeoutMs > 0 ? t0 + timeoutMs : Infinity;
  opts.log(`waiting for ${probes.map((p) => p.url).join(", ")}${timeoutMs > 0 ? ` (timeout ${timeoutMs / 1000} s)` : ""}`);

  const inner = new AbortController(); // ends every loop at the deadline or on opts.signal
  const onOuterAbort = () => inner.abort(opts.signal?.reason);
  if (opts.signal?.aborted) throw opts.signal.reason ?? new Error("aborted");
  opts.signal?.addEventListener("abort", onOuterAbort, { once: true });

  const status = probes.map((p) => ({ url: p.url, done: false, attempts: 0, last: "no attempt finished", ms: 0 }));
  const sleep = (ms: number) => sleepLong(ms, inner.signal);

  const loop = async (p: Probe, st: (typeof status)[number]) => {
    let lastLog = performance.now();
    while (!inner.signal.aborted) {
      const started = performance.now();
      const left = deadline - started;
      if (left <= 0) return;
      const r = await runProbe(p, { timeoutMs: Math.min(attemptMs, left), env, signal: inner.signal, ...(opts.spawnEnv ? { spawnEnv: opts.spawnEnv } : {}), ...(opts.wrap ? { wrap: opts.wrap } : {}) });
      if (inner.signal.aborted) return;
      st.attempts++;
      if (r.ok) {
        st.done = true;
        st.ms = performance.now() - t0;
        st.last = r.output.trim().split("\n")[0] ?? "";
        opts.log(`wait: ${p.url} up after ${Math.round(st.ms)} ms (${st.attempts} attempt${st.attempts > 1 ? "s" : ""})`);
        return;
      }
      st.last = r.output.trim().split("\n").slice(-1)[0] || `exit ${r.exitCode}`;
      if (performance.now() - lastLog >= 5000) {
        lastLog = performance.now();
        opts.log(`wait: still waiting for ${p.url}: ${st.last}`);
      }
      await sleep(Math.max(0, Math.min(retryMs - (performance.now() - started), deadline - performance.now())));
    }
  };

  // MAN8S_WAIT_TIMEOUT=1000h is longer than a plain setTimeout can wait
  const deadlineTimer = setLongTimeout(() => inner.abort(new Error("deadline")), deadline - performance.now());
  try {
    await Promise.all(probes.map((p, i) => loop(p, status[i]!)));
  } finally {
    deadlineTimer.clear();
    opts.signal?.removeEventListener("abort", onOuterAbort);
  }
  if (opts.signal?.aborted) throw opts.signal.reason ?? new Error("aborted");
  const missing = status.filter((s) => !s.done);
  if (missing.length > 0) {
    throw new ExitError(
      EXIT.depTimeout,
      `MAN8S_WAIT_TIMEOUT (${timeoutMs / 1000} s) expired; never answered: ${missing.map((s) => `${s.url} (${s.last})`).join(", ")}`,
    );
  }
  return { targets: status.map((s) => ({ url: s.url, ms: s.ms, attempts: s.attempts, detail: s.last })), totalMs: performance.now() - t0 };
}
