// The network phase (DESIGN §4): pick the interface, bring it up, wait for carrier, then DHCPv4, SLAAC and
// the yggdrasil setup in parallel, until "online" for MAN8S_NETWORK or MAN8S_NETWORK_TIMEOUT. Every wait is
// driven by rtnetlink events (subscribed before the first dump, so nothing is missed), never by polling.
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { networkSettings, type NetMode } from "../common/settings.ts";
import { AF_INET, AF_INET6 } from "../common/libc-net.ts";
import { ExitError } from "../common/log.ts";
import { listAddresses } from "./address.ts";
import { formatIPv4, formatIPv6 } from "./addrmath.ts";
import { Dhcp4Client, type Lease, type LeaseEvent } from "./dhcp4.ts";
import { subscribe } from "./events.ts";
import { hasCarrier, IFF_LOOPBACK, type Link, listLinks, setLinkUp } from "./link.ts";
import { RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE, RTMGRP_LINK, Rtnl } from "./netlink.ts";
import { pinDefaultSource, slaacState, type SlaacState } from "./slaac.ts";
import { applyYgg, type YggConfig, yggConfigFromEnv, yggMissing } from "./yggdrasil.ts";

export interface NetResult {
  iface: string;
  addresses: { ipv4?: string; ula?: string; yggdrasil?: string };
  /** ms per phase; `*_at` entries are ms since the link was set up (for comparing with kernel events) */
  timings: Record<string, number>;
  lease?: { address: string; server: string; router?: string; dns: string[]; domain?: string; leaseTime: number; t1: number; t2: number; obtained: string; event: LeaseEvent };
}

export type { NetMode };

export interface NetConfig {
  mode: NetMode;
  timeoutMs: number;
  iface?: string;
  ygg?: YggConfig;
  resolvConf: string;
  stateFile: string;
  hostname?: string;
  checkTargets: string[];
}

/** Validates the env; throws ExitError(65) naming the variable. */
export function netConfigFromEnv(env: Record<string, string | undefined>): NetConfig {
  const { mode, timeoutMs, iface } = networkSettings(env);
  const ygg = mode === "v4" || mode === "none" ? undefined : yggConfigFromEnv(env);
  const checkTargets = (env.MAN8S_CHECK_TARGETS ?? "").split(/[\s,]+/).filter(Boolean);
  const name = env.MAN8S_CONTAINER_NAME || undefined;
  return {
    mode,
    timeoutMs,
    ...(iface ? { iface } : {}),
    ...(ygg ? { ygg } : {}),
    resolvConf: env.MAN8S_RESOLV_CONF || "/etc/resolv.conf",
    stateFile: env.MAN8S_NETCTL_STATE || "/run/man8s/netctl.json",
    ...(name || safeHostname() ? { hostname: name ?? safeHostname() } : {}),
    checkTargets,
  };
}

function safeHostname(): string | undefined {
  try {
    return hostname() || undefined;
  } catch {
    return undefined;
  }
}

/** A one-shot "something changed" signal: waiters wake on the next kick or after a timeout. */
class Wakeup {
  private waiters: (() => void)[] = [];
  kick(): void {
    for (const w of this.waiters.splice(0)) w();
  }
  wait(ms: number): Promise<void> {
    return new Promise((res) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        res();
      }, Math.max(0, ms));
      const done = () => {
        clearTimeout(t);
        res();
      };
      this.waiters.push(done);
    });
  }
}

function pickLink(links: Link[], want?: string): Link | undefined {
  if (want) return links.find((l) => l.name === want);
  return links.filter((l) => !(l.flags & IFF_LOOPBACK)).sort((a, b) => a.index - b.index)[0];
}

function leaseSummary(l: Lease, ev: LeaseEvent): NonNullable<NetResult["lease"]> {
  return {
    address: `${formatIPv4(l.address)}/${l.prefixlen}`,
    server: formatIPv4(l.serverId),
    ...(l.routers[0] ? { router: formatIPv4(l.routers[0]) } : {}),
    dns: l.dns.map(formatIPv4),
    ...(l.domain ? { domain: l.domain } : {}),
    leaseTime: l.leaseTime,
    t1: l.t1,
    t2: l.t2,
    obtained: new Date(l.obtainedWall).toISOString(),
    event: ev,
  };
}

function writeState(path: string, r: NetResult): void {
  try {
    mkdirSync(path.slice(0, path.lastIndexOf("/")) || "/", { recursive: true });
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify({ ...r, updated: new Date().toISOString() }, null, 1)}\n`);
    renameSync(tmp, path);
  } catch {
    // status is a convenience; a read-only /run must not fail the network
  }
}

export async function bringUp(
  env: Record<string, string | undefined>,
  opts: {
    log: (msg: string) => void;
    onChange?: (r: NetResult) => void;
    /**
     * For an init that execs another one (systemd, s6) after the network phase: the DHCP client cannot
     * outlive the exec, so the lease address is added without a lifetime instead of vanishing at expiry.
     */
    keepAddress?: boolean;
  },
): Promise<{ result: NetResult; stop: () => Promise<void> }> {
  const t0 = performance.now();
  const cfg = netConfigFromEnv(env);
  const timings: Record<string, number> = { env: performance.now() - t0 };
  const log = opts.log;
  if (cfg.mode === "none") {
    return { result: { iface: cfg.iface ?? "", addresses: {}, timings }, stop: async () => {} };
  }
  const deadline = t0 + cfg.timeoutMs;
  const nl = new Rtnl();
  const wake = new Wakeup();
  let eventAt = 0;
  // subscribe first, dump after: an event between the two cannot be lost
  const sub = subscribe(
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE,
    () => {
      eventAt = performance.now();
      wake.kick();
    },
    (why) => {
      log(`netctl: ${why}; re-reading the state`);
      eventAt = performance.now();
      wake.kick();
    },
  );
  let dhcp: Dhcp4Client | undefined;
  let online = false;
  const result: NetResult = { iface: "", addresses: {}, timings };
  const stop = async (): Promise<void> => {
    sub.close();
    await dhcp?.stop();
    nl.close();
  };
  const timeLeft = () => deadline - performance.now();
  const fail = (what: string): never => {
    throw new ExitError(69, `network not online after ${(cfg.timeoutMs / 1000).toFixed(1)} s: ${what}`);
  };

  try {
    // 1. the interface (it may appear late, e.g. a veth moved in after we started)
    let link: Link | undefined;
    for (;;) {
      link = pickLink(listLinks(nl), cfg.iface);
      if (link) break;
      if (timeLeft() <= 0) fail(cfg.iface ? `interface ${cfg.iface} (MAN8S_HOST_IFACE) never appeared` : "no non-loopback interface");
      await wake.wait(timeLeft());
    }
    result.iface = link.name;
    const lo = listLinks(nl).find((l) => l.flags & IFF_LOOPBACK);
    if (lo) setLinkUp(nl, lo);
    setLinkUp(nl, link);
    const tLink = performance.now();
    timings.link = tLink - t0 - timings.env!;
    log(`netctl: ${link.name} up (index ${link.index})`);

    // 2. carrier
    for (;;) {
      link = listLinks(nl).find((l) => l.index === link!.index);
      if (!link) fail(`interface ${result.iface} disappeared`);
      if (hasCarrier(link!)) break;
      if (timeLeft() <= 0) fail(`no carrier on ${result.iface}`);
      await wake.wait(timeLeft());
    }
    const L = link!;
    const tCarrier = performance.now();
    timings.carrier = tCarrier - tLink;
    timings.carrier_at = tCarrier - tLink;

    const wantV4 = cfg.mode === "dual" || cfg.mode === "v4";
    const wantV6 = cfg.mode === "dual" || cfg.mode === "v6";

    // 3. DHCPv4 runs on its own timers; its lease events also wake the wait loop
    if (wantV4) {
      dhcp = new Dhcp4Client({
        nl,
        link: L,
        ...(cfg.hostname ? { hostname: cfg.hostname } : {}),
        resolvConf: cfg.resolvConf,
        log,
        ...(opts.keepAddress ? { keepAddress: true } : {}),
        onLease: (ev, lease) => {
          if (lease) {
            result.addresses.ipv4 = `${formatIPv4(lease.address)}/${lease.prefixlen}`;
            result.lease = leaseSummary(lease, ev);
          } else {
            delete result.addresses.ipv4;
            if (result.lease) result.lease.event = ev;
          }
          writeState(cfg.stateFile, result);
          wake.kick();
          if (online) opts.onChange?.(result);
        },
      });
      await dhcp.start();
    }

    // 4. yggdrasil: nodad, so it can be done at once and its routes need no DAD wait
    if (wantV6 && cfg.ygg) {
      const ty = performance.now();
      for (const c of applyYgg(nl, L.index, cfg.ygg)) log(`netctl: ${c}`);
      timings.yggdrasil = performance.now() - ty;
      result.addresses.yggdrasil = formatIPv6(cfg.ygg.address);
    } else if (wantV6) {
      log("netctl: no MAN8S_YGGDRASIL_ADDRESS or MAN8S_YGGDRASIL_PREFIX: skipping yggdrasil");
    }

    // 5. wait until online
    let slaac: SlaacState = { state: "none" };
    // a SLAAC address that was tentative and then vanished: the kernel deletes autoconf addresses whose DAD failed
    let vanished: string | undefined;
    let lastTentative: string | undefined;
    let pinned = false;
    for (;;) {
      const v4ok = !wantV4 || (dhcp!.state === "bound" && !!dhcp!.lease);
      if (wantV4 && v4ok && timings.dhcp4 === undefined) {
        timings.dhcp4 = performance.now() - tCarrier;
        timings.dhcp4_ack_at = (dhcp!.firstAckAt ?? performance.now()) - tLink;
      }
      let v6ok = true;
      if (wantV6) {
        slaac = slaacState(listAddresses(nl, AF_INET6, L.index), L.index, cfg.ygg?.subnet);
        v6ok = slaac.state === "ready";
        if (slaac.state === "tentative") lastTentative = slaac.addr.address;
        else if (slaac.state === "none" && lastTentative) {
          vanished = lastTentative;
          lastTentative = undefined;
        }
        if (slaac.state === "ready") {
          if (timings.slaac === undefined) {
            timings.slaac = performance.now() - tCarrier;
            timings.slaac_ready_at = (eventAt || performance.now()) - tLink;
          }
          result.addresses.ula = `${slaac.addr.address}/${slaac.addr.prefixlen}`;
          if (!pinned) {
            pinned = pinDefaultSource(nl, L.index, slaac.addr);
            if (pinned) log(`netctl: IPv6 default route source pinned to ${slaac.addr.address}`);
          }
        }
      }
      const yggMiss = wantV6 && cfg.ygg ? yggMissing(nl, L.index, cfg.ygg) : [];
      if (yggMiss.length && cfg.ygg) {
        // someone removed part of it (or a first attempt raced): put it back
        for (const c of applyYgg(nl, L.index, cfg.ygg)) log(`netctl: re-applied ${c}`);
      }
      if (v4ok && v6ok && !yggMiss.length) break;
      if (timeLeft() <= 0) {
        const why: string[] = [];
        if (wantV4 && !v4ok) {
          const s = dhcp!.stats;
          why.push(s.offers === 0 ? `no DHCP offer on ${L.name} (${s.discovers} DISCOVERs sent)` : `no DHCP ACK on ${L.name} (${s.offers} offers, ${s.requests} REQUESTs, ${s.naks} NAKs)`);
        }
        if (wantV6 && !v6ok) {
          if (slaac.state === "none" && vanished) why.push(`DAD failed for ${vanished} on ${L.name} (duplicate address; the kernel removed it)`);
          else if (slaac.state === "none") why.push(`no RA: no SLAAC address on ${L.name}`);
          else if (slaac.state === "dadfailed") why.push(`DAD failed for ${slaac.addr.address} on ${L.name}`);
          else if (slaac.state === "tentative") why.push(`SLAAC address ${slaac.addr.address} still tentative (DAD not finished)`);
        }
        if (yggMiss.length) why.push(`yggdrasil setup incomplete: ${yggMiss.join(", ")}`);
        fail(why.join("; "));
      }
      await wake.wait(timeLeft());
    }
    online = true;
    const tOnline = performance.now();
    timings.online_at = tOnline - tLink;
    timings.total = tOnline - t0;
    if (wantV6 && !pinned) log("netctl: no router in the RA: IPv6 default route source not pinned");
    sub.close();
    const v4 = listAddresses(nl, AF_INET, L.index)[0];
    if (v4 && !result.addresses.ipv4) result.addresses.ipv4 = `${v4.address}/${v4.prefixlen}`;
    if (cfg.checkTargets.length) {
      const tc = performance.now();
      const { runChecks } = await import("./check.ts");
      const failed = await runChecks(cfg.checkTargets, { timeoutMs: Math.max(2000, timeLeft()), log, ...(cfg.ygg ? { yggPrefix: cfg.ygg.subnet } : {}) });
      timings.checks = performance.now() - tc;
      if (failed.length) throw new ExitError(69, `network checks failed (MAN8S_CHECK_TARGETS): ${failed.join("; ")}`);
    }
    log(
      `netctl: online in ${timings.total.toFixed(0)} ms: ${[result.addresses.ipv4 && `ipv4 ${result.addresses.ipv4}`, result.addresses.ula && `ula ${result.addresses.ula}`, result.addresses.yggdrasil && `ygg ${result.addresses.yggdrasil}`].filter(Boolean).join(", ")}`,
    );
    writeState(cfg.stateFile, result);
    return { result, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
