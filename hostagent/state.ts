// What the agent knows about each container: the latest report of its init, merged field by field, plus
// a bounded phase history. Watchers get every change as it happens; the last status survives restarts.
import { isPlainObject } from "./protocol.ts";
import { AgentError, ERR } from "./errors.ts";
import { mkdirSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { log } from "../common/log.ts";
import { writeAtomic } from "./install.ts";
import { procStart } from "./proc.ts";

// the init's own phase names (init/status.ts), plus starting, waiting and failed for other reporters
export const PHASES = [
  "starting", "signals", "env", "protected-dirs", "network", "dependencies", "waiting", "app",
  "running", "stopping", "draining", "exited", "failed",
] as const;
const FIRST_PHASES = new Set<string>(["starting", "signals"]);
const FINAL_PHASES = new Set<string>(["exited", "failed"]);
export const isFinal = (p: string) => FINAL_PHASES.has(p);
export type Phase = (typeof PHASES)[number];

export interface ExitInfo {
  code: number;
  reason?: string;
  signal?: string;
}

export interface ContainerStatus {
  name: string;
  installed: boolean;
  phase: Phase | "unknown";
  /** ms since the epoch of the last report */
  updatedAt: number | null;
  initPid?: number;
  pid1?: boolean;
  appPid?: number;
  addresses?: Record<string, string | string[]>;
  health?: string;
  exit?: ExitInfo;
  message?: string;
  timings?: Record<string, number>;
  /** host pid of the process that sent the last report (the init), from the socket's peer credentials */
  hostPid?: number;
  /** is that process still alive? (computed when status is read) */
  initAlive?: boolean;
  history: { phase: Phase; at: number }[];
}

export interface StateEvent {
  name: string;
  phase: ContainerStatus["phase"];
  at: number;
  status: ContainerStatus;
}

const HISTORY = 32;

/** Validate a report's args: the init's record. Unknown fields are ignored; wrong types are refused. */
export function parseReport(a: Record<string, unknown>): Partial<ContainerStatus> & { phase: Phase } {
  const phase = a.phase;
  if (typeof phase !== "string" || !(PHASES as readonly string[]).includes(phase)) {
    throw new AgentError(ERR.BAD_ARGS, `phase must be one of ${PHASES.join(", ")}`);
  }
  const out: Partial<ContainerStatus> & { phase: Phase } = { phase: phase as Phase };
  const int = (k: string) => {
    const v = a[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !Number.isInteger(v)) throw new AgentError(ERR.BAD_ARGS, `${k} must be an integer`);
    return v;
  };
  const str = (k: string, max = 4096) => {
    const v = a[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string") throw new AgentError(ERR.BAD_ARGS, `${k} must be a string`);
    return v.slice(0, max);
  };
  out.initPid = int("initPid");
  out.appPid = int("appPid");
  if (a.pid1 !== undefined && a.pid1 !== null) {
    if (typeof a.pid1 !== "boolean") throw new AgentError(ERR.BAD_ARGS, "pid1 must be a boolean");
    out.pid1 = a.pid1;
  }
  out.health = str("health", 64);
  out.message = str("message");
  if (a.addresses !== undefined && a.addresses !== null) {
    if (!isPlainObject(a.addresses)) throw new AgentError(ERR.BAD_ARGS, "addresses must be a map of strings or string lists");
    const addrs: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(a.addresses)) {
      if (typeof v === "string") addrs[k] = v;
      else if (Array.isArray(v) && v.every((x) => typeof x === "string")) addrs[k] = v as string[];
      else throw new AgentError(ERR.BAD_ARGS, `addresses.${k} must be a string or a list of strings`);
    }
    out.addresses = addrs;
  }
  if (a.timings !== undefined && a.timings !== null) {
    if (!isPlainObject(a.timings) || !Object.values(a.timings).every((v) => typeof v === "number")) {
      throw new AgentError(ERR.BAD_ARGS, "timings must be a map of numbers");
    }
    out.timings = a.timings as Record<string, number>;
  }
  if (a.exit !== undefined && a.exit !== null) {
    const e = a.exit;
    if (!isPlainObject(e) || typeof e.code !== "number" || !Number.isInteger(e.code)) {
      throw new AgentError(ERR.BAD_ARGS, "exit must be a map {code: integer, reason?: string, signal?: string}");
    }
    const exit: ExitInfo = { code: e.code };
    if (typeof e.reason === "string") exit.reason = e.reason.slice(0, 1024);
    if (typeof e.signal === "string") exit.signal = e.signal.slice(0, 32);
    out.exit = exit;
  }
  for (const k of Object.keys(out) as (keyof typeof out)[]) if (out[k] === undefined) delete out[k];
  return out;
}

type Peer = { pid: number; start: string | null };

export class StateStore {
  private readonly byName = new Map<string, ContainerStatus>();
  private readonly watchers = new Set<(e: StateEvent) => void>();
  private readonly peers = new Map<string, Peer>();

  /**
   * With a directory, each container's last status is kept in DIR/NAME.json (written atomically on every
   * report) and read back at start, so an agent restarted under a running container still knows it; the
   * saved peer (host pid + start time) tells whether that init is still the one running.
   */
  constructor(private readonly dir: string | null = null) {
    if (!dir) return;
    let names: string[] = [];
    try {
      names = readdirSync(dir).filter((n) => n.endsWith(".json"));
    } catch {
      return;
    }
    for (const n of names) {
      try {
        const saved = JSON.parse(readFileSync(join(dir, n), "utf8")) as { status: ContainerStatus; peer: Peer | null };
        const name = n.slice(0, -5);
        if (saved.status?.name !== name || !Array.isArray(saved.status.history)) continue;
        saved.status.installed = false; // the server marks installed containers again
        this.byName.set(name, saved.status);
        if (saved.peer) this.peers.set(name, saved.peer);
      } catch {
        // a damaged file is skipped; the next report rewrites it
      }
    }
  }

  private save(s: ContainerStatus): void {
    if (!this.dir) return;
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      writeAtomic(join(this.dir, `${s.name}.json`), JSON.stringify({ status: s, peer: this.peers.get(s.name) ?? null }), 0o600);
    } catch (e) {
      log(`cannot save the state of ${s.name}: ${(e as Error).message}`);
    }
  }

  private entry(name: string): ContainerStatus {
    let s = this.byName.get(name);
    if (!s) {
      s = { name, installed: false, phase: "unknown", updatedAt: null, history: [] };
      this.byName.set(name, s);
    }
    return s;
  }

  markInstalled(name: string): void {
    this.entry(name).installed = true;
  }

  get(name: string): ContainerStatus | undefined {
    const s = this.byName.get(name);
    if (s) this.refreshAlive(s);
    return s;
  }

  all(): ContainerStatus[] {
    const list = [...this.byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const s of list) this.refreshAlive(s);
    return list;
  }

  /** A container whose init vanished without an exit report shows initAlive: false. */
  private refreshAlive(s: ContainerStatus): void {
    const peer = this.peers.get(s.name);
    if (!peer) {
      delete s.initAlive;
      return;
    }
    s.initAlive = peer.start !== null && procStart(peer.pid) === peer.start;
  }

  /**
   * Merge a report. A new run (a first phase, or a report from another init process than the last one)
   * drops the previous run's fields.
   */
  report(name: string, r: Partial<ContainerStatus> & { phase: Phase }, peer: Peer | null = null, now = Date.now()): ContainerStatus {
    const s = this.entry(name);
    const last = this.peers.get(name);
    const otherInit = peer !== null && last !== undefined && (last.pid !== peer.pid || last.start !== peer.start);
    if (FIRST_PHASES.has(r.phase) || otherInit) {
      for (const k of ["initPid", "pid1", "appPid", "addresses", "health", "exit", "message", "timings", "hostPid"] as const) delete s[k];
      this.peers.delete(name);
    }
    Object.assign(s, r);
    if (peer && peer.pid > 0) {
      s.hostPid = peer.pid;
      this.peers.set(name, peer);
    }
    this.refreshAlive(s);
    s.updatedAt = now;
    s.history.push({ phase: r.phase, at: now });
    if (s.history.length > HISTORY) s.history.splice(0, s.history.length - HISTORY);
    this.save(s);
    const ev: StateEvent = { name, phase: s.phase, at: now, status: structuredClone(s) };
    for (const w of this.watchers) {
      try {
        w(ev);
      } catch {
        // a broken watcher must not stop the others
      }
    }
    return s;
  }

  watch(fn: (e: StateEvent) => void): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }
}
