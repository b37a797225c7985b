// The DHCPv4 protocol state machine (RFC 2131 §4.4), pure: one transition function from (context, input)
// to outputs, no sockets, no timers, no kernel; the clock is injected. As systemd keeps sd-dhcp-client.c
// apart from networkd-dhcp4.c, netctl/dhcp4.ts runs it (socket, timers) and netctl/dhcp4-apply.ts puts a
// lease on the kernel and resolv.conf. So every rule about untrusted replies, backoff, lease times and
// their timers is here and unit-tested without root (test/netctl/dhcp4-machine.test.ts). docs/dhcp.md
// describes the behaviour.
//
//   init -> selecting (DISCOVER) -> requesting (REQUEST) -> [apply] -> bound -> renewing (T1, unicast)
//   -> rebinding (T2, broadcast) -> expiry -> init. NAK, refused ACK, failed apply: init after a backoff.
//   An infinite lease is bound for good: no T1, T2 or expiry (RFC 2131 §3.3). The state changes only in
//   setState, and only along NEXT.
import { formatIPv4 } from "../common/net/addrmath.ts";
import * as P from "./dhcp4-packet.ts";
import { printable } from "./resolvconf.ts";

export const DHCP_STATES = ["init", "selecting", "requesting", "bound", "renewing", "rebinding", "stopped"] as const;
export type DhcpState = (typeof DHCP_STATES)[number];

/** The transitions there are (besides staying put, and stop from anywhere). */
export const NEXT: Readonly<Record<DhcpState, readonly DhcpState[]>> = {
  init: ["selecting"],
  selecting: ["requesting"],
  /** bound: ACK applied; init: no answer to the REQUESTs, NAK, refused ACK or failed apply */
  requesting: ["bound", "init"],
  /** renewing: T1; rebinding: T2 (T1 was missed); init: expiry */
  bound: ["renewing", "rebinding", "init"],
  renewing: ["bound", "rebinding", "init"],
  rebinding: ["bound", "init"],
  stopped: [],
};

export interface Lease extends P.LeaseInfo {
  serverId: Uint8Array;
  /** performance.now() when the REQUEST that got this ACK was sent: lifetimes count from there */
  obtainedAt: number;
  /** wall clock of the same moment, for status output */
  obtainedWall: number;
}

export type LeaseEvent = "bound" | "renewed" | "changed" | "expired" | "nak";

/** REQUEST retransmissions before going back to DISCOVER (issue 11: never stall on a silent server) */
export const REQUEST_WAITS_MS = [1000, 1000, 2000];
/** cap of the delay before starting over after consecutive failures (NAK, refused ACK, failed apply) */
export const MAX_RESTART_S = 60;
/** RFC 2131 §3.1.5: wait at least 10 s after a DECLINE */
export const DECLINE_WAIT_MS = 10_000;

export type Input =
  /** carrier is there: the first DISCOVER goes out at once */
  | { type: "start" }
  /** the one retransmission/restart timer fired */
  | { type: "timer" }
  | { type: "t1" }
  | { type: "t2" }
  | { type: "expire" }
  | { type: "reply"; m: P.DhcpMessage }
  /** the result of an `apply` output: undefined = applied, else the kernel's complaint */
  | { type: "applied"; error?: string }
  | { type: "stop" };

/** When T1, T2 and the expiry fire, in ms from now; Infinity for an infinite lease (it never does). */
export interface LeaseTimes {
  t1: number;
  t2: number;
  expire: number;
}

export type Output =
  /** a new transaction starts: the runner restores the broadcast route (the kernel drops it with the last address) */
  | { do: "newTransaction" }
  | { do: "send"; msg: number; dest: "broadcast" | Uint8Array; spec: Partial<P.EncodeSpec> }
  /** (re)arm the retransmission/restart timer; replaces the pending one */
  | { do: "timer"; ms: number }
  /** arm T1, T2 and the expiry (each replaces its pending one); null clears them */
  | { do: "leaseTimers"; at: LeaseTimes | null }
  /**
   * put the lease on the interface, all or nothing; answer with an `applied` input. lifetime: seconds left of
   * the lease, for the address (the kernel removes it when they run out), or "infinite"
   */
  | { do: "apply"; lease: Lease; cur: Lease | undefined; lifetime: number | "infinite" }
  | { do: "deconfigure"; lease: Lease }
  /** noisy: caused by a reply, so rate-limited by the runner */
  | { do: "log"; msg: string; noisy?: boolean }
  | { do: "event"; ev: LeaseEvent; lease: Lease | undefined };

export interface Ctx {
  state: DhcpState;
  xid: number;
  /** the OFFER we are requesting */
  offer?: { yiaddr: Uint8Array; server: Uint8Array };
  /** the lease on the interface */
  lease?: Lease;
  /** a lease being applied (between `apply` and `applied`) */
  pending?: { lease: Lease; event: LeaseEvent };
  /** DISCOVER backoff exponent */
  attempt: number;
  /** REQUESTs sent for the current offer */
  tries: number;
  /** consecutive failed attempts: the restart delay grows with it, a bind resets it */
  failures: number;
  requestSentAt: number;
  /** now() when the current transaction's first DISCOVER went out: the `secs` field counts from it */
  txStart: number;
  /** the last reason a reply or lease was refused, for the exit-69 message */
  lastProblem?: string;
  readonly stats: { discovers: number; offers: number; requests: number; acks: number; naks: number; declines: number; renews: number; rebinds: number; expiries: number; rejected: number };
  /** DISCOVER backoff cap in seconds */
  readonly maxBackoff: number;
  /** random numbers in [0, 1): Math.random, or a seeded generator in tests */
  readonly rand: () => number;
  readonly now: () => number;
  readonly wallNow: () => number;
}

export function newCtx(o: { maxBackoff?: number; rand?: () => number; now?: () => number; wallNow?: () => number } = {}): Ctx {
  return {
    state: "init",
    xid: 0,
    attempt: 0,
    tries: 0,
    failures: 0,
    requestSentAt: 0,
    txStart: 0,
    stats: { discovers: 0, offers: 0, requests: 0, acks: 0, naks: 0, declines: 0, renews: 0, rebinds: 0, expiries: 0, rejected: 0 },
    maxBackoff: o.maxBackoff ?? 16,
    rand: o.rand ?? Math.random,
    now: o.now ?? (() => performance.now()),
    wallNow: o.wallNow ?? (() => Date.now()),
  };
}

const sameAddr = (a?: Uint8Array, b?: Uint8Array) => !!a && !!b && a.length === b.length && a.every((x, i) => x === b[i]);
const jitter = (c: Ctx, ms: number, f = 0.2) => ms * (1 - f + 2 * f * c.rand());
const haveLease = (s: DhcpState) => s === "bound" || s === "renewing" || s === "rebinding";

/** The one place the state changes (systemd's client_set_state). */
function setState(c: Ctx, s: DhcpState): void {
  if (s === c.state) return;
  if (s !== "stopped" && !NEXT[c.state].includes(s)) throw new Error(`dhcp4: no transition ${c.state} -> ${s}`);
  c.state = s;
}

/** T1, T2 and the expiry of a lease, from the moment its REQUEST went out; an infinite lease has none. */
export function leaseTimes(l: Lease, now: number): LeaseTimes {
  if (l.infinite) return { t1: Infinity, t2: Infinity, expire: Infinity };
  const at = (s: number) => Math.max(0, l.obtainedAt + s * 1000 - now);
  return { t1: at(l.t1), t2: at(l.t2), expire: at(l.leaseTime) };
}

/** What is left of a lease in whole seconds (at least 1; the kernel's largest finite lifetime at most). */
export function lifetimeLeft(l: Lease, now: number): number | "infinite" {
  if (l.infinite) return "infinite";
  return Math.max(1, Math.min(0xfffffffe, Math.floor(l.leaseTime - (now - l.obtainedAt) / 1000)));
}

/** The transition function: updates `c` in place and returns what the runner must do, in order. */
export function step(c: Ctx, input: Input): Output[] {
  const out: Output[] = [];
  if (c.state === "stopped") return out;
  // RFC 2131 §3.3: an infinite lease is never renewed and never expires, whatever timer fires
  if ((input.type === "t1" || input.type === "t2" || input.type === "expire") && c.lease?.infinite) return out;
  switch (input.type) {
    case "stop":
      setState(c, "stopped");
      return [{ do: "leaseTimers", at: null }, { do: "timer", ms: Infinity }];
    case "start":
      if (c.state === "init") enterInit(c, out, 0); // once: a client that runs already goes on
      return out;
    case "timer":
      if (c.state === "init") selecting(c, out);
      else if (c.state === "selecting") discover(c, out);
      else if (c.state === "requesting" && !c.pending) request(c, out);
      else if (c.state === "renewing" || c.state === "rebinding") reacquire(c, out, c.state);
      return out;
    case "t1":
      if (c.state === "bound") reacquire(c, out, "renewing");
      return out;
    case "t2":
      if (c.state === "bound" || c.state === "renewing") reacquire(c, out, "rebinding");
      return out;
    case "expire":
      if (!c.lease || !haveLease(c.state)) return out;
      c.stats.expiries++;
      out.push({ do: "log", msg: `lease ${formatIPv4(c.lease.address)} expired: removing address and routes, starting over` });
      dropLease(c, out, "expired");
      enterInit(c, out, 0);
      return out;
    case "reply":
      reply(c, out, input.m);
      return out;
    case "applied":
      applied(c, out, input.error);
      return out;
  }
}

/** RFC 2131's `secs`: seconds since the current transaction's first DISCOVER */
const secs = (c: Ctx) => Math.floor((c.now() - c.txStart) / 1000);

function newXid(c: Ctx): void {
  c.xid = Math.floor(c.rand() * 2 ** 32) >>> 0;
}

function enterInit(c: Ctx, out: Output[], delayMs: number): void {
  setState(c, "init");
  c.offer = undefined;
  c.pending = undefined;
  c.attempt = 0;
  out.push({ do: "leaseTimers", at: null });
  if (delayMs <= 0) selecting(c, out);
  else out.push({ do: "timer", ms: delayMs });
}

function selecting(c: Ctx, out: Output[]): void {
  // the kernel flushed the broadcast route with the last IPv4 address: restore it first
  out.push({ do: "newTransaction" });
  newXid(c);
  c.txStart = c.now();
  setState(c, "selecting");
  discover(c, out);
}

/**
 * Starts over after a failed attempt. The first retry is immediate (a NAK or a lost REQUEST is normal);
 * repeated failures wait 1, 2, 4 ... up to MAX_RESTART_S, so a server that always fails is not stormed.
 */
function restart(c: Ctx, out: Output[], why: string, minMs = 0): void {
  c.failures++;
  const wait = Math.max(minMs, c.failures <= 1 ? 0 : jitter(c, Math.min(2 ** (c.failures - 2), MAX_RESTART_S) * 1000));
  out.push({ do: "log", msg: `${why}; starting over${wait ? ` in ${(wait / 1000).toFixed(1)} s` : ""}` });
  enterInit(c, out, wait);
}

/** DISCOVER, retransmitted after 1, 2, 4, ... capped, with ±0.5 s of jitter so clients do not synchronise. */
function discover(c: Ctx, out: Output[]): void {
  c.stats.discovers++;
  out.push({ do: "send", msg: P.DHCPDISCOVER, dest: "broadcast", spec: { broadcast: true, secs: secs(c) } });
  const base = Math.min(2 ** c.attempt, c.maxBackoff);
  c.attempt++;
  out.push({ do: "timer", ms: Math.max(0.5, base + (c.rand() - 0.5)) * 1000 });
}

function request(c: Ctx, out: Output[]): void {
  if (!c.offer) return;
  if (c.tries >= REQUEST_WAITS_MS.length) {
    restart(c, out, `no answer to ${c.tries} REQUESTs for ${formatIPv4(c.offer.yiaddr)}`);
    return;
  }
  c.stats.requests++;
  c.requestSentAt = c.now();
  out.push({ do: "send", msg: P.DHCPREQUEST, dest: "broadcast", spec: { broadcast: true, requestedIp: c.offer.yiaddr, serverId: c.offer.server, secs: secs(c) } });
  out.push({ do: "timer", ms: jitter(c, REQUEST_WAITS_MS[c.tries]!) });
  c.tries++;
}

/** RENEWING (unicast to the server) or REBINDING (broadcast): REQUEST with ciaddr, no 50/54. */
function reacquire(c: Ctx, out: Output[], kind: "renewing" | "rebinding"): void {
  const l = c.lease;
  if (!l) return;
  if (c.state !== kind) {
    setState(c, kind);
    newXid(c);
    out.push({ do: "log", msg: `${kind === "renewing" ? "renewing (T1) with" : "rebinding (T2), broadcast; server was"} ${formatIPv4(l.serverId)}` });
  }
  if (kind === "renewing") c.stats.renews++;
  else c.stats.rebinds++;
  c.requestSentAt = c.now();
  out.push({ do: "send", msg: P.DHCPREQUEST, dest: kind === "renewing" ? l.serverId : "broadcast", spec: { ciaddr: l.address, broadcast: false, secs: secs(c) } });
  // retransmit at half the time left to the next deadline (RFC 2131 §4.4.5), at least every 5 s
  const deadline = l.obtainedAt + (kind === "renewing" ? l.t2 : l.leaseTime) * 1000;
  const wait = Math.max((deadline - c.now()) / 2, 5000);
  // past the deadline the next input is T2 or the expiry: no retransmission is left pending
  out.push({ do: "timer", ms: c.now() + wait < deadline ? wait : Infinity });
}

function reject(c: Ctx, out: Output[], why: string): void {
  c.stats.rejected++;
  c.lastProblem = why;
  out.push({ do: "log", msg: why, noisy: true });
}

function reply(c: Ctx, out: Output[], m: P.DhcpMessage): void {
  if (m.op !== P.BOOTREPLY || m.xid !== c.xid || c.pending) return;
  const t = P.messageType(m);
  const sid = m.options.get(P.OPT.serverId);
  const sidOk = !!sid && sid.length === 4 && P.isUsableUnicast(sid);
  const asking = c.state === "requesting" || c.state === "renewing" || c.state === "rebinding";
  if (t === P.DHCPOFFER && c.state === "selecting") {
    c.stats.offers++;
    // renewals are unicast to this address: garbage here would send them nowhere
    if (!sidOk) return reject(c, out, `OFFER ${formatIPv4(m.yiaddr)} ignored: no usable server identifier (option 54 must be a 4-byte unicast address)`);
    if (!P.isUsableUnicast(m.yiaddr)) return reject(c, out, `OFFER ignored: offered address ${formatIPv4(m.yiaddr)} is not usable (0/8, loopback, multicast or broadcast)`);
    c.offer = { yiaddr: m.yiaddr.slice(), server: sid.slice() };
    out.push({ do: "log", msg: `OFFER ${formatIPv4(m.yiaddr)} from ${formatIPv4(sid)}` });
    setState(c, "requesting");
    c.tries = 0;
    request(c, out);
  } else if (t === P.DHCPACK && asking) {
    // in REQUESTING only the server we chose may answer (RFC 2131 §4.4.1)
    if (c.state === "requesting" && sid && !sameAddr(sid, c.offer?.server)) return;
    c.stats.acks++;
    ack(c, out, m);
  } else if (t === P.DHCPNAK && asking) {
    const server = c.state === "requesting" ? c.offer?.server : c.lease?.serverId;
    if (c.state !== "rebinding" && sid && !sameAddr(sid, server)) return;
    c.stats.naks++;
    c.lastProblem = "NAK";
    const why = m.options.get(P.OPT.message);
    out.push({ do: "log", msg: `NAK${why ? ` (${printable(String.fromCharCode(...why.subarray(0, 255)))})` : ""}: dropping the lease`, noisy: true });
    if (c.lease) dropLease(c, out, "nak");
    else out.push({ do: "event", ev: "nak", lease: undefined });
    restart(c, out, "NAK");
  }
}

function ack(c: Ctx, out: Output[], m: P.DhcpMessage): void {
  const info = P.leaseFromAck(m);
  const serverId = info.serverId ?? (c.state === "requesting" ? c.offer?.server : c.lease?.serverId);
  const problem = P.leaseProblem({ ...info, ...(serverId ? { serverId } : {}) });
  if (problem || !serverId) {
    reject(c, out, `ACK refused: ${problem?.why ?? "no server identifier"}`);
    // renewing/rebinding: keep the lease we have until it runs out; retransmissions continue
    if (c.state !== "requesting") return;
    if (problem?.address) {
      // tell the server this address is unusable (RFC 2131 §4.4.1), then wait at least 10 s (§3.1.5)
      c.stats.declines++;
      out.push({ do: "send", msg: P.DHCPDECLINE, dest: "broadcast", spec: { requestedIp: m.yiaddr, serverId: c.offer!.server, secs: secs(c) } });
      restart(c, out, `sent DECLINE for ${formatIPv4(m.yiaddr)}`, DECLINE_WAIT_MS);
    } else restart(c, out, "the ACK was refused");
    return;
  }
  for (const n of info.notes) out.push({ do: "log", msg: n, noisy: true });
  const lease: Lease = { ...info, serverId, obtainedAt: c.requestSentAt, obtainedWall: c.wallNow() - (c.now() - c.requestSentAt) };
  const old = c.lease;
  let event: LeaseEvent = c.state === "requesting" ? "bound" : "renewed";
  if (old && !sameAddr(old.address, lease.address)) {
    out.push({ do: "log", msg: `address changed ${formatIPv4(old.address)} -> ${formatIPv4(lease.address)}` });
    out.push({ do: "deconfigure", lease: old });
    c.lease = undefined;
    event = "changed";
  }
  c.pending = { lease, event };
  out.push({ do: "apply", lease, cur: c.lease, lifetime: lifetimeLeft(lease, c.now()) });
}

function applied(c: Ctx, out: Output[], error: string | undefined): void {
  const p = c.pending;
  if (!p) return;
  c.pending = undefined;
  if (error !== undefined) {
    c.lastProblem = `applying the lease failed: ${error}`;
    out.push({ do: "log", msg: `applying the lease failed: ${error}; rolled back` });
    if (c.lease) dropLease(c, out, "expired");
    // a changed address: the old lease was removed before the new one was tried; say it is gone
    else if (p.event === "changed") out.push({ do: "event", ev: "expired", lease: undefined });
    restart(c, out, "the lease could not be applied");
    return;
  }
  const lease = p.lease;
  c.lease = lease;
  setState(c, "bound");
  c.attempt = 0;
  c.failures = 0;
  c.lastProblem = undefined;
  const times = lease.infinite ? "lease infinite" : `lease ${lease.leaseTime}s (T1 ${lease.t1}s, T2 ${lease.t2}s)`;
  out.push({ do: "log", msg: `${p.event} ${formatIPv4(lease.address)}/${lease.prefixlen} router ${lease.routers.map(formatIPv4).join(",") || "-"} dns ${lease.dns.map(formatIPv4).join(",") || "-"} ${times}` });
  // stop retransmitting; RFC 2131 §3.3: an infinite lease is never renewed and never expires
  out.push({ do: "timer", ms: Infinity }, { do: "leaseTimers", at: leaseTimes(lease, c.now()) }, { do: "event", ev: p.event, lease });
}

function dropLease(c: Ctx, out: Output[], ev: LeaseEvent): void {
  const l = c.lease;
  c.lease = undefined;
  if (l) out.push({ do: "deconfigure", lease: l });
  out.push({ do: "event", ev, lease: undefined });
}
