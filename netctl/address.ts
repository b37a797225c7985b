// Addresses over rtnetlink: add/replace with lifetimes and flags, delete, dump.
// struct ifaddrmsg (<linux/if_addr.h>), 8 bytes: u8 family, u8 prefixlen, u8 flags, u8 scope, u32 index.
// struct ifa_cacheinfo: u32 ifa_prefered, u32 ifa_valid, u32 cstamp, u32 tstamp.
import { AF_INET, AF_INET6 } from "../common/libc-net.ts";
import { formatIP } from "../common/net/addrmath.ts";
import { Attrs, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, parseAttrs, type NlMsg, type Rtnl, RTM_DELADDR, RTM_GETADDR, RTM_NEWADDR, u32At } from "./netlink.ts";

export const IFA_ADDRESS = 1, IFA_LOCAL = 2, IFA_BROADCAST = 4, IFA_CACHEINFO = 6, IFA_FLAGS = 8;
export const IFA_F_NODAD = 0x02, IFA_F_OPTIMISTIC = 0x04, IFA_F_DADFAILED = 0x08, IFA_F_DEPRECATED = 0x20;
export const IFA_F_TENTATIVE = 0x40, IFA_F_PERMANENT = 0x80, IFA_F_NOPREFIXROUTE = 0x200;
export const RT_SCOPE_UNIVERSE = 0, RT_SCOPE_LINK = 253, RT_SCOPE_HOST = 254;
/** ifa_cacheinfo lifetime meaning "forever" */
export const INFINITY_LIFE = 0xffffffff;

export interface Addr {
  family: number;
  index: number;
  prefixlen: number;
  flags: number;
  scope: number;
  bytes: Uint8Array;
  address: string;
  valid: number;
  preferred: number;
}

function ifaddrmsg(family: number, prefixlen: number, index: number, scope = RT_SCOPE_UNIVERSE): Uint8Array {
  const b = new Uint8Array(8);
  b[0] = family;
  b[1] = prefixlen;
  b[3] = scope;
  new DataView(b.buffer).setUint32(4, index, true);
  return b;
}

export function parseAddr(m: NlMsg): Addr {
  const b = m.body;
  const a = parseAttrs(b, 8);
  const bytes = (a.get(IFA_LOCAL) ?? a.get(IFA_ADDRESS) ?? new Uint8Array(b[0] === AF_INET ? 4 : 16)).slice();
  const flagsAttr = a.get(IFA_FLAGS);
  const ci = a.get(IFA_CACHEINFO);
  return {
    family: b[0]!,
    prefixlen: b[1]!,
    flags: flagsAttr ? u32At(flagsAttr) : b[2]!,
    scope: b[3]!,
    index: u32At(b, 4),
    bytes,
    address: formatIP(bytes),
    preferred: ci ? u32At(ci, 0) : INFINITY_LIFE,
    valid: ci ? u32At(ci, 4) : INFINITY_LIFE,
  };
}

export interface AddrSpec {
  index: number;
  bytes: Uint8Array;
  prefixlen: number;
  flags?: number;
  /** seconds; omitted = forever */
  valid?: number;
  preferred?: number;
  broadcast?: Uint8Array;
  /** replace an existing address (refresh lifetimes) instead of failing with EEXIST */
  replace?: boolean;
}

export function addAddress(nl: Rtnl, s: AddrSpec, what?: string): void {
  const family = s.bytes.length === 4 ? AF_INET : AF_INET6;
  const at = new Attrs().add(IFA_LOCAL, s.bytes).add(IFA_ADDRESS, s.bytes);
  if (s.broadcast) at.add(IFA_BROADCAST, s.broadcast);
  if (s.valid !== undefined) {
    const ci = new Uint8Array(16);
    const dv = new DataView(ci.buffer);
    dv.setUint32(0, s.preferred ?? s.valid, true);
    dv.setUint32(4, s.valid, true);
    at.add(IFA_CACHEINFO, ci);
  }
  if (s.flags) at.u32(IFA_FLAGS, s.flags);
  nl.request(RTM_NEWADDR, NLM_F_CREATE | (s.replace ? NLM_F_REPLACE : NLM_F_EXCL), ifaddrmsg(family, s.prefixlen, s.index), at, what ?? `add address ${formatIP(s.bytes)}/${s.prefixlen}`);
}

export function delAddress(nl: Rtnl, s: { index: number; bytes: Uint8Array; prefixlen: number }): void {
  const family = s.bytes.length === 4 ? AF_INET : AF_INET6;
  nl.request(RTM_DELADDR, 0, ifaddrmsg(family, s.prefixlen, s.index), new Attrs().add(IFA_LOCAL, s.bytes).add(IFA_ADDRESS, s.bytes), `delete address ${formatIP(s.bytes)}/${s.prefixlen}`);
}

export function listAddresses(nl: Rtnl, family = 0, index = 0): Addr[] {
  return nl
    .request(RTM_GETADDR, NLM_F_DUMP, ifaddrmsg(family, 0, 0), undefined, "dump addresses")
    .filter((m) => m.type === RTM_NEWADDR)
    .map(parseAddr)
    .filter((a) => !index || a.index === index);
}

export function describeFlags(f: number): string[] {
  const names: [number, string][] = [
    [IFA_F_NODAD, "nodad"],
    [IFA_F_OPTIMISTIC, "optimistic"],
    [IFA_F_DADFAILED, "dadfailed"],
    [IFA_F_DEPRECATED, "deprecated"],
    [IFA_F_TENTATIVE, "tentative"],
    [IFA_F_PERMANENT, "permanent"],
    [IFA_F_NOPREFIXROUTE, "noprefixroute"],
  ];
  return names.filter(([b]) => f & b).map(([, n]) => n);
}
