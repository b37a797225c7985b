// The network phase (DESIGN §4): pick the interface, bring it up, wait for carrier, then DHCPv4, SLAAC and
// the yggdrasil setup in parallel, until "online" for MAN8S_NETWORK or MAN8S_NETWORK_TIMEOUT. Every wait is
// driven by rtnetlink events (subscribed before the first dump, so nothing is missed), never by polling.
// Fast start (MAN8S_NETWORK_FAST_START, default on; docs/network.md): optimistic DAD on the interface and our
// own router solicitation at carrier, so the SLAAC address is usable milliseconds after link-up.
import { mkdirSync } from "node:fs";
import { hostname } from "node:os";
import { networkSettings, type NetMode } from "../common/settings.ts";
import { EINVAL } from "../common/libc.ts";
import { AF_INET, AF_INET6 } from "../common/libc-net.ts";
import { ExitError } from "../common/log.ts";
import { setLongTimeout } from "../common/timer.ts";
import { replaceFile } from "../common/atomic-file.ts";
import { type Addr, IFA_F_PERMANENT, listAddresses, parseAddr } from "./address.ts";
import { formatIPv4, formatIPv6, inPrefix6 } from "../common/net/addrmath.ts";
import { splitCheckTargets } from "../probes/check.ts";
import { Dhcp4Client, type Lease, type LeaseEvent } from "./dhcp4.ts";
import { subscribe } from "./events.ts";
import { hasCarrier, IFF_LOOPBACK, type Link, listLinks, setIpv6Token, setLinkUp } from "./link.ts";
import { RouterSolicitor } from "./ndisc.ts";
import { RTM_DELADDR, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE, RTMGRP_LINK, NetlinkError, Rtnl } from "./netlink.ts";
import { enableOptimisticDad, formatToken, MAX_NEW_IDS, pinDefaultSource, raDefaultRoute, randomInterfaceId, type SlaacPhase, SlaacTracker } from "./slaac.ts";
import { applyYgg, type YggConfig, yggConfigFromEnv, yggMissing } from "./yggdrasil.ts";

export interface NetResult {
  iface: string;
  addresses: { ipv4?: string; ula?: string; yggdrasil?: string };
  /** ms per phase; `*_at` entries are ms since the link was set up (for comparing with kernel events) */
  timings: Record<string, number>;
  /** the SLAAC address's DAD (dual, v6): see SlaacTracker */
  slaac?: {
    phase: SlaacPhase | "gave-up";
    address?: string;
    /** addresses whose DAD failed (another node holds them), oldest first */
    dadFailed: string[];
    /** new interface identifiers (IPv6 tokens) set after DAD failures; at most MAX_NEW_IDS */
    newIdentifiers: number;
    /** our own router solicitations from :: (at most RS_MAX per burst) */
    solicitations: number;
    fastStart: boolean;
    /** the last DAD event, for onChange listeners */
    event?: "dadfailed" | "new-address" | "confirmed" | "gave-up";
  };
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
  /** optimistic DAD + our own RS at carrier (MAN8S_NETWORK_FAST_START); off = the kernel's defaults */
  fastStart: boolean;
}

/** No new SLAAC address this long after a new interface identifier: stop waiting for one. */
const NEW_ID_WAIT_MS = 10_000;
/** Hard bound on watching DAD after online (the kernel's DAD itself takes ~1 s per try). */
const DAD_WATCH_MAX_MS = 60_000;


/** Validates the env; throws ExitError(65) naming the variable. */
export function netConfigFromEnv(env: Record<string, string | undefined>): NetConfig {
  const { mode, timeoutMs, iface, fastStart } = networkSettings(env);
  const ygg = mode === "v4" || mode === "none" ? undefined : yggConfigFromEnv(env);
  const checkTargets = splitCheckTargets(env.MAN8S_CHECK_TARGETS);
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
    fastStart,
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
      // the wait lasts up to MAN8S_NETWORK_TIMEOUT, which may be longer than a plain setTimeout can wait
      const t = setLongTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        res();
      }, Math.max(0, ms));
      const done = () => {
        t.clear();
        res();
      };
      this.waiters.push(done);
    });
  }
}

/** An autoconfigured (non-permanent, global) address inside the ygg /64: an RA for the ygg prefix itself. */
function yggOnlySlaac(nl: Rtnl, index: number, ygg: YggConfig): string | undefined {
  const a = listAddresses(nl, AF_INET6, index).find((a) => a.scope === 0 && !(a.flags & IFA_F_PERMANENT) && inPrefix6(a.bytes, ygg.subnet));
  return a?.address;
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

/** netctl.json: a convenience, so a failure must not fail the network, but it is logged (once per kind of error). */
function stateWriter(path: string, log: (msg: string) => void): (r: NetResult) => void {
  let failing: string | null = null;
  return (r) => {
    let err: NodeJS.ErrnoException | null;
    try {
      mkdirSync(path.slice(0, path.lastIndexOf("/")) || "/", { recursive: true, mode: 0o755 });
      err = replaceFile(path, `${JSON.stringify({ ...r, updated: new Date().toISOString() }, null, 1)}\n`, { mode: 0o644, newestWins: true });
    } catch (e) {
      err = e as NodeJS.ErrnoException;
    }
    if (err && failing !== (err.code ?? err.message)) log(`netctl: cannot write ${path}: ${err.message}`);
    failing = err ? (err.code ?? err.message) : null;
  };
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
): Promise<{ result: NetResult; stop: () => Promise<void>; settled: Promise<void> }> {
  const t0 = performance.now();
  const cfg = netConfigFromEnv(env);
  const timings: Record<string, number> = { env: performance.now() - t0 };
  const log = opts.log;
  if (cfg.mode === "none") {
    return { result: { iface: cfg.iface ?? "", addresses: {}, timings }, stop: async () => {}, settled: Promise.resolve() };
  }
  const deadline = t0 + cfg.timeoutMs;
  const writeState = stateWriter(cfg.stateFile, log);
  const nl = new Rtnl();
  const wake = new Wakeup();
  let eventAt = 0;
  // deleted IPv6 addresses since the last look: a duplicate SLAAC address can come and go between two dumps
  let deleted: Addr[] = [];
  // subscribe first, dump after: an event between the two cannot be lost
  const sub = subscribe(
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE,
    (msgs) => {
      for (const m of msgs) {
        if (m.type !== RTM_DELADDR || deleted.length >= 64) continue; // bounded: a flood only costs us the newest
        const a = parseAddr(m);
        if (a.family === AF_INET6) deleted.push(a);
      }
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
  let stopped = false;
  let solicitor: RouterSolicitor | undefined;
  let rsEarlier = 0;
  const rsTotal = (): number => rsEarlier + (solicitor?.sent ?? 0);
  let settled: Promise<void> = Promise.resolve();
  const result: NetResult = { iface: "", addresses: {}, timings };
  const stop = async (): Promise<void> => {
    stopped = true;
    solicitor?.stop();
    wake.kick();
    await settled;
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
    const wantV4 = cfg.mode === "dual" || cfg.mode === "v4";
    const wantV6 = cfg.mode === "dual" || cfg.mode === "v6";
    if (wantV6 && cfg.fastStart) {
      // before link up: the link-local and the SLAAC address are then created optimistic from the start
      const errors = enableOptimisticDad(link.name);
      if (errors.length) log(`netctl: optimistic DAD not enabled (${errors.join("; ")}); the SLAAC address is usable after DAD`);
    }
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

    // our RS goes out before the DHCP DISCOVER: the RA path (RS, RA, SLAAC) is the longer of the two
    const startSolicitor = (): void => {
      solicitor?.stop();
      rsEarlier += solicitor?.sent ?? 0;
      solicitor = new RouterSolicitor(L.index, log);
      solicitor.start();
    };
    const slaacInfo: NetResult["slaac"] = wantV6 ? { phase: "waiting", dadFailed: [], newIdentifiers: 0, solicitations: 0, fastStart: cfg.fastStart } : undefined;
    if (slaacInfo) result.slaac = slaacInfo;
    if (wantV6 && cfg.fastStart) {
      startSolicitor();
      timings.rs_at = performance.now() - tLink;
    }

    // 3. DHCPv4 runs on its own timers; its lease events also wake the wait loop
    const newDhcp = (): Dhcp4Client =>
      new Dhcp4Client({
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
          writeState(result);
          wake.kick();
          if (online) opts.onChange?.(result);
        },
      });
    if (wantV4) {
      dhcp = newDhcp();
      await dhcp.start();
    }
    // The host's bridge port may start forwarding a few ms after our carrier (its side learns of the carrier
    // from a kernel work queue), dropping what we send first. When our first RS went unanswered but a later
    // one was answered, the DISCOVER sent next to it was most likely dropped too: rather than wait for the
    // DHCP client's first retransmission (~1 s), start its transaction over at once. Once at most.
    let dhcpRestarted = false;
    const restartDhcpIfEarlyFramesLost = (): void => {
      if (dhcpRestarted || !dhcp || !solicitor || solicitor.sent < 2 || dhcp.stats.offers > 0 || dhcp.lease) return;
      dhcpRestarted = true;
      const old = dhcp;
      const fresh = newDhcp();
      dhcp = fresh;
      log("netctl: our first router solicitation went unanswered (the bridge port was not forwarding yet): DHCP starts over now");
      timings.dhcp4_restart_at = performance.now() - tLink;
      void old
        .stop()
        .then(() => (stopped ? undefined : fresh.start()))
        .catch((e) => log(`netctl: DHCP restart: ${(e as Error).message}`));
    };

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
    const slaac = new SlaacTracker(L.index, cfg.ygg?.subnet);
    let pinnedSrc: string | undefined;
    let gaveUp = false;
    let newIdAt = 0;
    let raSeen = false;
    let pinFailedLogged = false;
    const note = (ev: NonNullable<NetResult["slaac"]>["event"]): void => {
      if (!slaacInfo) return;
      if (ev) slaacInfo.event = ev;
      slaacInfo.phase = gaveUp ? "gave-up" : slaac.phase;
      slaacInfo.solicitations = rsTotal();
      if (slaac.addr && slaac.usable) slaacInfo.address = slaac.addr.address;
      else delete slaacInfo.address;
      if (online) {
        writeState(result);
        opts.onChange?.(result);
      }
    };
    // reads the addresses and acts on the SLAAC state machine's events
    const stepSlaac = (): void => {
      const now = performance.now();
      const gone = deleted;
      deleted = [];
      for (const e of slaac.observe(listAddresses(nl, AF_INET6, L.index), gone)) {
        if (e.kind === "usable") {
          if (timings.slaac === undefined) {
            timings.slaac = now - tCarrier;
            timings.slaac_ready_at = (eventAt || now) - tLink;
          } else log(`netctl: new SLAAC address ${e.addr.address} on ${L.name}${slaac.phase === "optimistic" ? " (optimistic: usable while DAD runs)" : ""}`);
          result.addresses.ula = `${e.addr.address}/${e.addr.prefixlen}`;
          newIdAt = 0;
          note(slaacInfo?.dadFailed.length ? "new-address" : undefined);
        } else if (e.kind === "confirmed") {
          timings.slaac_dad_at = (eventAt || now) - tLink;
          note("confirmed");
        } else {
          // another node answered our DAD probe; the kernel has removed the address (RFC 4862 §5.4.5)
          slaacInfo?.dadFailed.push(e.address);
          delete result.addresses.ula;
          const tries = slaacInfo?.newIdentifiers ?? 0;
          const what = `DAD failed for ${e.address} on ${L.name}: another node holds it`;
          if (tries >= MAX_NEW_IDS) {
            gaveUp = true;
            log(`netctl: ${what}; giving up on a SLAAC address after ${tries} new interface identifiers`);
            note("gave-up");
            continue;
          }
          const token = randomInterfaceId();
          try {
            setIpv6Token(nl, L, token);
          } catch (err) {
            gaveUp = true;
            log(`netctl: ${what}; no new interface identifier: ${(err as Error).message}`);
            note("gave-up");
            continue;
          }
          slaacInfo!.newIdentifiers = tries + 1;
          newIdAt = now;
          log(`netctl: ${what}; new interface identifier ${formatToken(token)} (${tries + 1}/${MAX_NEW_IDS})`);
          // the kernel solicits as well once its link-local is ready; ours does not wait for that
          if (cfg.fastStart) startSolicitor();
          note("dadfailed");
        }
      }
      if (!raSeen && wantV6 && (slaac.phase !== "waiting" || raDefaultRoute(nl, L.index))) {
        raSeen = true;
        timings.ra_at = (eventAt || now) - tLink;
        solicitor?.stop();
        restartDhcpIfEarlyFramesLost();
      }
      // a burst after a new interface identifier ends with the new address
      if (solicitor?.state === "sending" && slaac.phase !== "waiting") solicitor.stop();
      if (slaac.usable && slaac.addr && pinnedSrc !== slaac.addr.address) {
        try {
          if (pinDefaultSource(nl, L.index, slaac.addr)) {
            pinnedSrc = slaac.addr.address;
            log(`netctl: IPv6 default route source pinned to ${slaac.addr.address}`);
          }
        } catch (e) {
          // EINVAL: the address failed DAD after our dump; its deletion event wakes us again
          if (!(e instanceof NetlinkError && e.errno === EINVAL)) throw e;
          if (!pinFailedLogged) log(`netctl: ${(e as Error).message}; trying again on the next change`);
          pinFailedLogged = true;
        }
      }
    };
    for (;;) {
      const v4ok = !wantV4 || (dhcp!.state === "bound" && !!dhcp!.lease);
      if (wantV4 && v4ok && timings.dhcp4 === undefined) {
        timings.dhcp4 = performance.now() - tCarrier;
        timings.dhcp4_ack_at = (dhcp!.firstAckAt ?? performance.now()) - tLink;
      }
      let v6ok = true;
      if (wantV6) {
        stepSlaac();
        // without fast start "online" keeps its old meaning: DAD finished
        v6ok = cfg.fastStart ? slaac.usable : slaac.phase === "confirmed";
        if (gaveUp) fail(`DAD failed for ${slaacInfo!.dadFailed.join(", ")} on ${L.name} (duplicate addresses; ${slaacInfo!.newIdentifiers} new interface identifiers tried)`);
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
          const last = dhcp!.lastProblem ? `; last: ${dhcp!.lastProblem}` : "";
          why.push(s.offers === 0 ? `no DHCP offer on ${L.name} (${s.discovers} DISCOVERs sent)` : `no usable DHCP lease on ${L.name} (${s.offers} offers, ${s.requests} REQUESTs, ${s.naks} NAKs${last})`);
        }
        if (wantV6 && !v6ok) {
          const failed = slaacInfo!.dadFailed;
          const yggOnly = slaac.phase === "waiting" && !failed.length && cfg.ygg ? yggOnlySlaac(nl, L.index, cfg.ygg) : undefined;
          if (slaac.phase === "waiting" && failed.length) why.push(`DAD failed for ${failed.join(", ")} on ${L.name} (duplicate address; the kernel removed it)`);
          else if (yggOnly)
            why.push(`the only SLAAC address on ${L.name} (${yggOnly}) is in the yggdrasil /64: the RA advertises the ygg prefix itself, not a ULA or global /64 for ordinary traffic`);
          else if (slaac.phase === "waiting") why.push(`no RA: no SLAAC address on ${L.name}`);
          else if (slaac.addr) why.push(`SLAAC address ${slaac.addr.address} still tentative (DAD not finished)`);
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
    if (wantV6 && !pinnedSrc) log("netctl: no router in the RA: IPv6 default route source not pinned");
    note(undefined);
    if (wantV6 && slaac.phase !== "confirmed") {
      // online on an optimistic address: keep watching its DAD (bounded) and act on a failure
      const until = performance.now() + DAD_WATCH_MAX_MS;
      settled = (async () => {
        while (!stopped && !gaveUp && slaac.phase !== "confirmed" && performance.now() < until) {
          await wake.wait(Math.min(until, newIdAt ? newIdAt + NEW_ID_WAIT_MS : until) - performance.now());
          if (stopped) break;
          try {
            stepSlaac();
          } catch (e) {
            log(`netctl: watching DAD: ${(e as Error).message}`);
            break;
          }
          if (newIdAt && performance.now() >= newIdAt + NEW_ID_WAIT_MS && !slaac.usable) {
            gaveUp = true;
            log(`netctl: no new SLAAC address on ${L.name} within ${NEW_ID_WAIT_MS / 1000} s of the new interface identifier; giving up on a SLAAC address`);
            note("gave-up");
          }
        }
        solicitor?.stop();
        sub.close();
      })();
    } else {
      solicitor?.stop();
      sub.close();
    }
    const v4 = listAddresses(nl, AF_INET, L.index)[0];
    if (v4 && !result.addresses.ipv4) result.addresses.ipv4 = `${v4.address}/${v4.prefixlen}`;
    if (cfg.checkTargets.length) {
      const tc = performance.now();
      const { runChecks } = await import("../probes/check.ts");
      // container names map into the /64 this phase configured (none in mode v4), not only what the env says
      const yggPrefix = cfg.ygg ? `${formatIPv6(cfg.ygg.subnet.network)}/${cfg.ygg.subnet.len}` : null;
      const failed = await runChecks(cfg.checkTargets, { timeoutMs: Math.max(2000, timeLeft()), log, env, yggPrefix });
      timings.checks = performance.now() - tc;
      if (failed.length) throw new ExitError(69, `network checks failed (MAN8S_CHECK_TARGETS): ${failed.join("; ")}`);
    }
    log(
      `netctl: online in ${timings.total.toFixed(0)} ms: ${[result.addresses.ipv4 && `ipv4 ${result.addresses.ipv4}`, result.addresses.ula && `ula ${result.addresses.ula}`, result.addresses.yggdrasil && `ygg ${result.addresses.yggdrasil}`].filter(Boolean).join(", ")}`,
    );
    writeState(result);
    return { result, stop, settled };
  } catch (e) {
    await stop();
    throw e;
  }
}
