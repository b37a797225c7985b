// The one schema the init and the host agent share: the phase names, the init's status record, the report
// a container sends to the agent, the agent's view of a container, and the validator the agent applies to
// every report. The init imports only types from here (erased at build time) and at most the small phase
// lists, so its start-up path stays light; the validator runs in the agent only.
import { HEALTH_ACTIONS, type HealthAction } from "./health-on-failure.ts";

/** The init's phases, in the order it goes through them (`exec`: an image's own init took over). */
export const INIT_PHASES = [
  "signals", "env", "protected-dirs", "network", "dependencies", "app", "running", "stopping", "draining",
  "exited", "exec",
] as const;
export type Phase = (typeof INIT_PHASES)[number];

/** What a report may carry: the init's phases plus starting, waiting and failed for other reporters. */
export const REPORT_PHASES = ["starting", ...INIT_PHASES, "waiting", "failed"] as const;
export type ReportPhase = (typeof REPORT_PHASES)[number];
/** A report in one of these phases begins a new run: the previous run's fields are dropped. */
export const FIRST_PHASES: readonly ReportPhase[] = ["starting", "signals"];
/** The run is over: the record now carries the exit code and reason. */
export const FINAL_PHASES: readonly ReportPhase[] = ["exited", "failed"];
export const isFinal = (p: string): boolean => (FINAL_PHASES as readonly string[]).includes(p);

/** The init's status record (/run/man8s/status.json inside the container). */
export interface StatusRecord {
  version: string;
  pid: number;
  mode: "pid1" | "pid2" | "subreaper";
  phase: Phase;
  startedAt: string;
  /** duration of each start-up phase in ms; "runtime" is the runtime's time origin → the init's first statement */
  phases: Record<string, number>;
  /** startedAfterMs: the runtime's time origin → the app's spawn (exec is ~3 ms earlier) */
  /** argv: the first words (~8 KiB); argc: the number of words, present when argv is cut */
  app: { argv: string[]; argc?: number; pid: number; startedAt: string; group: boolean; startedAfterMs: number } | null;
  network: unknown;
  /** Docker's State.Health: status, failingStreak, log */
  health: unknown;
  /** when and how READY=1 was sent */
  ready: unknown;
  /**
   * The stop request (`signal` as received) and what the init did: `sent` the app's stop signal at `sentAt`
   * (null: no app running); `escalated` when the app was still running at the timeout and got SIGKILL,
   * with what the app did with the stop signal at that moment (`appSignalState`).
   */
  stop: {
    signal: string;
    requestedAt: string;
    sent: string | null;
    sentAt: string | null;
    timeoutSec: number;
    escalated: boolean;
    escalatedAt: string | null;
    appSignalState: "handled" | "ignored" | "blocked" | "default" | "unknown" | null;
  } | null;
  exit: ExitRecord | null;
}

/** How the init ended, as the status record keeps it. */
export interface ExitRecord {
  code: number;
  reason: string;
  app: { code: number | null; signal: string | null } | null;
  /** the init escalated to SIGKILL at the stop timeout and that SIGKILL ended the app */
  killedAfterTimeout: boolean;
  drained: number;
  /** of the drained processes, those still alive at the deadline and sent SIGKILL */
  drainKilled?: number;
  orphansReaped: number;
  /** the largest reaping pass: zombies and ms */
  largestReap?: { n: number; ms: number };
  at: string;
}

/** The exit as a report carries it (and the agent shows it). */
export interface ExitInfo {
  code: number;
  reason?: string;
  signal?: string;
}

/**
 * What MAN8S_HEALTH_ON_FAILURE did, as a report carries it (from the status record's `health.onFailure`):
 * the setting, how many times the app was restarted, the action last taken (null: none yet) and when.
 */
export interface HealthActionInfo {
  policy: HealthAction;
  restarts: number;
  last: Exclude<HealthAction, "none"> | null;
  at: string | null;
  /** restart: the backoff before the last restart */
  lastDelayMs?: number;
}

/** One report from a container's init to the agent: a full snapshot of what the init knows. */
export interface ReportRecord {
  phase: ReportPhase;
  initPid?: number;
  pid1?: boolean;
  appPid?: number;
  addresses?: Record<string, string | string[]>;
  health?: string;
  /** the init found the app ready in this run (MAN8S_READY: the status record's `ready`) */
  ready?: boolean;
  healthAction?: HealthActionInfo;
  exit?: ExitInfo;
  timings?: Record<string, number>;
  message?: string;
}

/** What the agent knows about one container: the latest report merged field by field, plus its own view. */
export interface ContainerStatus extends Omit<ReportRecord, "phase"> {
  name: string;
  installed: boolean;
  phase: ReportPhase | "unknown";
  /** ms since the epoch of the last report */
  updatedAt: number | null;
  /** host pid of the process that sent the last report (the init), from the socket's peer credentials */
  hostPid?: number;
  /** is that process still alive? (computed when status is read) */
  initAlive?: boolean;
  history: { phase: ReportPhase; at: number }[];
}

/**
 * Bounds of a report's fields. Every field is replaced whole by a merge, so a merged record is bounded by
 * their sum (about 12 KiB encoded), and `status` of 64 such records fits one 1 MiB frame.
 */
export const REPORT_LIMITS = {
  /** one report frame on a report socket */
  frameBytes: 64 * 1024,
  text: 1024,
  health: 64,
  signal: 32,
  key: 32,
  addressKeys: 16,
  addressValue: 64,
  addressList: 8,
  timingKeys: 32,
  history: 32,
  /** an ISO time (healthAction.at) */
  time: 40,
  /** healthAction.restarts and lastDelayMs: far beyond a container's life at the 30 s backoff cap */
  healthCount: 1_000_000_000,
} as const;

export class ReportError extends Error {}

const isMap = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof Date);
const isInt = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v);
const isPid = (v: unknown): v is number => isInt(v) && v > 0 && v <= 0x3fffffff;

/**
 * Validate one report (the args of a `report` request). Unknown fields are ignored; a field of the wrong
 * type or out of range is refused with a ReportError naming it; strings longer than their bound are cut.
 */
export function parseReport(a: Record<string, unknown>): ReportRecord {
  const phase = a.phase;
  if (typeof phase !== "string" || !(REPORT_PHASES as readonly string[]).includes(phase)) {
    throw new ReportError(`phase must be one of ${REPORT_PHASES.join(", ")}`);
  }
  const L = REPORT_LIMITS;
  const out: ReportRecord = { phase: phase as ReportPhase };
  const given = (k: string) => a[k] !== undefined && a[k] !== null;
  const str = (k: string, max: number): string | undefined => {
    if (!given(k)) return undefined;
    if (typeof a[k] !== "string") throw new ReportError(`${k} must be a string`);
    return (a[k] as string).slice(0, max);
  };
  for (const k of ["initPid", "appPid"] as const) {
    if (!given(k)) continue;
    if (!isPid(a[k])) throw new ReportError(`${k} must be a positive integer pid`);
    out[k] = a[k] as number;
  }
  for (const k of ["pid1", "ready"] as const) {
    if (!given(k)) continue;
    if (typeof a[k] !== "boolean") throw new ReportError(`${k} must be a boolean`);
    out[k] = a[k] as boolean;
  }
  const health = str("health", L.health);
  if (health !== undefined) out.health = health;
  const message = str("message", L.text);
  if (message !== undefined) out.message = message;
  if (given("addresses")) out.addresses = parseAddresses(a.addresses);
  if (given("timings")) out.timings = parseTimings(a.timings);
  if (given("exit")) out.exit = parseExit(a.exit);
  if (given("healthAction")) out.healthAction = parseHealthAction(a.healthAction);
  return out;
}

function parseHealthAction(v: unknown): HealthActionInfo {
  const L = REPORT_LIMITS;
  const count = (x: unknown): x is number => isInt(x) && x >= 0 && x <= L.healthCount;
  const isAction = (x: unknown): x is HealthAction => typeof x === "string" && (HEALTH_ACTIONS as readonly string[]).includes(x);
  if (
    !isMap(v) || !isAction(v.policy) || !count(v.restarts) ||
    !(v.last === null || (isAction(v.last) && v.last !== "none")) ||
    !(v.at === null || (typeof v.at === "string" && v.at.length <= L.time)) ||
    !(v.lastDelayMs === undefined || v.lastDelayMs === null || count(v.lastDelayMs))
  ) {
    throw new ReportError(
      `healthAction must be a map {policy: ${HEALTH_ACTIONS.join("|")}, restarts: integer 0-${L.healthCount}, last: restart|stop|kill|null, at: time of at most ${L.time} characters|null, lastDelayMs?: integer}`,
    );
  }
  const out: HealthActionInfo = { policy: v.policy, restarts: v.restarts, last: v.last as HealthActionInfo["last"], at: v.at as string | null };
  if (typeof v.lastDelayMs === "number") out.lastDelayMs = v.lastDelayMs;
  return out;
}

function parseAddresses(v: unknown): Record<string, string | string[]> {
  const L = REPORT_LIMITS;
  if (!isMap(v)) throw new ReportError("addresses must be a map of strings or string lists");
  const entries = Object.entries(v);
  if (entries.length > L.addressKeys) throw new ReportError(`addresses may have at most ${L.addressKeys} keys`);
  const out: Record<string, string | string[]> = {};
  for (const [k, x] of entries) {
    if (k.length === 0 || k.length > L.key) throw new ReportError(`addresses keys must be 1-${L.key} characters`);
    if (typeof x === "string" && x.length <= L.addressValue) out[k] = x;
    else if (Array.isArray(x) && x.length <= L.addressList && x.every((y) => typeof y === "string" && y.length <= L.addressValue)) out[k] = x as string[];
    else throw new ReportError(`addresses.${k.slice(0, L.key)} must be a string or a list of at most ${L.addressList} strings of at most ${L.addressValue} characters`);
  }
  return out;
}

function parseTimings(v: unknown): Record<string, number> {
  const L = REPORT_LIMITS;
  if (!isMap(v)) throw new ReportError("timings must be a map of numbers");
  const entries = Object.entries(v);
  if (entries.length > L.timingKeys) throw new ReportError(`timings may have at most ${L.timingKeys} keys`);
  const out: Record<string, number> = {};
  for (const [k, x] of entries) {
    if (k.length === 0 || k.length > L.key || typeof x !== "number" || !Number.isFinite(x)) {
      throw new ReportError(`timings must map names of 1-${L.key} characters to finite numbers`);
    }
    out[k] = x;
  }
  return out;
}

function parseExit(e: unknown): ExitInfo {
  const L = REPORT_LIMITS;
  if (!isMap(e) || !isInt(e.code) || e.code < -1 || e.code > 0xffff) {
    throw new ReportError("exit must be a map {code: integer, reason?: string, signal?: string}");
  }
  const exit: ExitInfo = { code: e.code };
  if (typeof e.reason === "string") exit.reason = e.reason.slice(0, L.text);
  if (typeof e.signal === "string") exit.signal = e.signal.slice(0, L.signal);
  return exit;
}

/**
 * Bring a container status read back from disk (an older agent, a damaged or hostile file) within the
 * bounds: its report fields go through the validator (a bad field is dropped, not the record); null when
 * the record is unusable as a whole.
 */
export function trimStatus(v: unknown, name: string): ContainerStatus | null {
  if (!isMap(v) || v.name !== name) return null;
  const phase = typeof v.phase === "string" && (REPORT_PHASES as readonly string[]).includes(v.phase) ? (v.phase as ReportPhase) : null;
  const s: ContainerStatus = {
    name,
    installed: false,
    phase: phase ?? "unknown",
    updatedAt: isInt(v.updatedAt) ? v.updatedAt : null,
    history: [],
  };
  if (phase) {
    for (const k of ["initPid", "pid1", "appPid", "addresses", "health", "ready", "healthAction", "exit", "message", "timings"] as const) {
      try {
        const one = parseReport({ phase, [k]: v[k] }) as unknown as Record<string, unknown>;
        if (one[k] !== undefined) (s as unknown as Record<string, unknown>)[k] = one[k];
      } catch {
        // this field is dropped; the others stay
      }
    }
  }
  if (isPid(v.hostPid)) s.hostPid = v.hostPid;
  if (Array.isArray(v.history)) {
    for (const h of v.history.slice(-REPORT_LIMITS.history)) {
      if (isMap(h) && typeof h.phase === "string" && (REPORT_PHASES as readonly string[]).includes(h.phase) && isInt(h.at)) {
        s.history.push({ phase: h.phase as ReportPhase, at: h.at });
      }
    }
  }
  return s;
}
