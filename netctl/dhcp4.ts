// DHCPv4 client that keeps its lease for the life of the process: the runner of the pure state machine in
// netctl/dhcp4-machine.ts. It owns the I/O: a plain UDP socket on port 68 (broadcasts need a route for
// 255.255.255.255, which we add on the interface, docs/notes.md §5, so no AF_PACKET and no
// SO_BINDTODEVICE are needed) and the timers (all through common/timer.ts: Bun fires timers over 2^31-1 ms
// at once, and leases can be infinite). Applying a lease to the kernel and resolv.conf, all or nothing, is
// netctl/dhcp4-apply.ts. The socket, the applier, the clock and the timers can be injected: the runner is
// unit-tested without root (test/netctl/dhcp4-runner.test.ts). The server is untrusted: docs/dhcp.md.
import { type LongTimer, setLongTimeout } from "../common/timer.ts";
import { formatIPv4 } from "../common/net/addrmath.ts";
import { KernelApplier, type LeaseApplier } from "./dhcp4-apply.ts";
import { type Ctx, type DhcpState, type Input, type Lease, type LeaseEvent, newCtx, type Output, step } from "./dhcp4-machine.ts";
import * as P from "./dhcp4-packet.ts";
import type { Rtnl } from "./netlink.ts";

export type { DhcpState, Lease, LeaseEvent };

export interface Dhcp4Options {
  /** netlink, for the kernel applier; not needed when `applier` is given */
  nl?: Rtnl;
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
  /** injected in unit tests: the socket, the kernel side, the clock and the timers */
  open?: OpenTransport;
  applier?: LeaseApplier;
  now?: () => number;
  wallNow?: () => number;
  setTimer?: (fn: () => void, ms: number) => LongTimer;
}

/** The client's socket: port 68, broadcast allowed. */
export interface Dhcp4Transport {
  send(pkt: Uint8Array, port: number, dest: string): void;
  close(): void;
}
export type OpenTransport = (onData: (data: Uint8Array) => void) => Promise<Dhcp4Transport>;

const udpPort68: OpenTransport = async (onData) => {
  const sock = await Bun.udpSocket({
    hostname: "0.0.0.0",
    port: 68,
    binaryType: "uint8array",
    socket: {
      data: (_s, data) => onData(data),
      // a unicast renewal to a server that is gone comes back as ICMP port unreachable (ECONNREFUSED on the
      // next receive): the retransmission and rebinding timers already cover it, so it is not an error here
      error: () => {},
    },
  });
  sock.setBroadcast(true);
  return { send: (pkt, port, dest) => void sock.send(pkt, port, dest), close: () => sock.close() };
};

/** a hostile server must not flood the log: lines caused by replies are rate-limited */
const LOG_BURST = 20;
const LOG_EVERY_MS = 5000;

const sameAddr = (a?: Uint8Array, b?: Uint8Array) => !!a && !!b && a.length === b.length && a.every((x, i) => x === b[i]);

export class Dhcp4Client {
  private readonly c: Ctx;
  /** performance.now() of the first ACK received (for timings) */
  firstAckAt: number | undefined;
  private sock: Dhcp4Transport | undefined;
  private readonly applier: LeaseApplier;
  private readonly setTimer: (fn: () => void, ms: number) => LongTimer;
  private timer: LongTimer | undefined;
  private leaseTimers: LongTimer[] = [];
  private boundWaiters: ((l: Lease) => void)[] = [];
  private quiet = { tokens: LOG_BURST, at: 0, suppressed: 0 };

  constructor(private readonly o: Dhcp4Options) {
    this.c = newCtx({
      ...(o.maxBackoff !== undefined ? { maxBackoff: o.maxBackoff } : {}),
      ...(o.now ? { now: o.now } : {}),
      ...(o.wallNow ? { wallNow: o.wallNow } : {}),
    });
    this.setTimer = o.setTimer ?? setLongTimeout;
    if (o.applier) this.applier = o.applier;
    else if (o.nl) {
      this.applier = new KernelApplier({
        nl: o.nl, link: o.link, log: o.log,
        ...(o.resolvConf !== undefined ? { resolvConf: o.resolvConf } : {}), ...(o.keepAddress ? { keepAddress: true } : {}),
      });
    } else throw new Error("dhcp4: neither an applier nor netlink given");
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

  async start(): Promise<void> {
    this.applier.broadcastRoute();
    this.sock = await (this.o.open ?? udpPort68)((data) => this.receive(data));
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

  /** A timer's input: as for a reply, a bug must not take the process down with it. */
  private fire(input: Input): void {
    try {
      this.feed(input);
    } catch (e) {
      this.o.log(`dhcp4: internal error handling a timer: ${(e as Error).stack ?? String(e)}`);
    }
  }

  private run(o: Output): Input | undefined {
    switch (o.do) {
      case "newTransaction":
        this.applier.broadcastRoute();
        return undefined;
      case "send":
        this.send(o.msg, o.dest === "broadcast" ? "255.255.255.255" : formatIPv4(o.dest), o.spec);
        return undefined;
      case "timer":
        this.timer?.clear();
        this.timer = o.ms === Infinity ? undefined : this.setTimer(() => this.fire({ type: "timer" }), o.ms);
        return undefined;
      case "leaseTimers": {
        for (const t of this.leaseTimers) t.clear();
        this.leaseTimers = [];
        const at = o.at;
        // an infinite lease: every time is Infinity, and such a timer never fires (common/timer.ts)
        if (at) {
          this.leaseTimers.push(
            this.setTimer(() => this.fire({ type: "t1" }), at.t1),
            this.setTimer(() => this.fire({ type: "t2" }), at.t2),
            this.setTimer(() => this.fire({ type: "expire" }), at.expire),
          );
        }
        return undefined;
      }
      case "apply":
        try {
          this.applier.apply(o.lease, o.cur, o.lifetime);
          return { type: "applied" };
        } catch (e) {
          return { type: "applied", error: (e as Error).message };
        }
      case "deconfigure":
        this.applier.deconfigure(o.lease);
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
    const pkt = P.encodeMessage({ type, xid: this.c.xid, mac: this.o.link.mac, ...(this.o.hostname && type !== P.DHCPDECLINE ? { hostname: this.o.hostname } : {}), ...extra });
    try {
      this.sock.send(pkt, 67, dest);
    } catch (e) {
      this.o.log(`dhcp4: send ${P.MSG_NAMES[type]} to ${dest} failed: ${(e as Error).message}`);
    }
  }

  /** Log lines caused by replies: a burst of LOG_BURST, then one per LOG_EVERY_MS; the rest are counted. */
  private noisy(msg: string): void {
    const q = this.quiet, now = this.c.now();
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
}
