// DHCPv4 client that keeps its lease for the life of the process: the runner of the pure state machine in
// netctl/dhcp4-machine.ts. It owns the I/O: a plain UDP socket on port 68 (broadcasts need a route for
// 255.255.255.255, which we add on the interface, docs/notes.md §5, so no AF_PACKET and no
// SO_BINDTODEVICE are needed), the timers (all through common/timer.ts: Bun fires timers over 2^31-1 ms at
// once, and leases can be infinite), and applying a lease to the kernel and resolv.conf, all or nothing.
// The server is untrusted: docs/dhcp.md.
import { EEXIST } from "../common/libc-net.ts";
import { type LongTimer, setLongTimeout } from "../common/timer.ts";
import { addAddress, delAddress } from "./address.ts";
import { formatIPv4 } from "./addrmath.ts";
import { type Ctx, type DhcpState, type Input, type Lease, type LeaseEvent, newCtx, type Output, step } from "./dhcp4-machine.ts";
import * as P from "./dhcp4-packet.ts";
import { NetlinkError, type Rtnl } from "./netlink.ts";
import { addRoute, delRoute, RTPROT_BOOT, RTPROT_DHCP, RT_SCOPE_LINK } from "./route.ts";
import { renderResolvConf, writeResolvConf } from "./resolvconf.ts";

export type { DhcpState, Lease, LeaseEvent };

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

/** a hostile server must not flood the log: lines caused by replies are rate-limited */
const LOG_BURST = 20;
const LOG_EVERY_MS = 5000;

const sameAddr = (a?: Uint8Array, b?: Uint8Array) => !!a && !!b && a.length === b.length && a.every((x, i) => x === b[i]);

export class Dhcp4Client {
  private readonly c: Ctx;
  /** performance.now() of the first ACK received (for timings) */
  firstAckAt: number | undefined;
  private sock: import("bun").udp.Socket<"uint8array"> | undefined;
  private timer: LongTimer | undefined;
  private leaseTimers: LongTimer[] = [];
  private startedAt = 0;
  private boundWaiters: ((l: Lease) => void)[] = [];
  private quiet = { tokens: LOG_BURST, at: 0, suppressed: 0 };

  constructor(private readonly o: Dhcp4Options) {
    this.c = newCtx(o.maxBackoff !== undefined ? { maxBackoff: o.maxBackoff } : {});
  }

  get state(): DhcpState {
    return this.c.state;
  }
  get lease(): Lease | undefined {
    return this.c.lease;
  }
  /** counters for the timeout message ("no DHCP offer after N DISCOVERs") */
  get stats(): Ctx["stats"] {
    return this.c.stats;
  }
  /** the last reason a reply or lease was refused, for the timeout message */
  get lastProblem(): string | undefined {
    return this.c.lastProblem;
  }

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
    this.feed({ type: "start" });
  }

  /** Resolves with the lease once bound (immediately if bound already). */
  waitBound(): Promise<Lease> {
    const l = this.c.lease;
    if (l && (this.c.state === "bound" || this.c.state === "renewing" || this.c.state === "rebinding")) return Promise.resolve(l);
    return new Promise((res) => this.boundWaiters.push(res));
  }

  /** Stops timers and closes the socket; the address stays (its lifetime runs out by itself). */
  async stop(): Promise<void> {
    this.feed({ type: "stop" });
    this.sock?.close();
    this.sock = undefined;
  }

  private receive(data: Uint8Array): void {
    if (this.c.state === "stopped") return;
    try {
      const m = P.decodeMessage(data);
      // not for us: another client's transaction on the same link
      if (!m || !sameAddr(m.chaddr.subarray(0, 6), this.o.link.mac)) return;
      const acks = this.c.stats.acks;
      this.feed({ type: "reply", m });
      if (this.c.stats.acks !== acks) this.firstAckAt ??= performance.now();
    } catch (e) {
      // a reply must never take the init down; this is a bug, and the fuzz test looks for this line
      this.o.log(`dhcp4: internal error handling a reply: ${(e as Error).stack ?? String(e)}`);
    }
  }

  /** Runs one input through the state machine and carries out its outputs (an apply feeds its result back). */
  private feed(input: Input): void {
    const queue: Input[] = [input];
    for (let i = queue.shift(); i; i = queue.shift()) {
      for (const o of step(this.c, i)) {
        const r = this.run(o);
        if (r) queue.push(r);
      }
    }
  }

  private run(o: Output): Input | undefined {
    switch (o.do) {
      case "newTransaction":
        this.startedAt = performance.now();
        this.broadcastRoute();
        return undefined;
      case "send":
        this.send(o.msg, o.dest === "broadcast" ? "255.255.255.255" : formatIPv4(o.dest), o.spec);
        return undefined;
      case "timer":
        this.timer?.clear();
        this.timer = o.ms === Infinity ? undefined : setLongTimeout(() => this.feed({ type: "timer" }), o.ms);
        return undefined;
      case "leaseTimers": {
        for (const t of this.leaseTimers) t.clear();
        this.leaseTimers = [];
        const l = o.lease;
        if (l && !l.infinite) {
          const at = (s: number) => Math.max(0, l.obtainedAt + s * 1000 - performance.now());
          this.leaseTimers.push(
            setLongTimeout(() => this.feed({ type: "t1" }), at(l.t1)),
            setLongTimeout(() => this.feed({ type: "t2" }), at(l.t2)),
            setLongTimeout(() => this.feed({ type: "expire" }), at(l.leaseTime)),
          );
        }
        return undefined;
      }
      case "apply":
        try {
          this.apply(o.lease, o.cur);
          return { type: "applied" };
        } catch (e) {
          return { type: "applied", error: (e as Error).message };
        }
      case "deconfigure":
        this.deconfigure(o.lease);
        return undefined;
      case "log":
        if (o.noisy) this.noisy(o.msg);
        else this.o.log(`dhcp4: ${o.msg}`);
        return undefined;
      case "event":
        if (o.lease) for (const w of this.boundWaiters.splice(0)) w(o.lease);
        this.o.onLease?.(o.ev, o.lease);
        return undefined;
    }
  }

  private send(type: number, dest: string, extra: Partial<P.EncodeSpec>): void {
    if (!this.sock) return;
    const secs = Math.floor((performance.now() - this.startedAt) / 1000);
    const pkt = P.encodeMessage({ type, xid: this.c.xid, mac: this.o.link.mac, secs, ...(this.o.hostname && type !== P.DHCPDECLINE ? { hostname: this.o.hostname } : {}), ...extra });
    try {
      this.sock.send(pkt, 67, dest);
    } catch (e) {
      this.o.log(`dhcp4: send ${P.MSG_NAMES[type]} to ${dest} failed: ${(e as Error).message}`);
    }
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
  private deconfigure(l: Lease): void {
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
