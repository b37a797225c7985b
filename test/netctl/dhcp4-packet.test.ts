// DHCPv4 message encoding/decoding and lease interpretation (pure logic), and resolv.conf rendering.
import { describe, expect, test } from "bun:test";
import { formatIPv4 } from "../../common/net/addrmath.ts";
import * as P from "../../netctl/dhcp4-packet.ts";
import { isDomainName, printable, renderResolvConf } from "../../netctl/resolvconf.ts";

const mac = new Uint8Array([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);

/** Builds a server reply the way a server lays it out (independent of encodeMessage). */
function reply(type: number, xid: number, yiaddr: number[], opts: number[][], fileOpts?: number[]): Uint8Array {
  const o: number[] = [];
  for (const x of [[53, 1, type], ...opts]) o.push(...x);
  o.push(255);
  const b = new Uint8Array(240 + o.length);
  b[0] = 2;
  b[1] = 1;
  b[2] = 6;
  new DataView(b.buffer).setUint32(4, xid);
  b.set(yiaddr, 16);
  b.set(mac, 28);
  if (fileOpts) b.set([...fileOpts, 255], 108);
  b.set([99, 130, 83, 99], 236);
  b.set(o, 240);
  return b;
}

describe("encode", () => {
  test("DISCOVER: broadcast flag, chaddr, magic, options", () => {
    const b = P.encodeMessage({ type: P.DHCPDISCOVER, xid: 0xdeadbeef, mac, broadcast: true, hostname: "ct1" });
    expect(b.length).toBeGreaterThanOrEqual(300);
    const dv = new DataView(b.buffer);
    expect(b[0]).toBe(1);
    expect(dv.getUint32(4)).toBe(0xdeadbeef);
    expect(dv.getUint16(10)).toBe(0x8000);
    expect([...b.slice(28, 34)]).toEqual([...mac]);
    const m = P.decodeMessage(b)!;
    expect(P.messageType(m)).toBe(P.DHCPDISCOVER);
    expect(new TextDecoder().decode(m.options.get(P.OPT.hostname))).toBe("ct1");
    expect([...m.options.get(P.OPT.clientId)!]).toEqual([1, ...mac]);
    expect(m.options.get(P.OPT.paramList)).toContain(P.OPT.t1);
    expect(m.options.has(P.OPT.serverId)).toBe(false);
  });
  test("REQUEST after OFFER carries 50 and 54; renew carries ciaddr and neither", () => {
    const sel = P.decodeMessage(P.encodeMessage({ type: P.DHCPREQUEST, xid: 1, mac, broadcast: true, requestedIp: new Uint8Array([10, 0, 0, 5]), serverId: new Uint8Array([10, 0, 0, 1]) }))!;
    expect([...sel.options.get(P.OPT.requestedIp)!]).toEqual([10, 0, 0, 5]);
    expect([...sel.options.get(P.OPT.serverId)!]).toEqual([10, 0, 0, 1]);
    const renew = P.decodeMessage(P.encodeMessage({ type: P.DHCPREQUEST, xid: 2, mac, ciaddr: new Uint8Array([10, 0, 0, 5]) }))!;
    expect([...renew.ciaddr]).toEqual([10, 0, 0, 5]);
    expect(renew.flags).toBe(0);
    expect(renew.options.has(P.OPT.requestedIp) || renew.options.has(P.OPT.serverId)).toBe(false);
  });
});

describe("decode", () => {
  test("ACK with all the usual options", () => {
    const b = reply(P.DHCPACK, 7, [10, 9, 0, 150], [
      [1, 4, 255, 255, 255, 0],
      [3, 8, 10, 9, 0, 1, 10, 9, 0, 2],
      [6, 4, 10, 9, 0, 1],
      [15, 8, ...new TextEncoder().encode("lab.test")],
      [51, 4, 0, 0, 0, 120],
      [54, 4, 10, 9, 0, 1],
      [119, 10, 3, 102, 111, 111, 4, 116, 101, 115, 116, 0],
    ]);
    const m = P.decodeMessage(b)!;
    expect(m.xid).toBe(7);
    const l = P.leaseFromAck(m);
    expect(formatIPv4(l.address)).toBe("10.9.0.150");
    expect(l.prefixlen).toBe(24);
    expect(l.routers.map(formatIPv4)).toEqual(["10.9.0.1", "10.9.0.2"]);
    expect(l.dns.map(formatIPv4)).toEqual(["10.9.0.1"]);
    expect(l.domain).toBe("lab.test");
    expect(l.search).toEqual(["foo.test"]);
    expect(l.leaseTime).toBe(120);
    expect(l.t1).toBe(60);
    expect(l.t2).toBe(105);
    expect(formatIPv4(l.serverId!)).toBe("10.9.0.1");
  });
  test("server T1/T2 are used when sane and replaced when not", () => {
    const good = P.leaseFromAck(P.decodeMessage(reply(P.DHCPACK, 1, [1, 2, 3, 4], [[51, 4, 0, 0, 3, 232], [58, 4, 0, 0, 0, 100], [59, 4, 0, 0, 1, 0]]))!);
    expect([good.leaseTime, good.t1, good.t2]).toEqual([1000, 100, 256]);
    const bad = P.leaseFromAck(P.decodeMessage(reply(P.DHCPACK, 1, [1, 2, 3, 4], [[51, 4, 0, 0, 0, 100], [58, 4, 0, 0, 0, 200], [59, 4, 0, 0, 0, 150]]))!);
    expect(bad.t1).toBeLessThan(bad.t2);
    expect(bad.t2).toBeLessThan(bad.leaseTime);
  });
  test("option overload into the file field, and repeated options concatenate", () => {
    const m = P.decodeMessage(reply(P.DHCPACK, 1, [1, 2, 3, 4], [[52, 1, 1], [6, 4, 1, 1, 1, 1], [6, 4, 2, 2, 2, 2]], [3, 4, 9, 9, 9, 9]))!;
    const l = P.leaseFromAck(m);
    expect(l.routers.map(formatIPv4)).toEqual(["9.9.9.9"]);
    expect(l.dns.map(formatIPv4)).toEqual(["1.1.1.1", "2.2.2.2"]);
  });
  test("garbage is rejected, not thrown", () => {
    expect(P.decodeMessage(new Uint8Array(100))).toBeNull();
    const b = reply(P.DHCPACK, 1, [1, 2, 3, 4], [[51, 4, 0, 0, 0, 100]]);
    b[236] = 0; // wrong magic
    expect(P.decodeMessage(b)).toBeNull();
    const t = reply(P.DHCPACK, 1, [1, 2, 3, 4], [[51, 40, 0]]); // option runs past the end
    expect(P.decodeMessage(t.slice(0, 250))).toBeNull();
  });
  test("domain search list with a compression pointer", () => {
    // "foo.test" then "bar" + pointer to "test" at offset 4
    const v = new Uint8Array([3, 102, 111, 111, 4, 116, 101, 115, 116, 0, 3, 98, 97, 114, 0xc0, 4]);
    expect(P.decodeDomainList(v)).toEqual({ names: ["foo.test", "bar.test"] });
  });
});

test("resolv.conf rendering", () => {
  const t = renderResolvConf([new Uint8Array([10, 0, 0, 1]), new Uint8Array([10, 0, 0, 2])], "lab.test", ["lab.test", "other.test"]);
  expect(t).toBe("# written by man8s netctl from the DHCPv4 lease\nsearch lab.test other.test\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n");
});

describe("untrusted replies (issue 9 items 10-14)", () => {
  const enc = (s: string) => [...new TextEncoder().encode(s)];
  test("option 119: loops, forward pointers, long chains and floods are bounded", () => {
    expect(P.decodeDomainList(new Uint8Array([3, 97, 98, 99, 0xc0, 0])).stopped).toContain("does not point backwards");
    expect(P.decodeDomainList(new Uint8Array([0xc0, 2, 0xc0, 0])).stopped).toContain("does not point backwards");
    // a chain of pointers, each to the one before: more hops than allowed
    const chain = [1, 97, 0];
    for (let i = 0; i < 40; i++) chain.push(0xc0, i === 0 ? 0 : 3 + (i - 1) * 2);
    const c = P.decodeDomainList(new Uint8Array(chain));
    expect(c.names.length).toBeLessThanOrEqual(P.MAX_SEARCH_SCAN);
    // 64 KiB of pointers to one name: only MAX_SEARCH_SCAN names are read
    const flood = [4, ...enc("name"), 0];
    while (flood.length < 65000) flood.push(0xc0, 0);
    const t = performance.now();
    const f = P.decodeDomainList(new Uint8Array(flood));
    expect(performance.now() - t).toBeLessThan(50);
    expect(f.names.length).toBe(P.MAX_SEARCH_SCAN);
    expect(f.stopped).toContain("more than");
    // names over 255 wire bytes stop the list
    const long = [];
    for (let i = 0; i < 5; i++) long.push(63, ...new Array(63).fill(97));
    expect(P.decodeDomainList(new Uint8Array([...long, 0])).stopped).toContain("255 bytes");
  });
  test("names are RFC 1035 host names; bad ones are dropped and noted, escaped", () => {
    const m = P.decodeMessage(reply(P.DHCPACK, 1, [10, 0, 0, 5], [
      [54, 4, 10, 0, 0, 1],
      [15, 25, ...enc("a.test\nnameserver 6.6.6.6")],
      [119, 16, 2, ...enc("ok"), 4, ...enc("test"), 0, 5, ...enc("b\nc d"), 0],
    ]))!;
    const l = P.leaseFromAck(m);
    expect(l.domain).toBeUndefined();
    expect(l.search).toEqual(["ok.test"]);
    expect(l.notes.join("\n")).toContain('dropped domain name (option 15) "a.test\\nnameserver 6.6.6.6"');
    expect(l.notes.join("\n")).toContain('dropped search name (option 119) "b\\nc d"');
    for (const ok of ["a", "lab.test", "x-1.y2.example.", "0day.test"]) expect(isDomainName(ok)).toBe(true);
    for (const bad of ["", "-a.test", "a-.test", "a..b", "a_b.test", "a b", "a\nb", `${"a".repeat(64)}.test`, `${"a.".repeat(127)}aa`]) expect(isDomainName(bad)).toBe(false);
    expect(printable("x\u001b[2J\u0085\"")).toBe('"x\\u001b[2J\\u0085\\""');
  });
  test("resolv.conf keeps glibc's limits: 6 search names, 256 characters, 3 name servers", () => {
    const ns = [1, 2, 3, 4, 5].map((i) => new Uint8Array([10, 0, 0, i]));
    const names = Array.from({ length: 9 }, (_, i) => `n${i}.test`);
    const t = renderResolvConf(ns, "evil\nnameserver 6.6.6.6", names);
    expect(t).toBe(`# written by man8s netctl from the DHCPv4 lease\nsearch ${names.slice(0, 6).join(" ")}\nnameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n`);
    const long = Array.from({ length: 6 }, (_, i) => `${"x".repeat(60)}${i}.test`);
    const s = /search (.*)/.exec(renderResolvConf(ns, undefined, long))![1]!;
    expect(s.length).toBeLessThanOrEqual(256);
  });
  test("lease times: infinite is explicit, short leases are raised, T1 < T2 < lease", () => {
    const ack = (lease: number) => P.leaseFromAck(P.decodeMessage(reply(P.DHCPACK, 1, [10, 0, 0, 5], [[54, 4, 10, 0, 0, 1], [51, 4, (lease >>> 24) & 255, (lease >>> 16) & 255, (lease >>> 8) & 255, lease & 255]]))!);
    const inf = ack(0xffffffff);
    expect(inf.infinite).toBe(true);
    const zero = ack(0);
    expect(zero.infinite).toBe(false);
    expect(zero.leaseTime).toBe(P.MIN_LEASE);
    expect(zero.t1).toBeGreaterThan(0);
    expect(zero.t1).toBeLessThan(zero.t2);
    expect(zero.notes[0]).toContain("raised to the minimum");
    const fast = P.leaseFromAck(P.decodeMessage(reply(P.DHCPACK, 1, [10, 0, 0, 5], [[54, 4, 10, 0, 0, 1], [51, 4, 0, 0, 14, 16], [58, 4, 0, 0, 0, 1], [59, 4, 0, 0, 0, 2]]))!);
    expect([fast.leaseTime, fast.t1, fast.t2]).toEqual([3600, 1800, 3150]); // T1 = 1 s would renew every second
    const month = ack(40 * 86400);
    expect(month.t2 * 1000).toBeGreaterThan(2 ** 31); // only common/timer.ts can wait this long
  });
  test("addresses, masks and server identifiers", () => {
    for (const a of [[0, 0, 0, 0], [127, 0, 0, 1], [224, 0, 0, 5], [255, 255, 255, 255], [240, 0, 0, 1]]) expect(P.isUsableUnicast(new Uint8Array(a))).toBe(false);
    expect(P.isUsableUnicast(new Uint8Array([10, 0, 0, 1]))).toBe(true);
    expect(P.isUsableUnicast(new Uint8Array([10]))).toBe(false);
    expect(P.maskToPrefix(new Uint8Array([255, 255, 255, 0]))).toBe(24);
    expect(P.maskToPrefix(new Uint8Array([255, 255, 255, 255]))).toBe(32);
    expect(P.maskToPrefix(new Uint8Array([0, 0, 0, 0]))).toBe(0);
    expect(P.maskToPrefix(new Uint8Array([255, 0, 255, 0]))).toBe(-1);
    const l = (yi: number[], opts: number[][]) => P.leaseProblem(P.leaseFromAck(P.decodeMessage(reply(P.DHCPACK, 1, yi, opts))!))?.why;
    const sid = [54, 4, 10, 0, 0, 1];
    expect(l([10, 0, 0, 5], [sid, [1, 4, 255, 255, 255, 0]])).toBeUndefined();
    expect(l([10, 0, 0, 255], [sid, [1, 4, 255, 255, 255, 0]])).toContain("broadcast address");
    expect(l([10, 0, 0, 5], [sid, [1, 4, 255, 0, 255, 0]])).toContain("not a contiguous netmask");
    expect(l([127, 0, 0, 1], [sid])).toContain("not usable");
    expect(l([10, 0, 0, 5], [[54, 0]])).toContain("server identifier");
    expect(l([10, 0, 0, 5], [[54, 1, 10]])).toContain("server identifier");
    expect(l([10, 0, 0, 5], [[54, 4, 0, 0, 0, 0]])).toContain("server identifier");
  });
  test("decoding 64 KiB of 1-byte option fragments is linear", () => {
    const opts: number[][] = [[54, 4, 10, 0, 0, 1]];
    for (let i = 0; i < 21000; i++) opts.push([119, 1, 0]);
    const b = reply(P.DHCPACK, 1, [10, 0, 0, 5], opts);
    const t = performance.now();
    const m = P.decodeMessage(b)!;
    expect(m.options.get(119)!.length).toBe(21000);
    expect(performance.now() - t).toBeLessThan(100);
  });
});
