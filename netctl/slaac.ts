// SLAAC: the kernel does the RA processing and DAD; we only judge its result from address dumps, and pin
// the source of the IPv6 default route to the SLAAC (ULA) address so the ygg address is never chosen
// for ordinary traffic (the original init did the same with `ip -6 route change default ... src`).
import { AF_INET6 } from "../common/libc-net.ts";
import { type Addr, IFA_F_DADFAILED, IFA_F_PERMANENT, IFA_F_TENTATIVE, RT_SCOPE_UNIVERSE } from "./address.ts";
import { inPrefix6, parseIPv6, type Prefix6 } from "./addrmath.ts";
import type { Rtnl } from "./netlink.ts";
import { addRoute, listRoutes, RT_TABLE_MAIN, RTPROT_RA, RTPROT_STATIC } from "./route.ts";

export type SlaacState = { state: "none" } | { state: "tentative"; addr: Addr } | { state: "dadfailed"; addr: Addr } | { state: "ready"; addr: Addr };

/** Metric of our pinned default route: below the kernel's RA route (1024), so ours wins and the RA's stays intact. */
export const PINNED_DEFAULT_METRIC = 1000;

/** SLAAC addresses are global-scope, not PERMANENT (the kernel made them), and not our ygg /64. */
export function slaacState(addrs: Addr[], index: number, ygg?: Prefix6): SlaacState {
  const mine = addrs.filter((a) => a.family === AF_INET6 && a.index === index && a.scope === RT_SCOPE_UNIVERSE && !(a.flags & IFA_F_PERMANENT) && !(ygg && inPrefix6(a.bytes, ygg)));
  const ready = mine.find((a) => !(a.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)));
  if (ready) return { state: "ready", addr: ready };
  const failed = mine.find((a) => a.flags & IFA_F_DADFAILED);
  if (failed) return { state: "dadfailed", addr: failed };
  const t = mine[0];
  return t ? { state: "tentative", addr: t } : { state: "none" };
}

/** The router's default route from the RA, if the kernel has one on this link. */
export function raDefaultRoute(nl: Rtnl, index: number): { gateway: string; metric: number } | undefined {
  const r = listRoutes(nl, AF_INET6, RT_TABLE_MAIN).find((r) => r.dstLen === 0 && r.oif === index && r.gateway && r.protocol === RTPROT_RA);
  return r?.gateway ? { gateway: r.gateway, metric: r.metric ?? 1024 } : undefined;
}

/** Adds (or refreshes) `default via GW dev IF src ADDR metric 1000`; returns false when there is no RA router. */
export function pinDefaultSource(nl: Rtnl, index: number, src: Addr): boolean {
  const ra = raDefaultRoute(nl, index);
  if (!ra) return false;
  addRoute(nl, { dst: new Uint8Array(16), dstLen: 0, gateway: parseIPv6(ra.gateway)!, oif: index, prefsrc: src.bytes, metric: PINNED_DEFAULT_METRIC, protocol: RTPROT_STATIC });
  return true;
}
