// Links over rtnetlink: list (RTM_GETLINK dump), parse, and set administratively up.
// struct ifinfomsg (<linux/rtnetlink.h>), 16 bytes: u8 family, u8 pad, u16 type, i32 index, u32 flags, u32 change.
import { AF_INET6, AF_UNSPEC } from "../common/libc-net.ts";
import { Attrs, cstr, NLM_F_DUMP, parseAttrs, type NlMsg, type Rtnl, RTM_GETLINK, RTM_NEWLINK, RTM_SETLINK } from "./netlink.ts";

// <linux/if.h>, <linux/if_link.h>
export const IFF_UP = 0x1, IFF_LOOPBACK = 0x8, IFF_LOWER_UP = 0x10000;
export const IFLA_ADDRESS = 1, IFLA_IFNAME = 3, IFLA_MTU = 4, IFLA_OPERSTATE = 16, IFLA_AF_SPEC = 26, IFLA_INET6_TOKEN = 7;
export const OPERSTATES = ["unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up"];

export interface Link {
  index: number;
  name: string;
  flags: number;
  type: number;
  mac: Uint8Array;
  operstate: string;
  mtu: number;
}

function ifinfomsg(index: number, flags = 0, change = 0): Uint8Array {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  b[0] = AF_UNSPEC;
  dv.setInt32(4, index, true);
  dv.setUint32(8, flags, true);
  dv.setUint32(12, change, true);
  return b;
}

export function parseLink(m: NlMsg): Link {
  const dv = new DataView(m.body.buffer, m.body.byteOffset, m.body.byteLength);
  const a = parseAttrs(m.body, 16);
  const op = a.get(IFLA_OPERSTATE);
  const mtu = a.get(IFLA_MTU);
  return {
    index: dv.getInt32(4, true),
    type: dv.getUint16(2, true),
    flags: dv.getUint32(8, true),
    name: cstr(a.get(IFLA_IFNAME) ?? new Uint8Array()),
    mac: a.get(IFLA_ADDRESS)?.slice() ?? new Uint8Array(),
    operstate: op ? (OPERSTATES[op[0]!] ?? String(op[0])) : "unknown",
    mtu: mtu ? new DataView(mtu.buffer, mtu.byteOffset).getUint32(0, true) : 0,
  };
}

export function listLinks(nl: Rtnl): Link[] {
  return nl.request(RTM_GETLINK, NLM_F_DUMP, ifinfomsg(0), undefined, "dump links").filter((m) => m.type === RTM_NEWLINK).map(parseLink);
}

export function setLinkUp(nl: Rtnl, link: { index: number; name: string }): void {
  nl.request(RTM_NEWLINK, 0, ifinfomsg(link.index, IFF_UP, IFF_UP), undefined, `set link ${link.name} up`);
}

/**
 * Sets the interface's IPv6 token (RFC 7136-style tokenized interface identifier): SLAAC then builds its
 * addresses from these low 64 bits instead of the MAC's EUI-64, the kernel solicits an RA at once (when the
 * link-local has passed DAD) and keeps refreshing the new address from RAs like any SLAAC address.
 * RTM_SETLINK + IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_TOKEN (16 bytes) } }, as `ip token set` sends it.
 */
export function setIpv6Token(nl: Rtnl, link: { index: number; name: string }, token: Uint8Array): void {
  const nest = (type: number, inner: Attrs): Attrs => {
    const len = inner.parts.reduce((a, p) => a + p.length, 0);
    const body = new Uint8Array(len);
    let o = 0;
    for (const p of inner.parts) {
      body.set(p, o);
      o += p.length;
    }
    return new Attrs().add(type, body);
  };
  const at = nest(IFLA_AF_SPEC, nest(AF_INET6, new Attrs().add(IFLA_INET6_TOKEN, token)));
  nl.request(RTM_SETLINK, 0, ifinfomsg(link.index), at, `set IPv6 token of ${link.name}`);
}

/** Carrier is IFF_LOWER_UP (the driver's link state), not IFF_UP (ours). */
export const hasCarrier = (l: Link): boolean => (l.flags & IFF_LOWER_UP) !== 0;

export const formatMac = (m: Uint8Array): string => Array.from(m, (x) => x.toString(16).padStart(2, "0")).join(":");
