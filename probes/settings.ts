// The probe settings (DESIGN §6): MAN8S_HEALTHCHECK (Docker's Healthcheck as JSON), MAN8S_WAIT_FOR,
// MAN8S_WAIT_TIMEOUT, MAN8S_WAIT_PROBE_TIMEOUT, MAN8S_READY, MAN8S_READY_INTERVAL. Pure parsing, shared by
// the init's probes (loaded lazily) and the agent's validate-env.ts. Reference: docs/validation.md.
//
//   checkProbeEnv(env, warn): void        every probe variable, at the init's start; throws SettingError (65)
//   parseHealthcheck(text, opts)          HealthcheckConfig | null (see healthcheck.ts for the JSON)
//   parseWaitTimeoutMs(text, name, dflt)  seconds ("30", "1.5") or with a unit ("500ms", "2m"); 0 = forever
import { parseProbeUrl, ProbeUrlError, splitProbeList } from "./url.ts";
import { clip, SettingError, type Env } from "../common/settings.ts";

export interface HealthcheckConfig {
  /** the Test array as given */
  test: string[];
  /** what is executed: CMD args, or shell + the CMD-SHELL string */
  argv: string[];
  intervalMs: number;
  timeoutMs: number;
  startPeriodMs: number;
  startIntervalMs: number;
  retries: number;
}

export const DEFAULTS = { intervalMs: 30_000, timeoutMs: 30_000, startPeriodMs: 0, startIntervalMs: 5_000, retries: 3 } as const;

export class HealthcheckError extends Error {}

const GO_UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, "µs": 1e-3, "μs": 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Nanoseconds (number or digit string) or a Go duration string → milliseconds. */
export function parseDurationMs(v: unknown, field: string): number {
  if (v === undefined || v === null) return 0;
  if (typeof v === "number") {
    if (!Number.isFinite(v) || v < 0 || !Number.isInteger(v)) throw new HealthcheckError(`MAN8S_HEALTHCHECK: ${field} must be a non-negative integer of nanoseconds, got ${v}`);
    return v / 1e6;
  }
  if (typeof v === "string") {
    const s = v.trim();
    // bounded, so that no value becomes Infinity
    if (s.length > 64) throw new HealthcheckError(`MAN8S_HEALTHCHECK: ${field} is longer than 64 characters`);
    if (/^\d+$/.test(s)) return Number(s) / 1e6;
    const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/gy;
    let ms = 0, at = 0;
    for (let m; (m = re.exec(s)); at = re.lastIndex) ms += Number(m[1]) * GO_UNITS[m[2]!]!;
    if (at !== s.length || s === "") throw new HealthcheckError(`MAN8S_HEALTHCHECK: ${field} '${v}' is not a duration (nanoseconds, or e.g. "30s", "500ms")`);
    return ms;
  }
  throw new HealthcheckError(`MAN8S_HEALTHCHECK: ${field} must be nanoseconds, got ${JSON.stringify(v)}`);
}

export function parseHealthcheck(
  text: string | undefined,
  opts: { shell?: string[]; warn?: (msg: string) => void } = {},
): HealthcheckConfig | null {
  if (text === undefined || text.trim() === "") return null;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new HealthcheckError(`MAN8S_HEALTHCHECK is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new HealthcheckError("MAN8S_HEALTHCHECK must be a JSON object like {\"Test\": [\"CMD\", ...]}");
  const obj: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) obj[k.toLowerCase()] = v;
  let test = obj.test;
  if (typeof test === "string") test = ["CMD-SHELL", test];
  if (test === undefined || test === null) test = [];
  if (!Array.isArray(test) || !test.every((t) => typeof t === "string")) throw new HealthcheckError("MAN8S_HEALTHCHECK: Test must be an array of strings");
  const t = test as string[];
  if (t.length === 0 || t[0] === "NONE") return null;
  let argv: string[];
  if (t[0] === "CMD") argv = t.slice(1);
  else if (t[0] === "CMD-SHELL") argv = [...(opts.shell ?? ["/bin/sh", "-c"]), ...t.slice(1)];
  else {
    opts.warn?.(`MAN8S_HEALTHCHECK: unknown Test type '${t[0]}' (expected CMD, CMD-SHELL or NONE): health checks disabled`);
    return null;
  }
  if (argv.length === 0 || (t[0] === "CMD-SHELL" && t.length < 2)) throw new HealthcheckError(`MAN8S_HEALTHCHECK: ${t[0]} needs a command`);
  const dur = (key: string, name: string) => {
    const ms = parseDurationMs(obj[key], name);
    if (ms !== 0 && ms < 1) throw new HealthcheckError(`MAN8S_HEALTHCHECK: ${name} cannot be less than 1ms`);
    return ms;
  };
  const retries = obj.retries ?? 0;
  if (typeof retries !== "number" || !Number.isInteger(retries) || retries < 0) throw new HealthcheckError("MAN8S_HEALTHCHECK: Retries must be a non-negative integer");
  return {
    test: t,
    argv,
    intervalMs: dur("interval", "Interval") || DEFAULTS.intervalMs,
    timeoutMs: dur("timeout", "Timeout") || DEFAULTS.timeoutMs,
    startPeriodMs: dur("startperiod", "StartPeriod") || DEFAULTS.startPeriodMs,
    startIntervalMs: dur("startinterval", "StartInterval") || DEFAULTS.startIntervalMs,
    retries: retries || DEFAULTS.retries,
  };
}
export const DEFAULT_WAIT_TIMEOUT_MS = 60_000;
export const DEFAULT_ATTEMPT_TIMEOUT_MS = 2_000;

/** "30" / "1.5" seconds, or "500ms", "30s", "2m", "1h"; 0 or "0" means no limit. Throws on garbage. */
export function parseWaitTimeoutMs(text: string | undefined, name = "MAN8S_WAIT_TIMEOUT", dflt = DEFAULT_WAIT_TIMEOUT_MS): number {
  if (text === undefined || text.trim() === "") return dflt;
  const m = /^(\d{1,12}(?:\.\d{1,9})?)\s*(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new SettingError(name, `${name}='${clip(text)}' is not a duration (seconds, or e.g. 500ms, 30s, 2m)`);
  const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "s"]!;
  return Number(m[1]) * mult;
}

/** MAN8S_READY: "" or start (ready when the app started), none (the app notifies), healthy, or a probe URL. */
export const READY_WORDS = ["start", "none", "healthy"] as const;

/** Every probe variable, before network and dependencies, so a typo fails the container at once naming it. */
export function checkProbeEnv(env: Env, warn: (msg: string) => void = () => {}): void {
  const wrap = <T>(name: string, f: () => T): T => {
    try {
      return f();
    } catch (e) {
      if (e instanceof ProbeUrlError || e instanceof HealthcheckError) throw new SettingError(name, e.message.startsWith(name) ? e.message : `${name}: ${e.message}`);
      throw e;
    }
  };
  wrap("MAN8S_WAIT_FOR", () => void splitProbeList(env.MAN8S_WAIT_FOR ?? "").map(parseProbeUrl));
  wrap("MAN8S_WAIT_TIMEOUT", () => void parseWaitTimeoutMs(env.MAN8S_WAIT_TIMEOUT));
  wrap("MAN8S_WAIT_PROBE_TIMEOUT", () => void parseWaitTimeoutMs(env.MAN8S_WAIT_PROBE_TIMEOUT, "MAN8S_WAIT_PROBE_TIMEOUT"));
  const hc = wrap("MAN8S_HEALTHCHECK", () => parseHealthcheck(env.MAN8S_HEALTHCHECK, { warn }));
  const ready = env.MAN8S_READY?.trim() ?? "";
  if (ready !== "" && !(READY_WORDS as readonly string[]).includes(ready)) wrap("MAN8S_READY", () => void parseProbeUrl(ready));
  if (ready === "healthy" && !hc) warn("MAN8S_READY=healthy without a MAN8S_HEALTHCHECK: the container will be ready as soon as the app starts");
  wrap("MAN8S_READY_INTERVAL", () => void parseWaitTimeoutMs(env.MAN8S_READY_INTERVAL, "MAN8S_READY_INTERVAL"));
}
