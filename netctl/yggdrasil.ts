// Yggdrasil addressing in the container: a static /64 address (nodad, noprefixroute), table 199 with
// `<subnet>::/64 dev IF src ADDR` and `200::/7 via GW dev IF src ADDR`, and `to 200::/7 lookup 199`
// priority 100. The src matters: yggdrasil drops packets whose source is outside the node's /64
// (docs/notes.md §8). nodad because a route with a tentative prefsrc is refused (same §). Idempotent.
import { EEXIST } from "../common/libc.ts";
import { AF_INET6 } from "../common/libc-net.ts";
import { addAddress, IFA_F_NODAD, IFA_F_NOPREFIXROUTE, listAddresses } from "./address.ts";
import { formatIPv6 } from "../common/net/addrmath.ts";
import { NetlinkError, type Rtnl } from "./netlink.ts";
import { addRoute, listRoutes } from "./route.ts";
import { addRule, listRules } from "./rule.ts";

export const YGG_TABLE = 199;
export const YGG_RULE_PRIORITY = 100;
import { YGG_SPACE } from "../common/ygg-settings.ts";
export { YGG_SPACE };

// the env settings are validated by the agent too: parsed in common/ygg-settings.ts
export { type YggConfig, yggConfigFromEnv } from "../common/ygg-settings.ts";
import type { YggConfig } from "../common/ygg-settings.ts";

const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);

/** What is missing from the ygg setup on this link (empty = complete). */
export function yggMissing(nl: Rtnl, index: number, c: YggConfig): string[] {
  return yggMissingKeys(nl, index, c).map(([, text]) => text);
}

type MissingKey = "address" | "subnetRoute" | "yggRoute" | "rule";

function yggMissingKeys(nl: Rtnl, index: number, c: YggConfig): [MissingKey, string][] {
  const missing: [MissingKey, string][] = [];
  const a = formatIPv6(c.address);
  if (!listAddresses(nl, AF_INET6, index).some((x) => same(x.bytes, c.address) && x.prefixlen === 64)) missing.push(["address", `address ${a}/64`]);
  const routes = listRoutes(nl, AF_INET6, YGG_TABLE);
  const sub = formatIPv6(c.subnet.network);
  if (!routes.some((r) => r.dst === sub && r.dstLen === 64 && r.oif === index && r.prefsrc === a)) missing.push(["subnetRoute", `route ${sub}/64 table ${YGG_TABLE}`]);
  if (!routes.some((r) => r.dst === "200::" && r.dstLen === 7 && r.gateway === formatIPv6(c.gateway) && r.prefsrc === a)) missing.push(["yggRoute", `route 200::/7 via ${formatIPv6(c.gateway)} table ${YGG_TABLE}`]);
  if (!hasRule(nl)) missing.push(["rule", `rule to 200::/7 lookup ${YGG_TABLE}`]);
  return missing;
}

function hasRule(nl: Rtnl): boolean {
  return listRules(nl, AF_INET6).some((r) => r.dst === "200::" && r.dstLen === 7 && r.table === YGG_TABLE && r.priority === YGG_RULE_PRIORITY);
}

/** Applies the whole ygg setup; returns what it had to change (empty on a second run). */
export function applyYgg(nl: Rtnl, index: number, c: YggConfig): string[] {
  const changed: string[] = [];
  const missing = new Set(yggMissingKeys(nl, index, c).map(([k]) => k));
  const a = formatIPv6(c.address);
  if (missing.has("address")) {
    try {
      addAddress(nl, { index, bytes: c.address, prefixlen: 64, flags: IFA_F_NODAD | IFA_F_NOPREFIXROUTE });
    } catch (e) {
      if (!(e instanceof NetlinkError && e.errno === EEXIST)) throw e;
    }
    changed.push(`address ${a}/64 nodad noprefixroute`);
  }
  // the on-link /64 first: it is what makes the gateway reachable for the 200::/7 route's nexthop check
  if (missing.has("subnetRoute")) {
    addRoute(nl, { dst: c.subnet.network, dstLen: 64, oif: index, prefsrc: c.address, table: YGG_TABLE });
    changed.push(`route ${formatIPv6(c.subnet.network)}/64 dev #${index} src ${a} table ${YGG_TABLE}`);
  }
  if (missing.has("yggRoute")) {
    addRoute(nl, { dst: YGG_SPACE.network, dstLen: 7, gateway: c.gateway, oif: index, prefsrc: c.address, table: YGG_TABLE });
    changed.push(`route 200::/7 via ${formatIPv6(c.gateway)} dev #${index} src ${a} table ${YGG_TABLE}`);
  }
  if (missing.has("rule")) {
    try {
      addRule(nl, { dst: YGG_SPACE.network, dstLen: 7, table: YGG_TABLE, priority: YGG_RULE_PRIORITY });
    } catch (e) {
      if (!(e instanceof NetlinkError && e.errno === EEXIST)) throw e;
    }
    changed.push(`rule to 200::/7 lookup ${YGG_TABLE} priority ${YGG_RULE_PRIORITY}`);
  }
  return changed;
}
