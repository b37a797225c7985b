// `man8s netctl status`: live kernel state over rtnetlink plus the last lease recorded by bring-up.
import { readFileSync } from "node:fs";
import { AF_INET, AF_INET6 } from "../common/libc-net.ts";
import { describeFlags, INFINITY_LIFE, listAddresses } from "./address.ts";
import { formatMac, IFF_LOOPBACK, listLinks } from "./link.ts";
import { Rtnl } from "./netlink.ts";
import { listRoutes, type Route, RT_TABLE_MAIN } from "./route.ts";
import { listRules } from "./rule.ts";
import { YGG_TABLE } from "./yggdrasil.ts";

export interface Status {
  iface?: { name: string; index: number; mac: string; operstate: string; up: boolean; carrier: boolean };
  addresses: { family: 4 | 6; address: string; prefixlen: number; flags: string[]; valid?: number; preferred?: number }[];
  defaultRoutes: Route[];
  table199: Route[];
  rules: { priority: number; to: string; table: number }[];
  lease?: unknown;
}

export function collectStatus(env: Record<string, string | undefined>): Status {
  const nl = new Rtnl();
  try {
    const links = listLinks(nl);
    const want = env.MAN8S_HOST_IFACE;
    const link = want ? links.find((l) => l.name === want) : links.filter((l) => !(l.flags & IFF_LOOPBACK)).sort((a, b) => a.index - b.index)[0];
    const s: Status = { addresses: [], defaultRoutes: [], table199: [], rules: [] };
    if (link) {
      s.iface = { name: link.name, index: link.index, mac: formatMac(link.mac), operstate: link.operstate, up: (link.flags & 1) !== 0, carrier: (link.flags & 0x10000) !== 0 };
      for (const a of listAddresses(nl, 0, link.index)) {
        s.addresses.push({
          family: a.family === AF_INET ? 4 : 6,
          address: a.address,
          prefixlen: a.prefixlen,
          flags: describeFlags(a.flags),
          ...(a.valid !== INFINITY_LIFE ? { valid: a.valid } : {}),
          ...(a.preferred !== INFINITY_LIFE ? { preferred: a.preferred } : {}),
        });
      }
    }
    for (const fam of [AF_INET, AF_INET6]) {
      const routes = listRoutes(nl, fam);
      s.defaultRoutes.push(...routes.filter((r) => r.dstLen === 0 && r.table === RT_TABLE_MAIN));
      s.table199.push(...routes.filter((r) => r.table === YGG_TABLE));
    }
    s.rules = listRules(nl, AF_INET6)
      .filter((r) => r.table === YGG_TABLE)
      .map((r) => ({ priority: r.priority, to: r.dst ? `${r.dst}/${r.dstLen}` : "all", table: r.table }));
    try {
      s.lease = JSON.parse(readFileSync(env.MAN8S_NETCTL_STATE || "/run/man8s/netctl.json", "utf8"));
    } catch {
      // no bring-up has run here
    }
    return s;
  } finally {
    nl.close();
  }
}

/** In `ip route`'s order and words; the interface by name when it is ours. */
const fmtRoute = (r: Route, iface?: { name: string; index: number }) =>
  `${r.dstLen === 0 ? "default" : `${r.dst}/${r.dstLen}`}${r.gateway ? ` via ${r.gateway}` : ""}${r.oif ? ` dev ${r.oif === iface?.index ? iface.name : `#${r.oif}`}` : ""}${r.prefsrc ? ` src ${r.prefsrc}` : ""}${r.metric !== undefined ? ` metric ${r.metric}` : ""}`;

export function renderStatus(s: Status): string {
  const lines: string[] = [];
  if (!s.iface) lines.push("interface: none");
  else lines.push(`interface: ${s.iface.name} (index ${s.iface.index}, ${s.iface.mac}, ${s.iface.operstate}${s.iface.carrier ? ", carrier" : ", no carrier"})`);
  for (const a of s.addresses) lines.push(`  inet${a.family === 6 ? "6" : " "} ${a.address}/${a.prefixlen}${a.flags.length ? ` ${a.flags.join(" ")}` : ""}${a.valid !== undefined ? ` valid ${a.valid}s` : ""}`);
  lines.push("default routes:");
  for (const r of s.defaultRoutes) lines.push(`  ${fmtRoute(r, s.iface ?? undefined)}`);
  lines.push(`table ${YGG_TABLE}:`);
  for (const r of s.table199) lines.push(`  ${fmtRoute(r, s.iface ?? undefined)}`);
  lines.push("rules:");
  for (const r of s.rules) lines.push(`  ${r.priority}: to ${r.to} lookup ${r.table}`);
  const rec = s.lease as { lease?: Record<string, unknown>; timings?: Record<string, number> } | undefined;
  const l = rec?.lease;
  if (l) lines.push(`dhcp4 lease: ${l.address} from ${l.server} router ${l.router ?? "-"} dns ${(l.dns as string[]).join(",") || "-"} lease ${l.leaseTime}s obtained ${l.obtained} (${l.event})`);
  if (rec?.timings) lines.push(`bring-up timings (ms): ${Object.entries(rec.timings).map(([k, v]) => `${k}=${v.toFixed(1)}`).join(" ")}`);
  return `${lines.join("\n")}\n`;
}
