// Routes over rtnetlink: add/replace/delete/dump, any table (RTA_TABLE carries ids >= 256).
// struct rtmsg (<linux/rtnetlink.h>), 12 bytes: u8 family, dst_len, src_len, tos, table, protocol, scope, type; u32 flags.
import { AF_INET, AF_INET6 } from "../common/libc-net.ts";
import { formatIP } from "../common/net/addrmath.ts";
import { Attrs, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, parseAttrs, type NlMsg, type Rtnl, RTM_DELROUTE, RTM_GETROUTE, RTM_NEWROUTE, u32At } from "./netlink.ts";

export const RTA_DST = 1, RTA_OIF = 4, RTA_GATEWAY = 5, RTA_PRIORITY = 6, RTA_PREFSRC = 7, RTA_TABLE = 15;
export const RTPROT_KERNEL = 2, RTPROT_BOOT = 3, RTPROT_STATIC = 4, RTPROT_RA = 9, RTPROT_DHCP = 16;
export const RT_TABLE_MAIN = 254, RT_TABLE_LOCAL = 255, RT_TABLE_COMPAT = 252;
export const RT_SCOPE_UNIVERSE = 0, RT_SCOPE_LINK = 253;
export const RTN_UNICAST = 1;

export interface Route {
  family: number;
  dst: string;
  dstLen: number;
  gateway?: string;
  oif?: number;
  prefsrc?: string;
  table: number;
  metric?: number;
  protocol: number;
  scope: number;
  type: number;
}

export interface RouteSpec {
  dst: Uint8Array; // network bytes (4 or 16)
  dstLen: number;
  gateway?: Uint8Array;
  oif: number;
  prefsrc?: Uint8Array;
  table?: number;
  metric?: number;
  protocol?: number;
  scope?: number;
}

function rtmsg(family: number, dstLen: number, table: number, protocol: number, scope: number, type: number): Uint8Array {
  const b = new Uint8Array(12);
  b[0] = family;
  b[1] = dstLen;
  b[4] = table < 256 ? table : RT_TABLE_COMPAT;
  b[5] = protocol;
  b[6] = scope;
  b[7] = type;
  return b;
}

export function describeRoute(s: RouteSpec): string {
  const table = s.table ?? RT_TABLE_MAIN;
  return `${formatIP(s.dst)}/${s.dstLen}${s.gateway ? ` via ${formatIP(s.gateway)}` : ""} dev #${s.oif}${s.prefsrc ? ` src ${formatIP(s.prefsrc)}` : ""}${table !== RT_TABLE_MAIN ? ` table ${table}` : ""}${s.metric !== undefined ? ` metric ${s.metric}` : ""}`;
}

function attrsFor(s: RouteSpec): Attrs {
  const table = s.table ?? RT_TABLE_MAIN;
  const at = new Attrs();
  if (s.dstLen > 0) at.add(RTA_DST, s.dst);
  at.u32(RTA_TABLE, table).u32(RTA_OIF, s.oif);
  if (s.gateway) at.add(RTA_GATEWAY, s.gateway);
  if (s.prefsrc) at.add(RTA_PREFSRC, s.prefsrc);
  if (s.metric !== undefined) at.u32(RTA_PRIORITY, s.metric);
  return at;
}

/** Adds a route; with `replace` an existing route with the same key (dst, table, metric) is overwritten. */
export function addRoute(nl: Rtnl, s: RouteSpec, replace = true): void {
  const family = s.dst.length === 4 ? AF_INET : AF_INET6;
  const scope = s.scope ?? (s.gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK);
  // IPv6 routes are always universe scope in the kernel's eyes; link scope there is refused for some kinds
  const hdr = rtmsg(family, s.dstLen, s.table ?? RT_TABLE_MAIN, s.protocol ?? RTPROT_STATIC, family === AF_INET6 ? RT_SCOPE_UNIVERSE : scope, RTN_UNICAST);
  nl.request(RTM_NEWROUTE, NLM_F_CREATE | (replace ? NLM_F_REPLACE : NLM_F_EXCL), hdr, attrsFor(s), `add route ${describeRoute(s)}`);
}

export function delRoute(nl: Rtnl, s: RouteSpec): void {
  const family = s.dst.length === 4 ? AF_INET : AF_INET6;
  const hdr = rtmsg(family, s.dstLen, s.table ?? RT_TABLE_MAIN, 0, 0, 0);
  nl.request(RTM_DELROUTE, 0, hdr, attrsFor(s), `delete route ${describeRoute(s)}`);
}

export function parseRoute(m: NlMsg): Route {
  const b = m.body;
  const a = parseAttrs(b, 12);
  const family = b[0]!;
  const zero = new Uint8Array(family === AF_INET ? 4 : 16);
  const t = a.get(RTA_TABLE);
  const gw = a.get(RTA_GATEWAY), src = a.get(RTA_PREFSRC), oif = a.get(RTA_OIF), prio = a.get(RTA_PRIORITY);
  return {
    family,
    dstLen: b[1]!,
    dst: formatIP(a.get(RTA_DST) ?? zero),
    table: t ? u32At(t) : b[4]!,
    protocol: b[5]!,
    scope: b[6]!,
    type: b[7]!,
    ...(gw ? { gateway: formatIP(gw) } : {}),
    ...(src ? { prefsrc: formatIP(src) } : {}),
    ...(oif ? { oif: u32At(oif) } : {}),
    ...(prio ? { metric: u32At(prio) } : {}),
  };
}

export function listRoutes(nl: Rtnl, family: number, table?: number): Route[] {
  const hdr = rtmsg(family, 0, 0, 0, 0, 0);
  return nl
    .request(RTM_GETROUTE, NLM_F_DUMP, hdr, undefined, "dump routes")
    .filter((m) => m.type === RTM_NEWROUTE)
    .map(parseRoute)
    .filter((r) => table === undefined || r.table === table);
}
