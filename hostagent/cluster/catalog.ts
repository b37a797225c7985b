// The cluster catalog (docs/cluster.md): this agent publishes its machines to etcd under one lease, claims
// their names by transaction, and keeps a watched view of every host's machines for `machines list
// --cluster`, `agent watch --cluster` and the containers' name lookups.
//
// State machine (one field, one transition function):
//   connecting  never reached etcd yet (or the host name is held by another live agent)
//   publishing  lease alive, every local machine published, the view follows etcd's watch
//   stale       etcd was reached once and is not now: the agent keeps serving its host, the view is
//               kept but marked stale; on return the lease is refreshed (or a new one granted) and
//               every machine published again
import { log } from "../../common/log.ts";
import { sleepLong } from "../../common/timer.ts";
import { AgentError } from "../errors.ts";
import { CLUSTER_ERR, EtcdClient, type EtcdTls, type KeyValue, type WatchEvent } from "./etcd.ts";

export type ClusterState = "connecting" | "publishing" | "stale";

/** What one machine looks like to the other hosts (the value at PREFIX/machines/NAME, JSON). */
export interface MachineEntry {
  name: string;
  host: string;
  yggAddress: string | null;
  imageDigest: string | null;
  /** installing (claimed for a pull or install under way), stopped, running, ready */
  state: "installing" | "stopped" | "running" | "ready";
  /** the init's last phase */
  phase: string;
  ready: boolean;
  health: string | null;
  /** ms since the epoch of the last change of this entry */
  updatedAt: number;
}

export interface HostEntry {
  host: string;
  yggPrefix: string | null;
  version: string;
  startedAt: number;
}

export interface ClusterOptions {
  endpoints: string[];
  tls: EtcdTls;
  /** key prefix, e.g. /man8s/v1 */
  prefix: string;
  /** lease TTL in seconds */
  ttl: number;
  /** this host's name in the catalog */
  host: string;
  yggPrefix: string | null;
  version: string;
}

export type LocalEntry = Omit<MachineEntry, "host" | "updatedAt">;

export type ClusterEvent =
  | { type: "cluster"; kind: "put"; name: string; host: string; entry: MachineEntry }
  | { type: "cluster"; kind: "delete"; name: string; host: string | null }
  | { type: "cluster"; kind: "state"; state: ClusterState; error: string | null };

/** bounds on what other hosts may put in the catalog */
const MAX_VALUE = 4096;
const MAX_ENTRIES = 65_536;
const HOST_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const STATES = ["installing", "stopped", "running", "ready"] as const;
/** local changes are published at most this late without an event (READY=1 has none) */
const RESYNC_MS = 1000;
const BACKOFF_MIN_MS = 200;
const BACKOFF_MAX_MS = 5000;

export function checkHostName(v: string): string {
  if (!HOST_RE.test(v) || v.includes("..")) throw new AgentError("usage", `host name '${v.slice(0, 80)}' is not valid ([A-Za-z0-9][A-Za-z0-9_.-]{0,63})`);
  return v;
}

/** An entry read from etcd (another host's, so untrusted): null when it is not one. */
export function parseEntry(name: string, value: string): MachineEntry | null {
  if (value.length > MAX_VALUE || !NAME_RE.test(name)) return null;
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(value) as Record<string, unknown>;
  } catch {
    return null;
  }
  if (typeof v !== "object" || v === null) return null;
  const str = (x: unknown, max: number) => (typeof x === "string" && x.length <= max ? x : null);
  const host = str(v.host, 64);
  const state = (STATES as readonly string[]).includes(v.state as string) ? (v.state as MachineEntry["state"]) : null;
  if (!host || !HOST_RE.test(host) || !state) return null;
  return {
    name,
    host,
    yggAddress: str(v.yggAddress, 64),
    imageDigest: str(v.imageDigest, 128),
    state,
    phase: str(v.phase, 32) ?? "unknown",
    ready: v.ready === true,
    health: str(v.health, 64),
    updatedAt: typeof v.updatedAt === "number" && Number.isSafeInteger(v.updatedAt) ? v.updatedAt : 0,
  };
}

export class Cluster {
  private stateValue: ClusterState = "connecting";
  private error: string | null = null;
  private readonly etcd: EtcdClient;
  private lease: string | null = null;
  /** every host's machines as etcd has them (ours included), with the lease each is on */
  private readonly view = new Map<string, { entry: MachineEntry; lease: string }>();
  private readonly hosts = new Map<string, HostEntry>();
  private viewLive = false;
  /** reached etcd and published once: a later loss is "stale", not "connecting" */
  private everPublished = false;
  /** what was last put for each local name (JSON without updatedAt) */
  private readonly published = new Map<string, { json: string; updatedAt: number }>();
  /** names claimed for a pull or install under way: not released by a sync meanwhile */
  private readonly pinned = new Map<string, number>();
  /** local names another live host holds: logged once, not overwritten */
  private readonly conflicts = new Map<string, string>();
  private readonly watchers = new Set<(e: ClusterEvent) => void>();
  private readonly stop = new AbortController();
  private syncing: Promise<void> | null = null;
  private syncAgain = false;
  private kickTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    readonly opts: ClusterOptions,
    /** this host's machines, as `machines list` has them */
    private readonly local: () => LocalEntry[],
  ) {
    this.etcd = new EtcdClient(opts.endpoints, opts.tls);
  }

  get state(): ClusterState {
    return this.stateValue;
  }

  private key(kind: "machines" | "hosts", name: string): string {
    return `${this.opts.prefix}/${kind}/${name}`;
  }

  /** The one transition function. */
  private setState(next: ClusterState, error: string | null = null): void {
    const changed = next !== this.stateValue || error !== this.error;
    if (next !== this.stateValue) log(`cluster: ${this.stateValue} -> ${next}${error ? ` (${error})` : ""}`, next === "publishing" ? "info" : "warning");
    this.stateValue = next;
    this.error = error;
    if (changed) this.emit({ type: "cluster", kind: "state", state: next, error });
  }

  private emit(e: ClusterEvent): void {
    for (const w of this.watchers) {
      try {
        w(e);
      } catch {
        // one broken watcher must not stop the others
      }
    }
  }

  watch(fn: (e: ClusterEvent) => void): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }

  start(): void {
    void this.run();
    void this.follow();
  }

  /** Stop the loops; the lease is revoked (best effort) so this host's entries go at once. */
  async close(): Promise<void> {
    this.stop.abort();
    if (this.kickTimer) clearTimeout(this.kickTimer);
    const lease = this.lease;
    this.lease = null;
    if (lease) await this.etcd.revoke(lease).catch(() => undefined);
  }

  /** Connect, publish, keep the lease alive; on any failure: stale, back off, and again. */
  private async run(): Promise<void> {
    let backoff = BACKOFF_MIN_MS;
    const signal = this.stop.signal;
    while (!signal.aborted) {
      try {
        await this.connect();
        backoff = BACKOFF_MIN_MS;
        // steady: refresh the lease at a third of its TTL, publish local changes at least every RESYNC_MS
        let lastKeep = 0;
        while (!signal.aborted) {
          if (performance.now() - lastKeep >= (this.opts.ttl * 1000) / 3) {
            const ttl = await this.etcd.keepAlive(this.lease!);
            if (ttl <= 0) {
              this.lease = null;
              throw new Error("the lease expired: publishing again under a new one");
            }
            lastKeep = performance.now();
          }
          await this.sync();
          if (this.stateValue !== "publishing" && this.viewLive) this.setState("publishing");
          await sleepLong(Math.min(RESYNC_MS, (this.opts.ttl * 1000) / 3), signal);
        }
      } catch (e) {
        if (signal.aborted) return;
        const msg = (e as Error).message || String(e);
        this.setState(this.everPublished ? "stale" : "connecting", msg);
        this.etcd.rotate();
        await sleepLong(backoff, signal);
        backoff = Math.min(BACKOFF_MAX_MS, backoff * 2);
      }
    }
  }

  /** A lease (the old one if it is still alive), this host's record, every local machine. */
  private async connect(): Promise<void> {
    if (this.lease) {
      const ttl = await this.etcd.keepAlive(this.lease);
      if (ttl <= 0) this.lease = null;
    }
    if (!this.lease) {
      this.lease = await this.etcd.grant(this.opts.ttl);
      // everything this host had published went with the old lease
      this.published.clear();
    }
    const host: HostEntry = { host: this.opts.host, yggPrefix: this.opts.yggPrefix, version: this.opts.version, startedAt: Date.now() };
    const r = await this.etcd.claim(this.key("hosts", this.opts.host), JSON.stringify(host), this.lease);
    if (!r.ok) throw new AgentError(CLUSTER_ERR.NAME_TAKEN, `host name '${this.opts.host}' is held by another live agent (lease ${r.holder.lease}): use --host-name`);
    await this.sync(true);
    this.everPublished = true;
  }

  /** Publish what changed locally (all when `all`); release names no longer here. One sync at a time. */
  private sync(all = false): Promise<void> {
    if (all) this.published.clear();
    if (this.syncing) {
      this.syncAgain = true;
      return this.syncing;
    }
    this.syncing = (async () => {
      try {
        do {
          this.syncAgain = false;
          await this.syncOnce();
        } while (this.syncAgain);
      } finally {
        this.syncing = null;
      }
    })();
    return this.syncing;
  }

  private async syncOnce(): Promise<void> {
    const lease = this.lease;
    if (!lease) return;
    const here = new Set<string>();
    for (const m of this.local()) {
      here.add(m.name);
      const json = JSON.stringify({ ...m, host: this.opts.host });
      const prev = this.published.get(m.name);
      if (prev?.json === json) continue;
      const updatedAt = Date.now();
      const entry: MachineEntry = { ...m, host: this.opts.host, updatedAt };
      const r = await this.etcd.claim(this.key("machines", m.name), JSON.stringify(entry), lease);
      if (r.ok) {
        this.published.set(m.name, { json, updatedAt });
        this.conflicts.delete(m.name);
      } else {
        const holder = parseEntry(m.name, r.holder.value)?.host ?? `lease ${r.holder.lease}`;
        if (this.conflicts.get(m.name) !== holder) log(`cluster: machine ${m.name} is also on host ${holder}, which holds the name: not published`, "warning");
        this.conflicts.set(m.name, holder);
      }
    }
    for (const name of [...this.published.keys()]) {
      if (here.has(name) || this.pinned.has(name)) continue;
      await this.etcd.releaseIfMine(this.key("machines", name), lease);
      this.published.delete(name);
    }
  }

  /** Publish local changes soon (a report, a start or stop, READY=1). */
  kick(): void {
    if (this.kickTimer || !this.lease || this.stop.signal.aborted) return;
    this.kickTimer = setTimeout(() => {
      this.kickTimer = null;
      this.sync().catch(() => undefined); // the run loop notices a lost etcd and says so
    }, 20);
  }

  /**
   * Claim NAME for a pull or install of this host: refused while another live host holds it (naming it),
   * and while etcd cannot be asked (uniqueness cannot be checked). Returns the release of the pin.
   */
  async claim(name: string): Promise<() => void> {
    if (!this.lease || this.stateValue === "connecting") {
      throw new AgentError(CLUSTER_ERR.UNAVAILABLE, `the cluster catalog is ${this.stateValue}${this.error ? ` (${this.error})` : ""}: cannot check that '${name}' is free`);
    }
    const entry: MachineEntry = { name, host: this.opts.host, yggAddress: null, imageDigest: null, state: "installing", phase: "unknown", ready: false, health: null, updatedAt: Date.now() };
    const prev = this.published.get(name);
    this.pinned.set(name, (this.pinned.get(name) ?? 0) + 1);
    const unpin = () => {
      const n = (this.pinned.get(name) ?? 1) - 1;
      if (n <= 0) this.pinned.delete(name);
      else this.pinned.set(name, n);
      this.kick();
    };
    try {
      // an entry already published by this host stays as it is (a reinstall); otherwise "installing"
      const r = prev ? { ok: true as const } : await this.etcd.claim(this.key("machines", name), JSON.stringify(entry), this.lease);
      if (!r.ok) {
        const holder = parseEntry(name, r.holder.value)?.host;
        throw new AgentError(CLUSTER_ERR.NAME_TAKEN, `name '${name}' is held by host ${holder ?? `(lease ${r.holder.lease})`}`);
      }
      if (!prev) this.published.set(name, { json: "", updatedAt: entry.updatedAt });
      return unpin;
    } catch (e) {
      unpin();
      throw e;
    }
  }

  /** Follow etcd's view of the catalog: a range, then a watch from its revision; again on any end. */
  private async follow(): Promise<void> {
    const signal = this.stop.signal;
    let backoff = BACKOFF_MIN_MS;
    while (!signal.aborted) {
      try {
        const { kvs, revision } = await this.etcd.range(`${this.opts.prefix}/`, { prefix: true, limit: MAX_ENTRIES });
        const before = new Map(this.view);
        this.view.clear();
        this.hosts.clear();
        for (const kv of kvs) this.apply({ type: "PUT", kv }, before);
        for (const [name, old] of before) if (!this.view.has(name)) this.emit({ type: "cluster", kind: "delete", name, host: old.entry.host });
        this.viewLive = true;
        if (this.lease && this.stateValue !== "publishing") this.setState("publishing");
        backoff = BACKOFF_MIN_MS;
        await this.etcd.watch(`${this.opts.prefix}/`, revision + 1, (evs) => {
          for (const e of evs) this.apply(e);
        }, signal);
        if (signal.aborted) return;
        throw new Error("the watch ended");
      } catch (e) {
        if (signal.aborted) return;
        this.viewLive = false;
        // another member may still answer: try it at once before calling the view stale
        this.etcd.rotate();
        if (backoff > BACKOFF_MIN_MS && this.stateValue === "publishing") this.setState("stale", `watch: ${(e as Error).message}`);
        await sleepLong(backoff === BACKOFF_MIN_MS ? 0 : backoff, signal);
        backoff = Math.min(BACKOFF_MAX_MS, backoff * 2);
      }
    }
  }

  private apply(e: WatchEvent, before?: Map<string, { entry: MachineEntry; lease: string }>): void {
    const rest = e.kv.key.slice(this.opts.prefix.length + 1);
    const slash = rest.indexOf("/");
    const kind = rest.slice(0, slash);
    const name = rest.slice(slash + 1);
    if (kind === "hosts") {
      if (e.type === "DELETE") this.hosts.delete(name);
      else {
        const h = parseHost(e.kv.value);
        if (h && this.hosts.size < MAX_ENTRIES) this.hosts.set(name, h);
      }
      return;
    }
    if (kind !== "machines") return;
    if (e.type === "DELETE") {
      const old = this.view.get(name);
      if (this.view.delete(name)) this.emit({ type: "cluster", kind: "delete", name, host: old?.entry.host ?? null });
      return;
    }
    const entry = parseEntry(name, e.kv.value);
    if (!entry || (this.view.size >= MAX_ENTRIES && !this.view.has(name))) return;
    this.view.set(name, { entry, lease: e.kv.lease });
    const old = before?.get(name);
    if (!old || JSON.stringify(old.entry) !== JSON.stringify(entry)) this.emit({ type: "cluster", kind: "put", name, host: entry.host, entry });
  }

  /** The whole catalog: every host's machines (this host's as it has them now), and the state. */
  snapshot(): { state: ClusterState; stale: boolean; error: string | null; host: string; hosts: HostEntry[]; machines: MachineEntry[] } {
    const machines = new Map<string, MachineEntry>();
    for (const [name, v] of this.view) machines.set(name, v.entry);
    for (const m of this.local()) {
      if (this.conflicts.has(m.name)) continue;
      machines.set(m.name, { ...m, host: this.opts.host, updatedAt: this.published.get(m.name)?.updatedAt ?? Date.now() });
    }
    return {
      state: this.stateValue,
      stale: this.stateValue !== "publishing",
      error: this.error,
      host: this.opts.host,
      hosts: [...this.hosts.values()].sort((a, b) => (a.host < b.host ? -1 : 1)),
      machines: [...machines.values()].sort((a, b) => (a.host === b.host ? (a.name < b.name ? -1 : 1) : a.host < b.host ? -1 : 1)),
    };
  }

  /** One name as the cluster knows it: this host's machine first, then the view; `host` must match. */
  lookup(name: string, host?: string): { entry: MachineEntry | null; local: boolean; stale: boolean } {
    const stale = this.stateValue !== "publishing";
    if (host === undefined || host === this.opts.host) {
      const m = this.local().find((x) => x.name === name);
      if (m && !this.conflicts.has(name)) return { entry: { ...m, host: this.opts.host, updatedAt: this.published.get(name)?.updatedAt ?? 0 }, local: true, stale };
    }
    const v = this.view.get(name)?.entry ?? null;
    if (!v || (host !== undefined && v.host !== host)) return { entry: null, local: false, stale };
    return { entry: v, local: v.host === this.opts.host, stale };
  }
}

function parseHost(value: string): HostEntry | null {
  if (value.length > MAX_VALUE) return null;
  try {
    const v = JSON.parse(value) as Record<string, unknown>;
    if (typeof v.host !== "string" || !HOST_RE.test(v.host)) return null;
    return {
      host: v.host,
      yggPrefix: typeof v.yggPrefix === "string" && v.yggPrefix.length <= 64 ? v.yggPrefix : null,
      version: typeof v.version === "string" ? v.version.slice(0, 32) : "",
      startedAt: typeof v.startedAt === "number" ? v.startedAt : 0,
    };
  } catch {
    return null;
  }
}

export type { KeyValue };
