// A small etcd v3 client over etcd's own JSON gateway (/v3/kv/range, /v3/kv/txn, /v3/lease/*, /v3/watch on
// the client URL, etcd ≥ 3.4): plain fetch, no gRPC in the binary. Keys and values are base64 on the wire,
// 64-bit numbers are decimal strings. Every call has a deadline and a bounded answer; a call that cannot
// reach one member tries the next, so a lost member (quorum kept) costs one failed connect at most.
import { AgentError } from "../errors.ts";

export const CLUSTER_ERR = {
  /** no etcd member answered (or every one refused): the cluster view is stale */
  UNAVAILABLE: "E_CLUSTER_UNAVAILABLE",
  /** the name is held by another live host */
  NAME_TAKEN: "E_NAME_TAKEN",
} as const;

export interface EtcdTls {
  cert?: string;
  key?: string;
  ca?: string;
}

export interface KeyValue {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  lease: string;
}

export interface WatchEvent {
  type: "PUT" | "DELETE";
  kv: KeyValue;
}

/** one answer of a unary call (a range of the whole catalog stays far below) */
const MAX_ANSWER = 16 * 1024 * 1024;
/** one line of the watch stream (one watch response: a batch of events) */
const MAX_WATCH_LINE = 16 * 1024 * 1024;
export const CALL_TIMEOUT_MS = 2000;

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");
const unb64 = (s: unknown) => (typeof s === "string" ? Buffer.from(s, "base64").toString("utf8") : "");
/** the end of the range of every key that starts with `prefix` (etcd's "prefix" convention) */
export function prefixEnd(prefix: string): string {
  const b = Buffer.from(prefix, "utf8");
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const out = Buffer.from(b.subarray(0, i + 1));
      out[i]!++;
      return out.toString("base64");
    }
  }
  return Buffer.from([0]).toString("base64");
}

function toKv(v: unknown): KeyValue {
  const o = (v ?? {}) as Record<string, unknown>;
  return {
    key: unb64(o.key),
    value: unb64(o.value),
    createRevision: Number(o.create_revision ?? 0),
    modRevision: Number(o.mod_revision ?? 0),
    lease: typeof o.lease === "string" ? o.lease : "0",
  };
}

export class EtcdClient {
  private current = 0;
  private readonly tls: Record<string, string> | undefined;

  constructor(
    readonly endpoints: string[],
    tls: EtcdTls = {},
    readonly timeoutMs = CALL_TIMEOUT_MS,
  ) {
    if (endpoints.length === 0) throw new AgentError("usage", "--etcd needs at least one URL");
    const t: Record<string, string> = {};
    if (tls.cert) t.cert = tls.cert;
    if (tls.key) t.key = tls.key;
    if (tls.ca) t.ca = tls.ca;
    this.tls = Object.keys(t).length > 0 ? t : undefined;
  }

  private init(body: unknown, signal: AbortSignal): RequestInit {
    const init: RequestInit & { tls?: unknown } = { method: "POST", body: JSON.stringify(body), signal, headers: { "content-type": "application/json" } };
    if (this.tls) init.tls = this.tls;
    return init;
  }

  /** One unary call, member after member from the last one that answered. */
  async call(path: string, body: unknown): Promise<Record<string, unknown>> {
    let last = "";
    for (let n = 0; n < this.endpoints.length; n++) {
      const i = (this.current + n) % this.endpoints.length;
      const url = this.endpoints[i]!;
      try {
        const r = await fetch(`${url}${path}`, this.init(body, AbortSignal.timeout(this.timeoutMs)));
        const text = await boundedText(r, MAX_ANSWER);
        let v: Record<string, unknown>;
        try {
          v = JSON.parse(text) as Record<string, unknown>;
        } catch {
          throw new Error(`answer is not JSON (HTTP ${r.status})`);
        }
        if (!r.ok || typeof v.error === "string" || (typeof v.code === "number" && v.code !== 0)) {
          // a member without a leader (lost quorum on its side) says so: another member may have one
          last = `${url}: ${String(v.error ?? v.message ?? `HTTP ${r.status}`).slice(0, 200)}`;
          continue;
        }
        this.current = i;
        return v;
      } catch (e) {
        last = `${url}: ${((e as Error).message || String(e)).slice(0, 200)}`;
      }
    }
    throw new AgentError(CLUSTER_ERR.UNAVAILABLE, `no etcd member answered (${last})`);
  }

  async range(key: string, opts: { prefix?: boolean; limit?: number } = {}): Promise<{ kvs: KeyValue[]; revision: number; more: boolean }> {
    const body: Record<string, unknown> = { key: b64(key) };
    if (opts.prefix) body.range_end = prefixEnd(key);
    if (opts.limit) body.limit = String(opts.limit);
    const v = await this.call("/v3/kv/range", body);
    const kvs = Array.isArray(v.kvs) ? v.kvs.map(toKv) : [];
    const header = (v.header ?? {}) as Record<string, unknown>;
    return { kvs, revision: Number(header.revision ?? 0), more: v.more === true };
  }

  async grant(ttl: number): Promise<string> {
    const v = await this.call("/v3/lease/grant", { TTL: String(ttl), ID: "0" });
    if (typeof v.ID !== "string") throw new AgentError(CLUSTER_ERR.UNAVAILABLE, "lease grant: no lease ID in the answer");
    return v.ID;
  }

  /** The lease's remaining TTL after the refresh; 0 when it has expired (its keys are gone). */
  async keepAlive(id: string): Promise<number> {
    const v = await this.call("/v3/lease/keepalive", { ID: id });
    const res = (v.result ?? {}) as Record<string, unknown>;
    return Number(res.TTL ?? 0);
  }

  async revoke(id: string): Promise<void> {
    await this.call("/v3/lease/revoke", { ID: id });
  }

  /**
   * Put `value` at `key` on `lease` if the key is free (never created, or deleted/expired) or already on
   * this lease; otherwise nothing is written and the holder's key-value comes back. One transaction: two
   * hosts claiming one name cannot both succeed.
   */
  async claim(key: string, value: string, lease: string): Promise<{ ok: true } | { ok: false; holder: KeyValue }> {
    const put = { request_put: { key: b64(key), value: b64(value), lease } };
    const free = await this.call("/v3/kv/txn", {
      compare: [{ key: b64(key), target: "CREATE", result: "EQUAL", create_revision: "0" }],
      success: [put],
      failure: [{ request_range: { key: b64(key) } }],
    });
    if (free.succeeded === true) return { ok: true };
    const held = firstKv(free);
    if (!held) return this.claim(key, value, lease); // deleted in between: try again
    if (held.lease === lease) {
      const mine = await this.call("/v3/kv/txn", {
        compare: [{ key: b64(key), target: "LEASE", result: "EQUAL", lease }],
        success: [put],
        failure: [{ request_range: { key: b64(key) } }],
      });
      if (mine.succeeded === true) return { ok: true };
      const now = firstKv(mine);
      if (!now) return this.claim(key, value, lease);
      return { ok: false, holder: now };
    }
    return { ok: false, holder: held };
  }

  /** Delete `key` only while it is on `lease` (a name this host holds). */
  async releaseIfMine(key: string, lease: string): Promise<boolean> {
    const v = await this.call("/v3/kv/txn", {
      compare: [{ key: b64(key), target: "LEASE", result: "EQUAL", lease }],
      success: [{ request_delete_range: { key: b64(key) } }],
      failure: [],
    });
    return v.succeeded === true;
  }

  /**
   * Watch every key under `prefix` from `fromRevision` on one member. Resolves when the stream ends (member
   * lost, compaction, abort); `onEvents` gets each batch in order.
   */
  async watch(prefix: string, fromRevision: number, onEvents: (events: WatchEvent[], revision: number) => void, signal: AbortSignal): Promise<void> {
    const url = this.endpoints[this.current]!;
    const body = { create_request: { key: b64(prefix), range_end: prefixEnd(prefix), start_revision: String(fromRevision) } };
    // the deadline covers the answer's headers only: the stream itself lasts until it ends or `signal`
    const connect = new AbortController();
    const timer = setTimeout(() => connect.abort(new Error("watch: no answer")), this.timeoutMs);
    let r: Response;
    try {
      r = await fetch(`${url}/v3/watch`, this.init(body, AbortSignal.any([signal, connect.signal])));
    } finally {
      clearTimeout(timer);
    }
    if (!r.ok || !r.body) throw new Error(`watch: HTTP ${r.status}`);
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += dec.decode(value, { stream: true });
        if (buf.length > MAX_WATCH_LINE) throw new Error("watch: an answer larger than the bound");
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line === "") continue;
          const v = JSON.parse(line) as { result?: Record<string, unknown>; error?: unknown };
          if (v.error) throw new Error(`watch: ${JSON.stringify(v.error).slice(0, 200)}`);
          const res = v.result ?? {};
          if (res.canceled === true || res.compact_revision) throw new Error("watch cancelled by etcd (compacted)");
          const rev = Number(((res.header ?? {}) as Record<string, unknown>).revision ?? 0);
          const evs = Array.isArray(res.events)
            ? res.events.map((e: Record<string, unknown>): WatchEvent => ({ type: e.type === "DELETE" ? "DELETE" : "PUT", kv: toKv(e.kv) }))
            : [];
          onEvents(evs, rev);
        }
      }
    } finally {
      reader.cancel().catch(() => undefined);
    }
  }

  /** Make the next calls (and the next watch) start at another member. */
  rotate(): void {
    this.current = (this.current + 1) % this.endpoints.length;
  }
}

function firstKv(txn: Record<string, unknown>): KeyValue | null {
  const resp = Array.isArray(txn.responses) ? (txn.responses[0] as Record<string, unknown>) : undefined;
  const range = resp?.response_range as { kvs?: unknown[] } | undefined;
  const kv = range?.kvs?.[0];
  return kv ? toKv(kv) : null;
}

async function boundedText(r: Response, max: number): Promise<string> {
  const len = Number(r.headers.get("content-length") ?? 0);
  if (len > max) throw new Error(`answer of ${len} bytes exceeds ${max}`);
  if (!r.body) return "";
  const reader = r.body.getReader();
  const parts: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    n += value.length;
    if (n > max) {
      reader.cancel().catch(() => undefined);
      throw new Error(`answer exceeds ${max} bytes`);
    }
    parts.push(value);
  }
  return Buffer.concat(parts).toString("utf8");
}
