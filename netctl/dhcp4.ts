// DHCPv4 client that keeps its lease for the life of the process (RFC 2131 §4.4):
// INIT -> SELECTING (DISCOVER) -> REQUESTING -> BOUND -> RENEWING at T1 (unicast) -> REBINDING at T2
// (broadcast) -> expiry: remove address and routes, back to INIT. A NAK also goes back to INIT.
// It uses a plain UDP socket on port 68: broadcasts need a route for 255.255.255.255, which we add
// on the interface (notes/net-lab.md §3.5), so no AF_PACKET and no SO_BINDTODEVICE are needed.
import { EEXIST } from "../common/libc-net.ts";
import { addAddress, delAddress } from "./address.ts";
import { formatIPv4 } from "./addrmath.ts";
import * as P from "./dhcp4-packet.ts";
import { NetlinkError, type Rtnl } from "./netlink.ts";
import { addRoute, delRoute, RTPROT_BOOT, RTPROT_DHCP, RT_SCOPE_LINK } from "./route.ts";
import { renderResolvConf, writeResolvConf } from "./resolvconf.ts";

export type DhcpState = "init" | "selecting" | "requesting" | "bound" | "renewing" | "rebinding" | "stopped";

export interface Lease extends P.LeaseInfo {
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
const sameAddr = (a?: Uint8Array, b?: Uint8Array) => !!a && !!b && a.length === b.length && a.every((x, i) => x === b[i]);

export class Dhcp4Client {
  state: DhcpState = "init";
  lease: Lease | undefined;
  /** counters for the timeout message ("no DHCP offer after N DISCOVERs") */
  readonly stats = { discovers: 0, offers: 0, requests: 0, acks: 0, naks: 0, renews: 0, rebinds: 0, expiries: 0 };
  /** performance.now() of the first ACK received (for timings) */
  firstAckAt: number | undefined;
  private sock: import("bun").udp.Socket<"uint8array"> | undefined;
  private xid = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private leaseTimers: ReturnType<typeof setTimeout>[] = [];
  private attempt = 0;
  private startedAt = 0;
  private offer: P.DhcpMessage | undefined;
  private requestSentAt = 0;
  private boundWaiters: ((l: Lease) => void)[] = [];

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

  private clearTimers(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const t of this.leaseTimers) clearTimeout(t);
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
    const pkt = P.encodeMessage({ type, xid: this.xid, mac: this.o.link.mac, secs: this.secs(), ...(this.o.hostname ? { hostname: this.o.hostname } : {}), ...extra });
    try {
      this.sock.send(pkt, 67, dest);
    } catch (e) {
      this.o.log(`dhcp4: send ${P.MSG_NAMES[type]} to ${dest} failed: ${(e as Error).message}`);
    }
  }

  /** Retransmission delay: 1, 2, 4, ... capped, with ±0.5 s of jitter so clients do not synchronise. */
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
    this.attempt = 0;
    this.timer = setTimeout(() => {
      this.startedAt = performance.now();
      this.broadcastRoute();
      this.newXid();
      this.state = "selecting";
      this.discover();
    }, delayMs);
  }

  private discover(): void {
    this.stats.discovers++;
    this.send(P.DHCPDISCOVER, BCAST, { broadcast: true });
    this.timer = setTimeout(() => this.discover(), this.backoff());
  }

  private request(tries: number): void {
    if (!this.offer) return;
    if (tries >= 4) {
      this.o.log("dhcp4: no ACK to REQUEST, starting over");
      this.enterInit(0);
      return;
    }
    this.stats.requests++;
    this.requestSentAt = performance.now();
    this.send(P.DHCPREQUEST, BCAST, {
      broadcast: true,
      requestedIp: this.offer.yiaddr,
      serverId: this.offer.options.get(P.OPT.serverId)!,
    });
    this.timer = setTimeout(() => this.request(tries + 1), this.backoff());
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
    if (performance.now() + wait < deadline) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = setTimeout(() => this.reacquire(kind), wait);
    }
  }

  private receive(data: Uint8Array): void {
    if (this.state === "stopped") return;
    const m = P.decodeMessage(data);
    if (!m || m.op !== P.BOOTREPLY || m.xid !== this.xid || !sameAddr(m.chaddr.subarray(0, 6), this.o.link.mac)) return;
    const t = P.messageType(m);
    if (t === P.DHCPOFFER && this.state === "selecting") {
      this.stats.offers++;
      if (!m.options.get(P.OPT.serverId)) return; // cannot REQUEST without a server id
      this.offer = m;
      this.o.log(`dhcp4: OFFER ${formatIPv4(m.yiaddr)} from ${formatIPv4(m.options.get(P.OPT.serverId)!)}`);
      if (this.timer) clearTimeout(this.timer);
      this.state = "requesting";
      this.attempt = 0;
      this.request(0);
    } else if (t === P.DHCPACK && (this.state === "requesting" || this.state === "renewing" || this.state === "rebinding")) {
      this.stats.acks++;
      this.firstAckAt ??= performance.now();
      this.bind(m);
    } else if (t === P.DHCPNAK && (this.state === "requesting" || this.state === "renewing" || this.state === "rebinding")) {
      this.stats.naks++;
      const why = m.options.get(P.OPT.message);
      this.o.log(`dhcp4: NAK${why ? ` (${new TextDecoder().decode(why)})` : ""}: dropping the lease and starting over`);
      this.deconfigure();
      this.o.onLease?.("nak", undefined);
      this.enterInit(500);
    }
  }

  private bind(ack: P.DhcpMessage): void {
    const info = P.leaseFromAck(ack, this.offer?.options.get(P.OPT.serverId));
    const lease: Lease = { ...info, obtainedAt: this.requestSentAt, obtainedWall: Date.now() - (performance.now() - this.requestSentAt) };
    const old = this.lease;
    const wasBound = this.state !== "requesting";
    if (old && !sameAddr(old.address, lease.address)) {
      this.o.log(`dhcp4: address changed ${formatIPv4(old.address)} -> ${formatIPv4(lease.address)}`);
      this.deconfigure();
    }
    try {
      this.apply(lease, old);
    } catch (e) {
      this.o.log(`dhcp4: applying the lease failed: ${(e as Error).message}; starting over`);
      this.deconfigure();
      this.enterInit(2000);
      return;
    }
    this.lease = lease;
    this.clearTimers();
    this.state = "bound";
    this.attempt = 0;
    const ev: LeaseEvent = !old ? "bound" : !sameAddr(old.address, lease.address) ? "changed" : wasBound ? "renewed" : "bound";
    this.o.log(
      `dhcp4: ${ev} ${formatIPv4(lease.address)}/${lease.prefixlen} router ${lease.routers.map(formatIPv4).join(",") || "-"} dns ${lease.dns.map(formatIPv4).join(",") || "-"} lease ${lease.leaseTime}s (T1 ${lease.t1}s, T2 ${lease.t2}s)`,
    );
    const at = (s: number) => Math.max(0, lease.obtainedAt + s * 1000 - performance.now());
    this.leaseTimers.push(
      setTimeout(() => this.reacquire("renewing"), at(lease.t1)),
      setTimeout(() => {
        if (this.timer) clearTimeout(this.timer);
        this.reacquire("rebinding");
      }, at(lease.t2)),
      setTimeout(() => this.expire(), at(lease.leaseTime)),
    );
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

  /** Address with lifetimes = what is left of the lease, default route, resolv.conf. */
  private apply(l: Lease, old: Lease | undefined): void {
    const { nl, link } = this.o;
    const left = Math.max(1, Math.floor(l.leaseTime - (performance.now() - l.obtainedAt) / 1000));
    const life = this.o.keepAddress ? {} : { valid: left, preferred: left };
    addAddress(nl, { index: link.index, bytes: l.address, prefixlen: l.prefixlen, ...life, replace: true, ...(l.broadcast ? { broadcast: l.broadcast } : {}) });
    const gw = l.routers[0];
    if (gw) {
      addRoute(nl, { dst: new Uint8Array(4), dstLen: 0, gateway: gw, oif: link.index, prefsrc: l.address, protocol: RTPROT_DHCP });
    } else if (old?.routers[0]) {
      this.dropDefaultRoute(old);
    }
    if (this.o.resolvConf && (l.dns.length || l.domain)) {
      const text = renderResolvConf(l.dns, l.domain, l.search);
      const before = old ? renderResolvConf(old.dns, old.domain, old.search) : "";
      if (text !== before) {
        try {
          writeResolvConf(this.o.resolvConf, text);
        } catch (e) {
          this.o.log(`dhcp4: cannot write ${this.o.resolvConf}: ${(e as Error).message}`);
        }
      }
    }
  }

  private dropDefaultRoute(l: Lease): void {
    const gw = l.routers[0];
    if (!gw) return;
    try {
      delRoute(this.o.nl, { dst: new Uint8Array(4), dstLen: 0, gateway: gw, oif: this.o.link.index });
    } catch (e) {
      if (!(e instanceof NetlinkError)) throw e; // already gone with the address: fine
    }
  }

  /** Removes what the lease configured; the kernel drops routes through the address with it. */
  private deconfigure(): void {
    const l = this.lease;
    this.lease = undefined;
    if (!l) return;
    this.dropDefaultRoute(l);
    try {
      delAddress(this.o.nl, { index: this.o.link.index, bytes: l.address, prefixlen: l.prefixlen });
    } catch (e) {
      if (!(e instanceof NetlinkError) || e.errno === EEXIST) throw e;
      // EADDRNOTAVAIL: the kernel removed it already when its lifetime ran out
    }
  }
}
