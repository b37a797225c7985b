// The DHCPv4 state machine alone (netctl/dhcp4-machine.ts): no root, no sockets, a fake clock. The same
// rules are proven end to end against real servers in dhcp-hostile.test.ts; these pin the transitions.
import { describe, expect, test } from "bun:test";
import { type Ctx, DECLINE_WAIT_MS, DHCP_STATES, type Input, NEXT, newCtx, type Output, REQUEST_WAITS_MS, step } from "../../netctl/dhcp4-machine.ts";
import * as P from "../../netctl/dhcp4-packet.ts";

const SID = [10, 0, 0, 1];
const YI = [10, 0, 0, 50];

function msg(c: Ctx, type: number, yiaddr: number[], opts: [number, number[]][]): P.DhcpMessage {
  const options = new Map<number, Uint8Array>([[P.OPT.messageType, new Uint8Array([type])]]);
  for (const [k, v] of opts) options.set(k, new Uint8Array(v));
  const z = new Uint8Array(4);
  return { op: P.BOOTREPLY, xid: c.xid, secs: 0, flags: 0, ciaddr: z, yiaddr: new Uint8Array(yiaddr), siaddr: z, chaddr: new Uint8Array(6), options };
}
const u32 = (n: number) => [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
const std = (lease = 3600): [number, number[]][] => [[54, SID], [51, u32(lease)], [1, [255, 255, 255, 0]], [3, SID]];

/** A machine with a fake clock; `feed` also answers `apply` outputs as the runner does. */
function machine(applyError?: () => string | undefined) {
  let now = 1000;
  let seed = 7;
  const c = newCtx({ now: () => now, wallNow: () => now, rand: () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) });
  const log: Output[] = [];
  const feed = (i: Input): Output[] => {
    const out: Output[] = [];
    const q: Input[] = [i];
    for (let x = q.shift(); x; x = q.shift()) {
      for (const o of step(c, x)) {
        out.push(o);
        if (o.do === "apply") q.push(applyError?.() ? { type: "applied", error: applyError()! } : { type: "applied" });
      }
    }
    log.push(...out);
    return out;
  };
  return { c, feed, log, advance: (ms: number) => (now += ms), get now() { return now; } };
}
const sends = (o: Output[]) => o.filter((x): x is Extract<Output, { do: "send" }> => x.do === "send").map((x) => P.MSG_NAMES[x.msg]);
const timerOf = (o: Output[]) => o.filter((x): x is Extract<Output, { do: "timer" }> => x.do === "timer").at(-1)?.ms;

/** start -> OFFER -> ACK: a bound machine */
function bound(lease = 3600) {
  const m = machine();
  m.feed({ type: "start" });
  m.feed({ type: "reply", m: msg(m.c, P.DHCPOFFER, YI, std(lease)) });
  const out = m.feed({ type: "reply", m: msg(m.c, P.DHCPACK, YI, std(lease)) });
  return { ...m, out };
}

describe("DHCPv4 state machine", () => {
  test("the first DISCOVER goes out at start, not after a timer", () => {
    const m = machine();
    const out = m.feed({ type: "start" });
    expect(out[0]?.do).toBe("leaseTimers");
    expect(sends(out)).toEqual(["DISCOVER"]);
    expect(m.c.state).toBe("selecting");
  });

  test("an unanswered REQUEST goes back to DISCOVER after REQUEST_WAITS_MS (~4 s), with a new xid", () => {
    const m = machine();
    m.feed({ type: "start" });
    const xid = m.c.xid;
    const o = m.feed({ type: "reply", m: msg(m.c, P.DHCPOFFER, YI, std()) });
    expect(sends(o)).toEqual(["REQUEST"]);
    let total = timerOf(o)!;
    for (let i = 1; i < REQUEST_WAITS_MS.length; i++) {
      const r = m.feed({ type: "timer" });
      expect(sends(r)).toEqual(["REQUEST"]);
      total += timerOf(r)!;
    }
    const back = m.feed({ type: "timer" });
    expect(sends(back)).toEqual(["DISCOVER"]);
    expect(m.c.state).toBe("selecting");
    expect(m.c.xid).not.toBe(xid);
    expect(total).toBeLessThan(5000);
  });

  test("bound: T1/T2/expiry armed; an infinite lease arms none and never renews", () => {
    const b = bound();
    expect(b.c.state).toBe("bound");
    const lt = b.out.find((o) => o.do === "leaseTimers") as Extract<Output, { do: "leaseTimers" }>;
    expect(lt.at).toEqual({ t1: 1800_000, t2: 3150_000, expire: 3600_000 }); // from the REQUEST's send time
    expect(b.c.lease?.t1).toBe(1800);
    const inf = bound(0xffffffff);
    expect(inf.c.lease?.infinite).toBe(true);
    expect(inf.out.some((o) => o.do === "log" && o.msg.includes("lease infinite"))).toBe(true);
    // an infinite lease's timers never fire (Infinity), and its address gets no lifetime
    expect(inf.out.find((o) => o.do === "leaseTimers")).toEqual({ do: "leaseTimers", at: { t1: Infinity, t2: Infinity, expire: Infinity } });
    expect(inf.out.find((o) => o.do === "apply")).toMatchObject({ lifetime: "infinite" });
    // even a stray T1 does not start a renewal for it
    expect(timerOf(inf.out)).toBe(Infinity);
    for (const t of ["t1", "t2", "expire"] as const) expect(inf.feed({ type: t })).toEqual([]);
    expect(inf.c.state).toBe("bound");
  });

  test("renewing unicasts to the server, rebinding broadcasts, expiry drops the lease and starts over", () => {
    const b = bound();
    const r = b.feed({ type: "t1" });
    expect(b.c.state).toBe("renewing");
    const send = r.find((o) => o.do === "send") as Extract<Output, { do: "send" }>;
    expect(send.dest).toEqual(new Uint8Array(SID));
    b.feed({ type: "t2" });
    expect(b.c.state).toBe("rebinding");
    const e = b.feed({ type: "expire" });
    expect(e.some((o) => o.do === "deconfigure")).toBe(true);
    expect(e.some((o) => o.do === "event" && o.ev === "expired")).toBe(true);
    expect(sends(e)).toEqual(["DISCOVER"]);
  });

  test("lease time 0: raised to the minimum, so no renewal loop", () => {
    const b = bound(0);
    expect(b.c.lease?.leaseTime).toBe(P.MIN_LEASE);
    expect(b.c.lease?.t1).toBeGreaterThanOrEqual(P.MIN_LEASE / 2);
  });

  test("repeated NAKs back off: 0, then growing delays up to the cap", () => {
    const m = machine();
    m.feed({ type: "start" });
    const waits: number[] = [];
    for (let i = 0; i < 9; i++) {
      m.feed({ type: "reply", m: msg(m.c, P.DHCPOFFER, YI, std()) });
      const o = m.feed({ type: "reply", m: msg(m.c, P.DHCPNAK, [0, 0, 0, 0], [[54, SID], [56, [...new TextEncoder().encode("no\nx")]]]) });
      expect(o.some((x) => x.do === "log" && x.msg.includes('NAK ("no\\nx")'))).toBe(true);
      const w = sends(o).includes("DISCOVER") ? 0 : timerOf(o)!;
      waits.push(w);
      if (w) m.feed({ type: "timer" }); // the restart timer fires: DISCOVER
    }
    expect(waits[0]).toBe(0);
    for (let i = 2; i < waits.length; i++) expect(waits[i]!).toBeGreaterThanOrEqual(waits[i - 1]! * 0.6);
    expect(Math.max(...waits)).toBeGreaterThan(20_000);
    expect(Math.max(...waits)).toBeLessThanOrEqual(60_000 * 1.2);
  });

  test("offers without a 4-byte unicast server id, or for unusable addresses, are ignored", () => {
    const m = machine();
    m.feed({ type: "start" });
    for (const sid of [[], [10], [0, 0, 0, 0], [255, 255, 255, 255]]) {
      m.feed({ type: "reply", m: msg(m.c, P.DHCPOFFER, YI, [[54, sid], [51, u32(3600)]]) });
      expect(m.c.state).toBe("selecting");
    }
    for (const yi of [[127, 0, 0, 1], [224, 0, 0, 5], [0, 0, 0, 0], [255, 255, 255, 255]]) {
      m.feed({ type: "reply", m: msg(m.c, P.DHCPOFFER, yi, std()) });
      expect(m.c.state).toBe("selecting");
    }
    expect(m.c.stats.rejected).toBe(8);
  });

  test("an ACK for an unusable address is DECLINEd and the client waits at least 10 s", () => {
    const m = machine();
    m.feed({ type: "start" });
    m.feed({ type: "reply", m: msg(m.c, P.DHCPOFFER, YI, std()) });
    const o = m.feed({ type: "reply", m: msg(m.c, P.DHCPACK, [255, 255, 255, 255], std()) });
    expect(sends(o)).toEqual(["DECLINE"]);
    expect(timerOf(o)).toBeGreaterThanOrEqual(DECLINE_WAIT_MS);
    expect(o.some((x) => x.do === "apply")).toBe(false);
    expect(m.c.state).toBe("init");
  });

  test("an ACK from another server than the one requested is ignored", () => {
    const m = machine();
    m.feed({ type: "start" });
    m.feed({ type: "reply", m: msg(m.c, P.DHCPOFFER, YI, std()) });
    m.feed({ type: "reply", m: msg(m.c, P.DHCPACK, YI, [[54, [10, 0, 0, 9]], [51, u32(3600)]]) });
    expect(m.c.state).toBe("requesting");
  });

  test("a failed apply is reported, nothing is kept, and the client starts over", () => {
    let fail = true;
    const m = machine(() => (fail ? "Nexthop has invalid gateway" : undefined));
    m.feed({ type: "start" });
    m.feed({ type: "reply", m: msg(m.c, P.DHCPOFFER, YI, std()) });
    const o = m.feed({ type: "reply", m: msg(m.c, P.DHCPACK, YI, std()) });
    expect(o.some((x) => x.do === "log" && x.msg.includes("Nexthop has invalid gateway; rolled back"))).toBe(true);
    expect(m.c.lease).toBeUndefined();
    expect(m.c.lastProblem).toContain("applying the lease failed");
    expect(sends(o)).toEqual(["DISCOVER"]);
    fail = false;
    m.feed({ type: "reply", m: msg(m.c, P.DHCPOFFER, YI, std()) });
    m.feed({ type: "reply", m: msg(m.c, P.DHCPACK, YI, std()) });
    expect(m.c.state).toBe("bound");
    expect(m.c.lastProblem).toBeUndefined();
  });

  test("a refused ACK while renewing keeps the current lease", () => {
    const b = bound();
    b.feed({ type: "t1" });
    b.feed({ type: "reply", m: msg(b.c, P.DHCPACK, [127, 0, 0, 1], std()) });
    expect(b.c.state).toBe("renewing");
    expect(b.c.lease?.address).toEqual(new Uint8Array(YI));
    // a good ACK with another address replaces it
    const o = b.feed({ type: "reply", m: msg(b.c, P.DHCPACK, [10, 0, 0, 60], std()) });
    expect(o.some((x) => x.do === "deconfigure")).toBe(true);
    expect(o.some((x) => x.do === "event" && x.ev === "changed")).toBe(true);
    expect(b.c.lease?.address).toEqual(new Uint8Array([10, 0, 0, 60]));
  });

  test("a changed address whose apply fails: the old lease is gone, and the runner is told (no stale address)", () => {
    let fail = false;
    const b = (() => {
      const m = machine(() => (fail ? "File exists" : undefined));
      m.feed({ type: "start" });
      m.feed({ type: "reply", m: msg(m.c, P.DHCPOFFER, YI, std()) });
      m.feed({ type: "reply", m: msg(m.c, P.DHCPACK, YI, std()) });
      return m;
    })();
    b.feed({ type: "t1" });
    fail = true;
    const o = b.feed({ type: "reply", m: msg(b.c, P.DHCPACK, [10, 0, 0, 60], std()) });
    const deconf = o.filter((x): x is Extract<Output, { do: "deconfigure" }> => x.do === "deconfigure");
    expect(deconf.map((x) => [...x.lease.address])).toEqual([YI]); // the old address went, once
    expect(b.c.lease).toBeUndefined();
    // before the fix: no event, so the status record kept showing the removed address
    expect(o.filter((x) => x.do === "event").map((x) => [(x as { ev: string }).ev, (x as { lease?: unknown }).lease])).toEqual([["expired", undefined]]);
    expect(sends(o)).toEqual(["DISCOVER"]);
  });

  test("renew: T1 → unicast REQUEST; a lost one is retransmitted at half the time left to T2 (≥ 5 s), none past T2", () => {
    const b = bound(); // T1 1800 s, T2 3150 s, lease 3600 s
    b.advance(1800_000);
    const r = b.feed({ type: "t1" });
    expect(sends(r)).toEqual(["REQUEST"]);
    expect(timerOf(r)).toBe((3150_000 - 1800_000) / 2);
    const xid = b.c.xid;
    b.advance(timerOf(r)!);
    const again = b.feed({ type: "timer" }); // no ACK: the REQUEST was lost
    expect(sends(again)).toEqual(["REQUEST"]);
    expect(b.c.xid).toBe(xid); // the same transaction
    expect((again.find((o) => o.do === "send") as Extract<Output, { do: "send" }>).dest).toEqual(new Uint8Array(SID));
    b.advance(3150_000 - 1800_000 - 675_000 - 3000); // 3 s before T2: the next wait would pass it
    expect(timerOf(b.feed({ type: "timer" }))).toBe(Infinity);
    expect(b.c.stats.renews).toBe(3);
    // a late ACK renews: same address, new times counted from the REQUEST that got it
    b.advance(1000);
    const ok = b.feed({ type: "reply", m: msg(b.c, P.DHCPACK, YI, std()) });
    expect(b.c.state).toBe("bound");
    expect(ok.filter((o) => o.do === "event").map((o) => (o as { ev: string }).ev)).toEqual(["renewed"]);
    expect(ok.some((o) => o.do === "deconfigure")).toBe(false);
    expect(ok.find((o) => o.do === "leaseTimers")).toEqual({ do: "leaseTimers", at: { t1: 1800_000 - 1000, t2: 3150_000 - 1000, expire: 3600_000 - 1000 } });
    expect(ok.find((o) => o.do === "apply")).toMatchObject({ lifetime: 3599 });
  });

  test("rebind: T2 → broadcast REQUEST without a server id, a new xid; expiry → the lease is removed, DISCOVER", () => {
    const b = bound();
    b.feed({ type: "t1" });
    const xid = b.c.xid;
    const r = b.feed({ type: "t2" });
    expect(b.c.state).toBe("rebinding");
    const send = r.find((o) => o.do === "send") as Extract<Output, { do: "send" }>;
    expect([send.dest, send.spec.serverId, send.spec.ciaddr]).toEqual(["broadcast", undefined, new Uint8Array(YI)]);
    expect(b.c.xid).not.toBe(xid);
    const e = b.feed({ type: "expire" });
    expect(e.filter((o) => o.do === "deconfigure").length).toBe(1);
    expect(e.find((o) => o.do === "leaseTimers")).toEqual({ do: "leaseTimers", at: null });
    expect([b.c.state, b.c.lease, b.c.stats.expiries]).toEqual(["selecting", undefined, 1]);
  });

  test("NAK while renewing (from our server) or rebinding (from any server): the lease goes at once, DISCOVER", () => {
    const b = bound();
    b.feed({ type: "t1" });
    const other = b.feed({ type: "reply", m: msg(b.c, P.DHCPNAK, [0, 0, 0, 0], [[54, [10, 0, 0, 9]]]) });
    expect(other).toEqual([]); // renewing: only the server we renew with may NAK
    const o = b.feed({ type: "reply", m: msg(b.c, P.DHCPNAK, [0, 0, 0, 0], [[54, SID]]) });
    expect(o.filter((x) => x.do === "deconfigure").length).toBe(1);
    expect(o.filter((x) => x.do === "event").map((x) => (x as { ev: string }).ev)).toEqual(["nak"]);
    expect(sends(o)).toEqual(["DISCOVER"]);
    expect(b.c.lease).toBeUndefined();

    const r = bound();
    r.feed({ type: "t2" });
    r.feed({ type: "reply", m: msg(r.c, P.DHCPNAK, [0, 0, 0, 0], [[54, [10, 0, 0, 9]]]) });
    expect([r.c.state, r.c.lease]).toEqual(["selecting", undefined]);
  });

  test("a renewal that makes the lease infinite clears its timers: a stray T2 or expiry no longer acts", () => {
    const r = bound();
    r.feed({ type: "t1" });
    const inf = r.feed({ type: "reply", m: msg(r.c, P.DHCPACK, YI, std(0xffffffff)) });
    expect(inf.find((o) => o.do === "leaseTimers")).toEqual({ do: "leaseTimers", at: { t1: Infinity, t2: Infinity, expire: Infinity } });
    expect(inf.find((o) => o.do === "apply")).toMatchObject({ lifetime: "infinite" });
    expect(r.feed({ type: "t2" })).toEqual([]);
    expect(r.feed({ type: "expire" })).toEqual([]);
    expect([r.c.state, r.c.lease?.infinite]).toEqual(["bound", true]);
  });

  test("the state changes only along NEXT; stop from anywhere", () => {
    const seen = new Set<string>();
    const watch = (m: ReturnType<typeof machine>, i: Input) => {
      const from = m.c.state;
      m.feed(i);
      if (m.c.state !== from) seen.add(`${from}>${m.c.state}`);
    };
    const b = machine();
    watch(b, { type: "start" });
    watch(b, { type: "reply", m: msg(b.c, P.DHCPOFFER, YI, std()) });
    watch(b, { type: "reply", m: msg(b.c, P.DHCPACK, YI, std()) });
    watch(b, { type: "t1" });
    watch(b, { type: "reply", m: msg(b.c, P.DHCPACK, YI, std()) });
    watch(b, { type: "t2" });
    watch(b, { type: "reply", m: msg(b.c, P.DHCPACK, YI, std()) });
    watch(b, { type: "t1" });
    watch(b, { type: "t2" });
    watch(b, { type: "expire" });
    for (const t of seen) {
      const [from, to] = t.split(">") as [(typeof DHCP_STATES)[number], (typeof DHCP_STATES)[number]];
      // one input may pass through init (expiry: init, then selecting at once)
      expect(NEXT[from].includes(to) || (to === "selecting" && NEXT[from].includes("init"))).toBe(true);
    }
    expect(seen).toContain("bound>renewing");
    expect(seen).toContain("renewing>rebinding");
    expect(seen).toContain("rebinding>bound");
    watch(b, { type: "stop" });
    expect(b.c.state).toBe("stopped");
    expect(NEXT.stopped).toEqual([]);
  });

  test("replies with another xid, and anything after stop, do nothing", () => {
    const m = machine();
    m.feed({ type: "start" });
    const other = { ...msg(m.c, P.DHCPOFFER, YI, std()), xid: m.c.xid ^ 1 };
    expect(m.feed({ type: "reply", m: other })).toEqual([]);
    m.feed({ type: "stop" });
    expect(m.feed({ type: "reply", m: msg(m.c, P.DHCPOFFER, YI, std()) })).toEqual([]);
    expect(m.feed({ type: "timer" })).toEqual([]);
  });
});
