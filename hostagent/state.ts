// What the agent knows about each container: the latest report of its init, merged field by field, plus
// a bounded phase history. Watchers get every change as it happens. Persistence is coalesced: a report
// only marks its container dirty, and one flush per interval writes each dirty container once (state file
// for agent restarts, and the durable record in the container's config directory that outlives it).
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { log } from "../common/log.ts";
import { type ContainerStatus, FIRST_PHASES, type ReportPhase, type ReportRecord, ReportError, parseReport as parseShared, trimStatus } from "../common/report.ts";
import { AgentError, ERR } from "./errors.ts";
import { writeAtomic } from "./install.ts";
import { procStat } from "../common/procstat.ts";
import { readRegular } from "./regular-file.ts";

export { isFinal, type ContainerStatus, type ExitInfo, type ReportPhase as Phase } from "../common/report.ts";

export interface StateEvent {
  name: string;
  phase: ContainerStatus["phase"];
  at: number;
  status: ContainerStatus;
}

const HISTORY = 32;
/** a saved record larger than this is not read back; below it, an older agent's oversized record is trimmed */
const MAX_SAVED = 32 * 1024 * 1024;
/** how long a report may wait before its container's files are written (coalescing window) */
export const FLUSH_MS = 200;

/** The shared validator (common/report.ts), its refusals as protocol errors. */
export function parseReport(a: Record<string, unknown>): ReportRecord {
  try {
    return parseShared(a);
  } catch (e) {
    if (e instanceof ReportError) throw new AgentError(ERR.BAD_ARGS, e.message);
    throw e;
  }
}

type Peer = { pid: number; start: string | null };

export class StateStore {
  private readonly byName = new Map<string, ContainerStatus>();
  private readonly watchers = new Set<(e: StateEvent) => void>();
  private readonly peers = new Map<string, Peer>();
  private readonly dirty = new Set<string>();
  private flushTimer: ReturnType<typeof setTimeout> | null = null;

  /**
   * With a directory, each container's last status is kept in DIR/NAME.json and read back at start, so an
   * agent restarted under a running container still knows it; the saved peer (host pid + start time) tells
   * whether that init is still the one running. `durablePath(name)` names the durable record of an installed
   * container (null: none); it is written beside the state file.
   */
  constructor(
    private readonly dir: string | null = null,
    private readonly durablePath: (name: string) => string | null = () => null,
  ) {
    if (!dir) return;
    let names: string[] = [];
    try {
      names = readdirSync(dir).filter((n) => n.endsWith(".json"));
    } catch {
      return;
    }
    for (const n of names) {
      const name = n.slice(0, -5);
      try {
        const saved = JSON.parse(readRegular(join(dir, n), MAX_SAVED)) as { status?: unknown; peer?: unknown };
        const s = trimStatus(saved.status, name);
        if (!s) continue;
        this.byName.set(name, s);
        const p = saved.peer as Peer | null;
        if (p && Number.isSafeInteger(p.pid) && p.pid > 0 && (typeof p.start === "string" || p.start === null)) {
          this.peers.set(name, { pid: p.pid, start: p.start === null ? null : p.start.slice(0, 32) });
        }
      } catch {
        // a damaged file is skipped; the next report rewrites it
      }
    }
  }

  /** An installed container the state directory does not know: take its durable record, if any. */
  loadDurable(name: string): void {
    if (this.byName.has(name)) return;
    const path = this.durablePath(name);
    if (!path) return;
    try {
      const s = trimStatus(JSON.parse(readRegular(path, MAX_SAVED)), name);
      if (s) this.byName.set(name, s);
    } catch {
      // none yet, or damaged: the next report rewrites it
    }
  }

  private markDirty(name: string): void {
    this.dirty.add(name);
    // a fixed internal interval (not from outside), so a plain timer
    this.flushTimer ??= setTimeout(() => {
      this.flushTimer = null;
      this.flush();
    }, FLUSH_MS);
  }

  /** Write every dirty container's files now (also called at shutdown). */
  flush(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    for (const name of [...this.dirty]) {
      this.dirty.delete(name);
      const s = this.byName.get(name);
      if (s) this.save(s);
    }
  }

  private save(s: ContainerStatus): void {
    const { initAlive: _alive, installed: _inst, ...record } = s;
    if (this.dir) {
      try {
        mkdirSync(this.dir, { recursive: true, mode: 0o700 });
        writeAtomic(join(this.dir, `${s.name}.json`), JSON.stringify({ status: record, peer: this.peers.get(s.name) ?? null }), 0o600);
      } catch (e) {
        log(`cannot save the state of ${s.name}: ${(e as Error).message}`);
      }
    }
    const durable = s.installed ? this.durablePath(s.name) : null;
    if (durable) {
      try {
        writeAtomic(durable, `${JSON.stringify(record, null, 2)}\n`, 0o644);
      } catch (e) {
        log(`cannot write the status record of ${s.name}: ${(e as Error).message}`);
      }
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

  /** A removed machine: its state and saved state file go (its durable record went with its config). */
  forget(name: string): void {
    this.byName.delete(name);
    this.peers.delete(name);
    this.dirty.delete(name);
    if (this.dir) rmSync(join(this.dir, `${name}.json`), { force: true });
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
    s.initAlive = peer.start !== null && procStat(peer.pid)?.startTime === peer.start;
  }

  /**
   * Merge a validated report. A new run (a first phase, or a report from another init process than the
   * last one) drops the previous run's fields. Every field is replaced whole, so the record stays within
   * the validator's bounds.
   */
  report(name: string, r: ReportRecord, peer: Peer | null = null, now = Date.now()): ContainerStatus {
    const s = this.entry(name);
    const last = this.peers.get(name);
    const otherInit = peer !== null && last !== undefined && (last.pid !== peer.pid || last.start !== peer.start);
    if ((FIRST_PHASES as readonly string[]).includes(r.phase) || otherInit) {
      for (const k of ["initPid", "pid1", "appPid", "addresses", "health", "ready", "exit", "message", "timings", "hostPid"] as const) delete s[k];
      this.peers.delete(name);
    }
    Object.assign(s, r);
    if (peer && peer.pid > 0) {
      s.hostPid = peer.pid;
      this.peers.set(name, peer);
    }
    this.refreshAlive(s);
    s.updatedAt = now;
    s.history.push({ phase: r.phase as ReportPhase, at: now });
    if (s.history.length > HISTORY) s.history.splice(0, s.history.length - HISTORY);
    this.markDirty(name);
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
