// SLAAC: the kernel does the RA processing and DAD; we judge its result from address dumps, and pin the
// source of the IPv6 default route to the SLAAC (ULA) address so the ygg address is never chosen for
// ordinary traffic (the original init did the same with `ip -6 route change default ... src`).
//
// Fast start (docs/network.md): before link up we turn on optimistic DAD (RFC 4429) for the interface, so the
// kernel adds the SLAAC address as "optimistic" and lets it be used while DAD runs; we count it as online at
// once. If DAD then fails, the kernel deletes it; SlaacTracker reports that, and the owner picks a new
// random interface identifier (the kernel's IPv6 token), up to MAX_NEW_IDS times.
import { writeFileSync } from "node:fs";
import { AF_INET6 } from "../common/libc-net.ts";
import { type Addr, IFA_F_DADFAILED, IFA_F_OPTIMISTIC, IFA_F_PERMANENT, IFA_F_TENTATIVE, RT_SCOPE_UNIVERSE } from "./address.ts";
import { formatIPv6, inPrefix6, parseIPv6, type Prefix6 } from "../common/net/addrmath.ts";
import type { Rtnl } from "./netlink.ts";
import { addRoute, listRoutes, RT_TABLE_MAIN, RTPROT_RA, RTPROT_STATIC } from "./route.ts";

export type SlaacState =
  | { state: "none" }
  | { state: "tentative"; addr: Addr }
  | { state: "optimistic"; addr: Addr }
  | { state: "dadfailed"; addr: Addr }
  | { state: "ready"; addr: Addr };

/** Metric of our pinned default route: below the kernel's RA route (1024), so ours wins and the RA's stays intact. */
export const PINNED_DEFAULT_METRIC = 1000;

/** How many new interface identifiers we try after DAD failures before giving up on a ULA. */
export const MAX_NEW_IDS = 3;

/** SLAAC addresses are global-scope, not PERMANENT (the kernel made them), and not our ygg /64. */
const isSlaac = (a: Addr, index: number, ygg?: Prefix6): boolean =>
  a.family === AF_INET6 && a.index === index && a.scope === RT_SCOPE_UNIVERSE && !(a.flags & IFA_F_PERMANENT) && !(ygg && inPrefix6(a.bytes, ygg));

export function slaacState(addrs: Addr[], index: number, ygg?: Prefix6, ignore: ReadonlySet<string> = new Set()): SlaacState {
  const mine = addrs.filter((a) => isSlaac(a, index, ygg) && !ignore.has(a.address));
  const ready = mine.find((a) => !(a.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)));
  if (ready) return { state: "ready", addr: ready };
  const optimistic = mine.find((a) => a.flags & IFA_F_OPTIMISTIC && !(a.flags & IFA_F_DADFAILED));
  if (optimistic) return { state: "optimistic", addr: optimistic };
  const failed = mine.find((a) => a.flags & IFA_F_DADFAILED);
  if (failed) return { state: "dadfailed", addr: failed };
  const t = mine[0];
  return t ? { state: "tentative", addr: t } : { state: "none" };
}

export type SlaacPhase = "waiting" | "tentative" | "optimistic" | "confirmed";
export type SlaacEvent = { kind: "usable"; addr: Addr } | { kind: "confirmed"; addr: Addr } | { kind: "dadfailed"; address: string };

/**
 * The SLAAC address's DAD, as an explicit state machine fed with address dumps:
 *   waiting -> tentative (DAD running, not usable) -> confirmed
 *   waiting -> optimistic (DAD running, usable: RFC 4429) -> confirmed
 *   tentative | optimistic -> waiting, with a `dadfailed` event, when the address is deleted or flagged
 *   confirmed -> waiting when the address goes away for another reason (RA lifetime 0): not a DAD failure
 * A duplicate can be detected within a millisecond of the address's creation (the optimistic address's DAD
 * probe goes out at once), before any dump shows it: so the RTM_DELADDR events are fed in too, and a SLAAC
 * address deleted while still tentative counts as a DAD failure even if no dump ever showed it.
 */
export class SlaacTracker {
  phase: SlaacPhase = "waiting";
  addr: Addr | undefined;
  /** addresses whose DAD failed, oldest first (never counted again) */
  readonly failed = new Set<string>();

  constructor(
    private readonly index: number,
    private readonly ygg?: Prefix6,
  ) {}

  get usable(): boolean {
    return this.phase === "optimistic" || this.phase === "confirmed";
  }

  observe(addrs: Addr[], deleted: Addr[] = []): SlaacEvent[] {
    const ev: SlaacEvent[] = [];
    for (const d of deleted) {
      if (!isSlaac(d, this.index, this.ygg) || !(d.flags & IFA_F_TENTATIVE) || this.failed.has(d.address)) continue;
      if (addrs.some((a) => a.index === this.index && a.address === d.address)) continue; // deleted and added again
      this.failed.add(d.address);
      ev.push({ kind: "dadfailed", address: d.address });
      if (this.addr?.address === d.address) {
        this.phase = "waiting";
        this.addr = undefined;
      }
    }
    const cur = this.addr;
    if (cur && (this.phase === "tentative" || this.phase === "optimistic")) {
      const now = addrs.find((a) => a.family === AF_INET6 && a.index === this.index && a.address === cur.address);
      if (!now || now.flags & IFA_F_DADFAILED) {
        this.failed.add(cur.address);
        ev.push({ kind: "dadfailed", address: cur.address });
        this.phase = "waiting";
        this.addr = undefined;
      }
    }
    const s = slaacState(addrs, this.index, this.ygg, this.failed);
    switch (s.state) {
      case "ready":
        if (this.phase !== "confirmed" || this.addr?.address !== s.addr.address) {
          if (this.phase !== "optimistic" || this.addr?.address !== s.addr.address) ev.push({ kind: "usable", addr: s.addr });
          ev.push({ kind: "confirmed", addr: s.addr });
        }
        this.phase = "confirmed";
        this.addr = s.addr;
        break;
      case "optimistic":
        if (this.phase !== "optimistic" || this.addr?.address !== s.addr.address) ev.push({ kind: "usable", addr: s.addr });
        this.phase = "optimistic";
        this.addr = s.addr;
        break;
      case "tentative":
        this.phase = "tentative";
        this.addr = s.addr;
        break;
      case "dadfailed":
        // flagged but kept (the kernel keeps only PERMANENT ones, which we do not count; defensive)
        this.failed.add(s.addr.address);
        ev.push({ kind: "dadfailed", address: s.addr.address });
        this.phase = "waiting";
        this.addr = undefined;
        break;
      case "none":
        if (this.phase === "confirmed") {
          this.phase = "waiting";
          this.addr = undefined;
        }
        break;
    }
    return ev;
  }
}

/**
 * Per-interface sysctls of the fast start, written before link up. The container has its own network
 * namespace, so /proc/sys/net is its own: nothing of the host changes. Returns what could not be written.
 *   optimistic_dad=1: SLAAC (and link-local) addresses start "optimistic" when the RA carries the router's
 *     link-layer address (RFC 4429 §3.3), so they can be used while DAD runs;
 *   use_optimistic=1: source address selection may pick them (else only an explicit bind would).
 */
export function enableOptimisticDad(ifname: string): string[] {
  const errors: string[] = [];
  if (!/^[^\s/]{1,15}$/.test(ifname) || ifname === "." || ifname === "..") return [`bad interface name '${ifname}'`];
  for (const key of ["optimistic_dad", "use_optimistic"]) {
    const path = `/proc/sys/net/ipv6/conf/${ifname}/${key}`;
    try {
      writeFileSync(path, "1\n");
    } catch (e) {
      errors.push(`${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  return errors;
}

/** A random interface identifier (the low 64 bits) for a new token; the u/l bit clear ("not globally unique"). */
export function randomInterfaceId(): Uint8Array {
  const t = new Uint8Array(16);
  crypto.getRandomValues(t.subarray(8));
  t[8]! &= ~0x02;
  // all-zero and the subnet-router anycast are reserved (RFC 4291 §2.6.1)
  if (t.subarray(8).every((x) => x === 0)) t[15] = 1;
  return t;
}

export const formatToken = (t: Uint8Array): string => formatIPv6(t);

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
