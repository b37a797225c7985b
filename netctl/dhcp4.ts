// DHCPv4 client that keeps its lease for the life of the process (RFC 2131 §4.4):
// INIT -> SELECTING (DISCOVER) -> REQUESTING -> BOUND -> RENEWING at T1 (unicast) -> REBINDING at T2
// (broadcast) -> expiry: remove address and routes, back to INIT. A NAK also goes back to INIT.
// It uses a plain UDP socket on port 68: broadcasts need a route for 255.255.255.255, which we add
// on the interface (notes/net-lab.md §3.5), so no AF_PACKET and no SO_BINDTODEVICE are needed.
//
// The server is untrusted (docs/dhcp.md): replies are validated before anything reaches the kernel or
// resolv.conf, a lease is applied all or nothing, every restart after a failure backs off, and every
// delay taken from a lease goes through common/timer.ts (Bun fires timers over 2^31-1 ms at once).
import { EEXIST } from "../common/libc-net.ts";
import { type LongTimer, setLongTimeout } from "../common/timer.ts";
import { addAddress, delAddress } from "./address.ts";
import { formatIPv4 } from "./addrmath.ts";
import * as P from "./dhcp4-packet.ts";
import { NetlinkError, type Rtnl } from "./netlink.ts";
import { addRoute, delRoute, RTPROT_BOOT, RTPROT_DHCP, RT_SCOPE_LINK } from "./route.ts";
import { printable, renderResolvConf, writeResolvConf } from "./resolvconf.ts";

export type DhcpState = "init" | "selecting" | "requesting" | "bound" | "renewing" | "rebinding" | "stopped";

export interface Lease extends P.LeaseInfo {
  serverId: Uint8Array;
  /** performance.now() when the REQUEST that got this ACK was sent: lifetimes count from there */
  obtainedAt: number;
  /** wall clock of the same moment, for status output */
  obtainedWall: number;
}

export type LeaseEvent = "bound" | "renewed" | "changed" | "expired" | "nak";

export interface Dhcp4Options {
  nl: Rtnl;
  link: { index: number; name: string; mac: Uint8Array };
  hostname?: string;
  /** where resolv.conf goes; undefined = do not write it */
  resolvConf?: string;
  log: (msg: string) => void;
  onLease?: (ev: LeaseEvent, lease: Lease | undefined) => void;
  /** give the address no lifetime: for a caller that will exec another program and cannot renew */
  keepAddress?: boolean;
  /** cap of the DISCOVER backoff in seconds (RFC 2131 says 64; we prefer to come back sooner) */
  maxBackoff?: number;
}

const BCAST = "255.255.255.255";
/** REQUEST retransmissions before going back to DISCOVER (issue 11: never stall on a silent server) */
const REQUEST_WAITS_MS = [1000, 1000, 2000];
/** cap of the delay before starting over after consecutive failures (NAK, unusable ACK, rollback) */
const MAX_RESTART_S = 60;
/** RFC 2131 §3.1.5: wait at least 10 s after a DECLINE */
const DECLINE_WAIT_MS = 10_000;
/** a hostile server must not flood the log: reasons from replies are rate-limited */
const LOG_BURST = 20;
const LOG_EVERY_MS = 5000;

const sameAddr = (a?: Uint8Array, b?: Uint8Array) => !!a && !!b && a.length === b.length && a.every((x, i) => x === b[i]);
const jitter = (ms: number, f = 0.2) => ms * (1 - f + 2 * f * Math.random());

export class Dhcp4Client {
  state: DhcpState = "init";
  lease: Lease | undefined;
  /** counters for the timeout message ("no DHCP offer after N DISCOVERs") */
  readonly stats = { discovers: 0, offers: 0, requests: 0, acks: 0, naks: 0, declines: 0, renews: 0, rebinds: 0, expiries: 0, rejected: 0 };
  /** the last reason a reply or lease was refused, for the timeout message */
  lastProblem: string | undefined;
  /** performance.now() of the first ACK received (for timings) */
  firstAckAt: number | undefined;
  private sock: import("bun").udp.Socket<"uint8array"> | undefined;
  private xid = 0;
  private timer: LongTimer | undefined;
  private leaseTimers: LongTimer[] = [];
  private attempt = 0;
  /** consecutive failed attempts to get a lease: the restart delay grows with it */
  private failures = 0;
  private startedAt = 0;
  private offer: P.DhcpMessage | undefined;
  private offerServer: Uint8Array | undefined;
  private requestSentAt = 0;
  private boundWaiters: ((l: Lease) => void)[] = [];
  private quiet = { tokens: LOG_BURST, at: 0, suppressed: 0 };

  constructor(private readonly o: Dhcp4Options) {}

  /**
   * A host route for the limited broadcast lets a plain UDP socket send before we have an address. The kernel
   * flushes every IPv4 route of a device when its last IPv4 address goes, so this is redone before each INIT.
   */
  private broadcastRoute(): void {
    try {
      addRoute(this.o.nl, { dst: new Uint8Array([255, 255, 255, 255]), dstLen: 32, oif: this.o.link.index, scope: RT_SCOPE_LINK, protocol: RTPROT_BOOT });
    } catch (e) {
      this.o.log(`dhcp4: ${(e as Error).message}`);
    }
  }

  async start(): Promise<void> {
    this.broadcastRoute();
    const sock = await Bun.udpSocket({
      hostname: "0.0.0.0",
      port: 68,
      binaryType: "uint8array",
      socket: { data: (_s, data) => this.receive(data) },
    });
    sock.setBroadcast(true);
    this.sock = sock;
    // the first DISCOVER goes out now, at carrier: no initial random delay (issue 11)
    this.enterInit(0);
  }

  /** Resolves with the lease once bound (immediately if bound already). */
  waitBound(): Promise<Lease> {
    if (this.lease && (this.state === "bound" || this.state === "renewing" || this.state === "rebinding")) return Promise.resolve(this.lease);
    return new Promise((res) => this.boundWaiters.push(res));
  }

  /** Stops timers and closes the socket; the address stays (its lifetime runs out by itself). */
  async stop(): Promise<void> {
    this.state = "stopped";
    this.clearTimers();
    this.sock?.close();
    this.sock = undefined;
  }

  private setTimer(fn: () => void, ms: number): void {
    this.timer?.clear();
    this.timer = setLongTimeout(fn, ms);
  }

  private clearTimers(): void {
    this.timer?.clear();
    this.timer = undefined;
    for (const t of this.leaseTimers) t.clear();
    this.leaseTimers = [];
  }

  private newXid(): void {
    this.xid = crypto.getRandomValues(new Uint32Array(1))[0]!;
  }

  private secs(): number {
    return Math.floor((performance.now() - this.startedAt) / 1000);
  }

  private send(type: number, dest: string, extra: Partial<P.EncodeSpec>): void {
    if (!this.sock) return;
    const pkt = P.encodeMessage({ type, xid: this.xid, mac: this.o.link.mac, secs: this.secs(), ...(this.o.hostname && type !== P.DHCPDECLINE ? { hostname: this.o.hostname } : {}), ...extra });
    try {
      this.sock.send(pkt, 67, dest);
    } catch (e) {
      this.o.log(`dhcp4: send ${P.MSG_NAMES[type]} to ${dest} failed: ${(e as Error).message}`);
    }
  }

  /** DISCOVER retransmission delay: 1, 2, 4, ... capped, with ±0.5 s of jitter so clients do not synchronise. */
  private backoff(): number {
    const cap = this.o.maxBackoff ?? 16;
    const base = Math.min(2 ** this.attempt, cap);
    this.attempt++;
    return Math.max(0.5, base + (Math.random() - 0.5)) * 1000;
  }

  private enterInit(delayMs: number): void {
    if (this.state === "stopped") return;
    this.clearTimers();
    this.state = "init";
    this.offer = undefined;
    this.offerServer = undefined;
    this.attempt = 0;
    const go = () => {
      this.startedAt = performance.now();
      this.broadcastRoute();
      this.newXid();
      this.state = "selecting";
      this.discover();
    };
    if (delayMs <= 0) go();
    else this.setTimer(go, delayMs);
  }

  /**
   * Starts over after a failed attempt. The first retry is immediate (a NAK or a lost REQUEST is normal);
   * repeated failures wait 1, 2, 4 ... up to MAX_RESTART_S, so a server that always fails is not stormed.
   */
  private restart(why: string, minMs = 0): void {
    this.failures++;
    const wait = Math.max(minMs, this.failures <= 1 ? 0 : jitter(Math.min(2 ** (this.failures - 2), MAX_RESTART_S) * 1000));
    this.o.log(`dhcp4: ${why}; starting over${wait ? ` in ${(wait / 1000).toFixed(1)} s` : ""}`);
    this.enterInit(wait);
  }

  private discover(): void {
    this.stats.discovers++;
    this.send(P.DHCPDISCOVER, BCAST, { broadcast: true });
    this.setTimer(() => this.discover(), this.backoff());
  }

  private request(tries: number): void {
    if (!this.offer || !this.offerServer) return;
    if (tries >= REQUEST_WAITS_MS.length) {
      this.restart(`no answer to ${tries} REQUESTs for ${formatIPv4(this.offer.yiaddr)}`);
      return;
    }
    this.stats.requests++;
    this.requestSentAt = performance.now();
    this.send(P.DHCPREQUEST, BCAST, { broadcast: true, requestedIp: this.offer.yiaddr, serverId: this.offerServer });
    this.setTimer(() => this.request(tries + 1), jitter(REQUEST_WAITS_MS[tries]!));
  }

  /** RENEWING (unicast to the server) or REBINDING (broadcast): REQUEST with ciaddr, no 50/54. */
  private reacquire(kind: "renewing" | "rebinding"): void {
    const l = this.lease;
    if (!l || this.state === "stopped") return;
    if (this.state !== kind) {
      this.state = kind;
      this.newXid();
      this.o.log(`dhcp4: ${kind === "renewing" ? "renewing (T1) with" : "rebinding (T2), broadcast; server was"} ${formatIPv4(l.serverId)}`);
    }
    if (kind === "renewing") this.stats.renews++;
    else this.stats.rebinds++;
    this.requestSentAt = performance.now();
    this.send(P.DHCPREQUEST, kind === "renewing" ? formatIPv4(l.serverId) : BCAST, { ciaddr: l.address, broadcast: false });
    // retransmit at half the time left to the next deadline (RFC 2131 §4.4.5), at least every 5 s
    const deadline = l.obtainedAt + (kind === "renewing" ? l.t2 : l.leaseTime) * 1000;
    const wait = Math.max((deadline - performance.now()) / 2, 5000);
    if (performance.now() + wait < deadline) this.setTimer(() => this.reacquire(kind), wait);
  }

  private reject(why: string): void {
    this.stats.rejected++;
    this.lastProblem = why;
    this.noisy(why);
  }

  /** Log lines caused by replies: a burst of LOG_BURST, then one per LOG_EVERY_MS; the rest are counted. */
  private noisy(msg: string): void {
    const q = this.quiet, now = performance.now();
    q.tokens = Math.min(LOG_BURST, q.tokens + (now - q.at) / LOG_EVERY_MS);
    q.at = now;
    if (q.tokens < 1) {
      q.suppressed++;
      return;
    }
    q.tokens--;
    this.o.log(`dhcp4: ${msg}${q.suppressed ? ` (${q.suppressed} more such messages suppressed)` : ""}`);
    q.suppressed = 0;
  }

  private receive(data: Uint8Array): void {
    if (this.state === "stopped") return;
    try {
      this.handle(data);
    } catch (e) {
      // a reply must never take the init down; this is a bug, and the fuzz test looks for this line
      this.o.log(`dhcp4: internal error handling a reply: ${(e as Error).stack ?? String(e)}`);
    }
  }

  private handle(data: Uint8Array): void {
    const m = P.decodeMessage(data);
    if (!m || m.op !== P.BOOTREPLY || m.xid !== this.xid || !sameAddr(m.chaddr.subarray(0, 6), this.o.link.mac)) return;
    const t = P.messageType(m);
    const sid = m.options.get(P.OPT.serverId);
    const sidOk = !!sid && sid.length === 4 && P.isUsableUnicast(sid);
    if (t === P.DHCPOFFER && this.state === "selecting") {
      this.stats.offers++;
      // renewals are unicast to this address: garbage here would send them nowhere
      if (!sidOk) return this.reject(`OFFER ${formatIPv4(m.yiaddr)} ignored: no usable server identifier (option 54 must be a 4-byte unicast address)`);
      if (!P.isUsableUnicast(m.yiaddr)) return this.reject(`OFFER ignored: offered address ${formatIPv4(m.yiaddr)} is not usable (0/8, loopback, multicast or broadcast)`);
      this.offer = m;
      this.offerServer = sid.slice();
      this.o.log(`dhcp4: OFFER ${formatIPv4(m.yiaddr)} from ${formatIPv4(sid)}`);
      this.state = "requesting";
      this.request(0);
    } else if (t === P.DHCPACK && (this.state === "requesting" || this.state === "renewing" || this.state === "rebinding")) {
      // in REQUESTING only the server we chose may answer (RFC 2131 §4.4.1)
      if (this.state === "requesting" && sid && !sameAddr(sid, this.offerServer)) return;
      this.stats.acks++;
      this.firstAckAt ??= performance.now();
      this.bind(m);
    } else if (t === P.DHCPNAK && (this.state === "requesting" || this.state === "renewing" || this.state === "rebinding")) {
      const server = this.state === "requesting" ? this.offerServer : this.lease?.serverId;
      if (this.state !== "rebinding" && sid && !sameAddr(sid, server)) return;
      this.stats.naks++;
      const why = m.options.get(P.OPT.message);
      this.lastProblem = "NAK";
      this.noisy(`NAK${why ? ` (${printable(String.fromCharCode(...why.subarray(0, 255)))})` : ""}: dropping the lease`);
      this.deconfigure();
      this.o.onLease?.("nak", undefined);
      this.restart("NAK");
    }
  }

  private bind(ack: P.DhcpMessage): void {
    const info = P.leaseFromAck(ack);
    const serverId = info.serverId ?? (this.state === "requesting" ? this.offerServer : this.lease?.serverId);
    const problem = P.leaseProblem({ ...info, ...(serverId ? { serverId } : {}) });
    if (problem || !serverId) {
      this.reject(`ACK refused: ${problem?.why ?? "no server identifier"}`);
      // renewing/rebinding: keep the lease we have until it runs out; retransmissions continue
      if (this.state !== "requesting") return;
      if (problem?.address) {
        // tell the server this address is unusable (RFC 2131 §4.4.1), then wait at least 10 s (§3.1.5)
        this.stats.declines++;
        this.send(P.DHCPDECLINE, BCAST, { requestedIp: ack.yiaddr, serverId: this.offerServer! });
        this.restart(`sent DECLINE for ${formatIPv4(ack.yiaddr)}`, DECLINE_WAIT_MS);
      } else this.restart("the ACK was refused");
      return;
    }
    for (const n of info.notes) this.noisy(n);
    const lease: Lease = { ...info, serverId, obtainedAt: this.requestSentAt, obtainedWall: Date.now() - (performance.now() - this.requestSentAt) };
    const old = this.lease;
    const wasBound = this.state !== "requesting";
    if (old && !sameAddr(old.address, lease.address)) {
      this.o.log(`dhcp4: address changed ${formatIPv4(old.address)} -> ${formatIPv4(lease.address)}`);
      this.deconfigure();
    }
    try {
      this.apply(lease, this.lease);
    } catch (e) {
      this.lastProblem = `applying the lease failed: ${(e as Error).message}`;
      this.o.log(`dhcp4: applying the lease failed: ${(e as Error).message}; rolled back`);
      if (this.lease) {
        this.deconfigure();
        this.o.onLease?.("expired", undefined);
      }
      this.restart("the lease could not be applied");
      return;
    }
    this.lease = lease;
    this.clearTimers();
    this.state = "bound";
    this.attempt = 0;
    this.failures = 0;
    this.lastProblem = undefined;
    const ev: LeaseEvent = !old ? "bound" : !sameAddr(old.address, lease.address) ? "changed" : wasBound ? "renewed" : "bound";
    const times = lease.infinite ? "lease infinite" : `lease ${lease.leaseTime}s (T1 ${lease.t1}s, T2 ${lease.t2}s)`;
    this.o.log(`dhcp4: ${ev} ${formatIPv4(lease.address)}/${lease.prefixlen} router ${lease.routers.map(formatIPv4).join(",") || "-"} dns ${lease.dns.map(formatIPv4).join(",") || "-"} ${times}`);
    if (!lease.infinite) {
      // RFC 2131 §3.3: an infinite lease is never renewed and never expires
      const at = (s: number) => Math.max(0, lease.obtainedAt + s * 1000 - performance.now());
      this.leaseTimers.push(
        setLongTimeout(() => this.reacquire("renewing"), at(lease.t1)),
        setLongTimeout(() => {
          this.timer?.clear();
          this.reacquire("rebinding");
        }, at(lease.t2)),
        setLongTimeout(() => this.expire(), at(lease.leaseTime)),
      );
    }
    for (const w of this.boundWaiters.splice(0)) w(lease);
    this.o.onLease?.(ev, lease);
  }

  private expire(): void {
    if (this.state === "stopped") return;
    this.stats.expiries++;
    this.o.log(`dhcp4: lease ${this.lease ? formatIPv4(this.lease.address) : ""} expired: removing address and routes, starting over`);
    this.deconfigure();
    this.o.onLease?.("expired", undefined);
    this.enterInit(0);
  }

  /**
   * Address (lifetime = what is left of the lease), a link route to the router when it is outside the
   * subnet (a /32 lease, a cloud gateway: as systemd-networkd does), the default route, resolv.conf.
   * All or nothing: on any failure what this call added is removed again and the error rethrown.
   */
  private apply(l: Lease, cur: Lease | undefined): void {
    const { nl, link } = this.o;
    const undo: (() => void)[] = [];
    try {
      const life = this.o.keepAddress || l.infinite ? {} : (() => {
        const left = Math.max(1, Math.min(0xfffffffe, Math.floor(l.leaseTime - (performance.now() - l.obtainedAt) / 1000)));
        return { valid: left, preferred: left };
      })();
      const isNew = !cur || !sameAddr(cur.address, l.address) || cur.prefixlen !== l.prefixlen;
      addAddress(nl, { index: link.index, bytes: l.address, prefixlen: l.prefixlen, ...life, replace: true, ...(l.broadcast ? { broadcast: l.broadcast } : {}) });
      if (isNew) undo.push(() => delAddress(nl, { index: link.index, bytes: l.address, prefixlen: l.prefixlen }));
      const gw = l.routers[0];
      if (cur?.routers[0] && !sameAddr(cur.routers[0], gw)) this.dropRoutes(cur);
      if (gw) {
        if (!inSubnet(gw, l.address, l.prefixlen)) {
          const host = { dst: gw, dstLen: 32, oif: link.index, prefsrc: l.address, scope: RT_SCOPE_LINK, protocol: RTPROT_DHCP };
          addRoute(nl, host);
          undo.push(() => delRoute(nl, host));
        }
        const def = { dst: new Uint8Array(4), dstLen: 0, gateway: gw, oif: link.index, prefsrc: l.address, protocol: RTPROT_DHCP };
        addRoute(nl, def);
        undo.push(() => delRoute(nl, def));
      }
    } catch (e) {
      for (const u of undo.reverse()) {
        try {
          u();
        } catch {
          // already gone (the kernel drops routes with their address)
        }
      }
      throw e;
    }
    if (this.o.resolvConf && (l.dns.length || l.domain)) {
      const text = renderResolvConf(l.dns, l.domain, l.search);
      const before = cur ? renderResolvConf(cur.dns, cur.domain, cur.search) : "";
      if (text !== before) {
        try {
          writeResolvConf(this.o.resolvConf, text);
        } catch (e) {
          this.o.log(`dhcp4: cannot write ${this.o.resolvConf}: ${(e as Error).message}`);
        }
      }
    }
  }

  /** The default route and the link route to the router of a lease. */
  private dropRoutes(l: Lease): void {
    const gw = l.routers[0];
    if (!gw) return;
    const tries = [
      { dst: new Uint8Array(4), dstLen: 0, gateway: gw, oif: this.o.link.index },
      ...(inSubnet(gw, l.address, l.prefixlen) ? [] : [{ dst: gw, dstLen: 32, oif: this.o.link.index }]),
    ];
    for (const r of tries) {
      try {
        delRoute(this.o.nl, r);
      } catch (e) {
        if (!(e instanceof NetlinkError)) throw e; // already gone with the address: fine
      }
    }
  }

  /** Removes what the lease configured; the kernel drops routes through the address with it. */
  private deconfigure(): void {
    const l = this.lease;
    this.lease = undefined;
    if (!l) return;
    this.dropRoutes(l);
    try {
      delAddress(this.o.nl, { index: this.o.link.index, bytes: l.address, prefixlen: l.prefixlen });
    } catch (e) {
      if (!(e instanceof NetlinkError) || e.errno === EEXIST) throw e;
      // EADDRNOTAVAIL: the kernel removed it already when its lifetime ran out
    }
  }
}

function inSubnet(a: Uint8Array, net: Uint8Array, len: number): boolean {
  for (let i = 0; i < 4; i++) {
    const bits = Math.max(0, Math.min(8, len - i * 8));
    const mask = bits === 0 ? 0 : (0xff << (8 - bits)) & 0xff;
    if ((a[i]! & mask) !== (net[i]! & mask)) return false;
  }
  return len < 32 || sameAddr(a, net);
}
