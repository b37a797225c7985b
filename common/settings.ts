// The env-file settings the init reads at start-up, parsed and validated here and nowhere else: the init
// calls these, and the agent runs the same code (through validate-env.ts) before it renders a container,
// so what it installs is what the init accepts. A leaf module on the init's start-up path: no imports
// beyond common/log.ts and common/signals.ts (see lazy.ts). Reference: docs/validation.md.
import { ExitError, EXIT } from "./log.ts";
import { parseSignal, SIGCANCEL, SIGSETXID, SIGSTOP, SIGTERM } from "./signals.ts";

/** A bad setting: exit 65 in the init, E_BAD_CONFIG in the agent; `key` names the env variable. */
export class SettingError extends ExitError {
  readonly settingKey: string;
  constructor(key: string, message: string, code: number = EXIT.badEnv) {
    super(code, message);
    this.settingKey = key;
  }
}

/** The key of a SettingError from any copy of this module (lazy modules bundle their own: see lazy.ts). */
export function settingKey(e: unknown): string | null {
  const k = (e as { settingKey?: unknown } | null)?.settingKey;
  return e instanceof Error && typeof k === "string" ? k : null;
}

export type Env = Record<string, string | undefined>;

/** Bounds on what the init accepts (the agent refuses the same). */
export const LIMITS = {
  /** one argv word, and the JSON of a whole argv */
  argvJsonBytes: 1024 * 1024,
  argvWords: 65_536,
  userSpec: 256,
} as const;

export const DEFAULT_STOP_TIMEOUT_S = 10;
/** nspawn's stub gives up after 90 s; stay well clear of it */
export const MAX_STOP_TIMEOUT_S = 80;

// SIGKILL and SIGSTOP cannot be caught; SIGSTOP would freeze the app instead of stopping it, SIGKILL
// leaves no clean stop; 32 and 33 belong to glibc's threads
const UNUSABLE_STOP = new Set([SIGSTOP, SIGCANCEL, SIGSETXID]);

/** MAN8S_STOP_SIGNAL (default SIGTERM). */
export function stopSignal(env: Env): number {
  const text = env.MAN8S_STOP_SIGNAL;
  if (!text) return SIGTERM;
  return stopSignalValue(text, "MAN8S_STOP_SIGNAL");
}

/** A stop signal's text (the image's StopSignal too): a number, SIGNAME, NAME or SIGRTMIN+n, but not SIGSTOP. */
export function stopSignalValue(text: string, key: string): number {
  const n = parseSignal(text);
  if (n === null || UNUSABLE_STOP.has(n)) throw new SettingError(key, `${key}: '${clip(text)}' is not a usable signal`);
  return n;
}

/** MAN8S_STOP_TIMEOUT: seconds (decimal), capped at MAX_STOP_TIMEOUT_S; `capped` says so, for the log. */
export function stopTimeout(env: Env): { ms: number; capped: boolean } {
  const text = env.MAN8S_STOP_TIMEOUT;
  if (!text) return { ms: DEFAULT_STOP_TIMEOUT_S * 1000, capped: false };
  const t = Number(text);
  if (!/^\d{1,9}(\.\d{1,9})?$/.test(text.trim()) || !Number.isFinite(t))
    throw new SettingError("MAN8S_STOP_TIMEOUT", `MAN8S_STOP_TIMEOUT: '${clip(text)}' is not a number of seconds`);
  return t > MAX_STOP_TIMEOUT_S ? { ms: MAX_STOP_TIMEOUT_S * 1000, capped: true } : { ms: t * 1000, capped: false };
}

/** MAN8S_APPLICATION_ARGV / MAN8S_EXEC_INIT: a non-empty JSON array of strings whose first word is not empty. */
export function argvJson(key: string, json: string): string[] {
  if (json.length > LIMITS.argvJsonBytes) throw new SettingError(key, `${key}: longer than ${LIMITS.argvJsonBytes} bytes`);
  let argv: unknown;
  try {
    argv = JSON.parse(json);
  } catch (e) {
    throw new SettingError(key, `${key}: not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(argv) || argv.length === 0 || !argv.every((a) => typeof a === "string"))
    throw new SettingError(key, `${key}: must be a non-empty JSON array of strings`);
  if (argv.length > LIMITS.argvWords) throw new SettingError(key, `${key}: more than ${LIMITS.argvWords} words`);
  if (argv[0] === "") throw new SettingError(key, `${key}: the program name is empty`);
  if (argv.some((a: string) => a.includes("\0"))) throw new SettingError(key, `${key}: a word contains a NUL byte`);
  return argv as string[];
}

/**
 * MAN8S_APPLICATION_USER: the image's User, `user`, `uid`, `user:group` or `uid:gid` (mixed allowed).
 * Only the syntax is checked here; the names are looked up in the container's /etc/passwd and /etc/group.
 * Empty = the init's own user.
 */
export function userSpec(env: Env): { user: string; group: string | null } | null {
  const text = env.MAN8S_APPLICATION_USER;
  if (text === undefined || text === "") return null;
  const key = "MAN8S_APPLICATION_USER";
  if (text.length > LIMITS.userSpec) throw new SettingError(key, `${key}: longer than ${LIMITS.userSpec} characters`);
  const m = /^([^:\s\p{Cc}/]+)(?::([^:\s\p{Cc}/]+))?$/u.exec(text);
  if (!m) throw new SettingError(key, `${key}: '${clip(text)}' is not USER, UID, USER:GROUP or UID:GID`);
  for (const part of [m[1]!, m[2]]) {
    // 2^32-1 is (uid_t)-1, "no change" to setuid(2)
    if (part !== undefined && /^\d+$/.test(part) && Number(part) >= 0xffffffff)
      throw new SettingError(key, `${key}: id ${clip(part)} is out of range`);
  }
  return { user: m[1]!, group: m[2] ?? null };
}

export type NetMode = "dual" | "v4" | "v6" | "none";

/** MAN8S_NETWORK (dual, v4, v6, none; default dual), MAN8S_NETWORK_TIMEOUT (default 30 s), MAN8S_HOST_IFACE,
 *  MAN8S_NETWORK_FAST_START (yes/no, default yes). */
export function networkSettings(env: Env): { mode: NetMode; timeoutMs: number; fastStart: boolean; iface?: string } {
  const modeText = (env.MAN8S_NETWORK ?? "").trim() || "dual";
  if (!["dual", "v4", "v6", "none"].includes(modeText))
    throw new SettingError("MAN8S_NETWORK", `MAN8S_NETWORK: '${clip(modeText)}' is not one of dual, v4, v6, none`);
  const toText = (env.MAN8S_NETWORK_TIMEOUT ?? "").trim();
  let timeoutMs = 30_000;
  if (toText) {
    const m = /^(\d{1,12}(?:\.\d{1,9})?)(ms|s)?$/.exec(toText);
    if (!m || Number(m[1]) <= 0)
      throw new SettingError("MAN8S_NETWORK_TIMEOUT", `MAN8S_NETWORK_TIMEOUT: '${clip(toText)}' is not a positive number of seconds (e.g. 30, 2.5, 500ms)`);
    timeoutMs = m[2] === "ms" ? Number(m[1]) : Number(m[1]) * 1000;
  }
  const iface = env.MAN8S_HOST_IFACE?.trim() || undefined;
  if (iface !== undefined && !/^[^\s/:]{1,15}$/.test(iface))
    throw new SettingError("MAN8S_HOST_IFACE", `MAN8S_HOST_IFACE: '${clip(iface)}' is not a valid interface name`);
  // optimistic DAD + our own router solicitation (fast-net's phase; docs/network.md), default on
  const fastText = (env.MAN8S_NETWORK_FAST_START ?? "").trim().toLowerCase() || "yes";
  const fastStart = ["yes", "1", "true", "on"].includes(fastText);
  if (!fastStart && !["no", "0", "false", "off"].includes(fastText))
    throw new SettingError("MAN8S_NETWORK_FAST_START", `MAN8S_NETWORK_FAST_START: '${clip(fastText)}' is not yes or no`);
  return { mode: modeText as NetMode, timeoutMs, fastStart, ...(iface ? { iface } : {}) };
}

/** The network phase runs when asked for, or when the env file carries yggdrasil settings (mbctl's). */
export function wantsNetwork(env: Env): boolean {
  const mode = env.MAN8S_NETWORK?.trim();
  if (mode === "none") return false;
  return Boolean(mode || env.MAN8S_YGGDRASIL_ADDRESS || env.MAN8S_YGGDRASIL_PREFIX);
}

/** Any probe variable loads the probes, so that each one is checked at start (exit 65), even one left unused. */
export const PROBE_KEYS = ["MAN8S_WAIT_FOR", "MAN8S_WAIT_TIMEOUT", "MAN8S_WAIT_PROBE_TIMEOUT", "MAN8S_HEALTHCHECK", "MAN8S_READY", "MAN8S_READY_INTERVAL"] as const;
export function wantsProbes(env: Env): boolean {
  // MAN8S_READY=start|none (the agent's defaults for images without a check) need no probe engine
  const ready = env.MAN8S_READY?.trim() ?? "";
  if (ready !== "" && ready !== "start" && ready !== "none") return true;
  return PROBE_KEYS.some((k) => k !== "MAN8S_READY" && Boolean(env[k]));
}

/** A value for a message: bounded, and without what a terminal would interpret. */
export function clip(s: string, max = 80): string {
  const t = s.length > max ? `${s.slice(0, max)}…` : s;
  return t.replace(/[\p{Cc}\u2028\u2029]/gu, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
