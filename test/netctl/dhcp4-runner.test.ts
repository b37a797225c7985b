// The DHCPv4 runner (netctl/dhcp4.ts) with its socket, kernel side, clock and timers injected: no root, no
// network. A whole lease life on a fake clock: DISCOVER, OFFER, REQUEST, ACK, the lease applied with its
// lifetime, T1 (unicast), a lost renewal, T2 (broadcast), expiry (removed, DISCOVER again), stop. The same
// runs against real servers in netns in lab.test.ts and dhcp-hostile.test.ts.
import { expect, test } from "bun:test";
import type { LongTimer } from "../../common/timer.ts";
import type { LeaseApplier } from "../../netctl/dhcp4-apply.ts";
import { Dhcp4Client, type Lease, type LeaseEvent } from "../../netctl/dhcp4.ts";
import * as P from "../../netctl/dhcp4-packet.ts";

const MAC = new Uint8Array([2, 0, 0, 0, 0, 7]);
const SID = [10, 0, 0, 1];
const YI = [10, 0, 0, 50];
const u32 = (n: number) => [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];

/** A server's reply, as the wire carries it. */
function reply(type: number, xid: number, yiaddr: number[], opts: [number, number[]][]): Uint8Array {
  const o: number[] = [P.OPT.messageType, 1, type];
  for (const [k, v] of opts) o.push(k, v.length, ...v);
  o.push(P.OPT.end);
  const b = new Uint8Array(240 + o.length);
  b[0] = P.BOOTREPLY;
  b[1] = 1;
  b[2] = 6;
  new DataView(b.buffer).setUint32(4, xid >>> 0);
  b.set(yiaddr, 16);
  b.set(MAC, 28);
  b.set([99, 130, 83, 99], 236);
  b.set(o, 240);
  return b;
}
const lease120: [number, number[]][] = [[54, SID], [51, u32(120)], [1, [255, 255, 255, 0]], [3, SID], [6, [10, 0, 0, 53]]];

function world() {
  let now = 0;
  const timers: { due: number; fn: () => void; live: boolean }[] = [];
  const setTimer = (fn: () => void, ms: number): LongTimer => {
    const t = { due: now + ms, fn, live: ms !== Infinity };
    timers.push(t);
    return { clear: () => void (t.live = false), get pending() { return t.live; } };
  };
  /** move the clock, firing every timer due on the way, in order */
  const advance = (ms: number) => {
    const end = now + ms;
    for (;;) {
      const next = timers.filter((t) => t.live && t.due <= end).sort((a, b) => a.due - b.due)[0];
      if (!next) break;
      now = Math.max(now, next.due);
      next.live = false;
      next.fn();
    }
    now = end;
  };
  const sent: { msg: P.DhcpMessage; dest: string }[] = [];
  let deliver: (d: Uint8Array) => void = () => undefined;
  let closed = false;
  const calls: string[] = [];
  const applier: LeaseApplier = {
    broadcastRoute: () => void calls.push("broadcastRoute"),
    apply: (l, cur, lifetime) => void calls.push(`apply ${l.address.join(".")} cur=${cur ? cur.address.join(".") : "-"} lifetime=${lifetime}`),
    deconfigure: (l) => void calls.push(`deconfigure ${l.address.join(".")}`),
  };
  const events: [LeaseEvent, string | undefined][] = [];
  const client = new Dhcp4Client({
    link: { index: 7, name: "m8sv0", mac: MAC },
    log: () => undefined,
    onLease: (ev, l) => void events.push([ev, l?.address.join(".")]),
    applier,
    now: () => now,
    wallNow: () => 1_700_000_000_000 + now,
    setTimer,
    open: async (onData) => {
      deliver = onData;
      return { send: (pkt, port, dest) => void (port === 67 && sent.push({ msg: P.decodeMessage(pkt)!, dest })), close: () => void (closed = true) };
    },
  });
  const last = () => sent.at(-1)!;
  const type = (m: P.DhcpMessage) => P.MSG_NAMES[P.messageType(m)!];
  return { client, advance, sent, last, type, calls, events, deliver: (d: Uint8Array) => deliver(d), timers, get closed() { return closed; } };
}

test("a lease's life through the runner: bound, T1 unicast, a lost renewal, T2 broadcast, expiry, stop", async () => {
  const w = world();
  await w.client.start();
  expect(w.calls).toEqual(["broadcastRoute", "broadcastRoute"]); // at start, and for the new transaction
  expect([w.type(w.last().msg), w.last().dest]).toEqual(["DISCOVER", "255.255.255.255"]);
  const xid = w.last().msg.xid;

  w.advance(1500);
  w.deliver(reply(P.DHCPOFFER, xid, YI, lease120));
  expect(w.type(w.last().msg)).toBe("REQUEST");
  expect(w.last().msg.secs).toBe(1); // since the transaction's first DISCOVER
  const bound = w.client.waitBound();
  w.deliver(reply(P.DHCPACK, xid, YI, lease120));
  expect(((await bound) as Lease).address).toEqual(new Uint8Array(YI));
  expect(w.calls.at(-1)).toBe("apply 10.0.0.50 cur=- lifetime=120");
  expect(w.events).toEqual([["bound", "10.0.0.50"]]);

  // T1 at 60 s after the REQUEST: unicast to the server, ciaddr set
  const before = w.sent.length;
  w.advance(60_000 - 1);
  expect(w.sent.length).toBe(before);
  w.advance(1);
  expect([w.type(w.last().msg), w.last().dest, [...w.last().msg.ciaddr]]).toEqual(["REQUEST", "10.0.0.1", YI]);
  // lost: retransmitted (at least 5 s apart) until T2 at 105 s, which broadcasts
  w.advance(44_000);
  const renewals = w.sent.slice(before).filter((s) => s.dest === "10.0.0.1").length;
  expect(renewals).toBeGreaterThanOrEqual(2);
  w.advance(1000);
  expect([w.type(w.last().msg), w.last().dest]).toEqual(["REQUEST", "255.255.255.255"]);
  expect(w.last().msg.options.has(54)).toBe(false); // rebinding names no server
  // nobody answers: at 120 s the lease expires, is removed, and the client starts over
  w.advance(15_000);
  expect(w.calls.slice(-2)).toEqual(["deconfigure 10.0.0.50", "broadcastRoute"]);
  expect(w.events.at(-1)).toEqual(["expired", undefined]);
  expect(w.type(w.last().msg)).toBe("DISCOVER");
  expect(w.client.lease).toBeUndefined();

  await w.client.stop();
  expect(w.closed).toBe(true);
  expect(w.timers.filter((t) => t.live)).toEqual([]);
});

test("an infinite lease arms no timer: nothing is sent however long it runs, the address has no lifetime", async () => {
  const w = world();
  await w.client.start();
  const xid = w.last().msg.xid;
  const inf: [number, number[]][] = [[54, SID], [51, u32(0xffffffff)], [1, [255, 255, 255, 0]]];
  w.deliver(reply(P.DHCPOFFER, xid, YI, inf));
  w.deliver(reply(P.DHCPACK, xid, YI, inf));
  expect(w.calls.at(-1)).toBe("apply 10.0.0.50 cur=- lifetime=infinite");
  const n = w.sent.length;
  w.advance(400 * 86_400_000); // 400 days
  expect(w.sent.length).toBe(n);
  expect(w.client.state).toBe("bound");
  expect(w.timers.filter((t) => t.live)).toEqual([]);
});

test("without an applier the runner needs netlink", () => {
  expect(() => new Dhcp4Client({ link: { index: 1, name: "x", mac: MAC }, log: () => undefined })).toThrow(/neither an applier nor netlink/);
});
