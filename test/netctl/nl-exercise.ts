// Run inside a throwaway netns (by netlink.test.ts) with a veth `m8nc0` whose peer is up.
// Exercises the rtnetlink library against the real kernel and prints one JSON report.
import { addAddress, delAddress, IFA_F_NODAD, IFA_F_TENTATIVE, listAddresses } from "../../netctl/address.ts";
import { parseIPv4, parseIPv6 } from "../../common/net/addrmath.ts";
import { subscribe } from "../../netctl/events.ts";
import { hasCarrier, listLinks, setLinkUp } from "../../netctl/link.ts";
import { NetlinkError, RTMGRP_IPV6_IFADDR, Rtnl } from "../../netctl/netlink.ts";
import { addRoute, listRoutes } from "../../netctl/route.ts";
import { addRule, listRules } from "../../netctl/rule.ts";

const nl = new Rtnl();
const report: Record<string, unknown> = {};
const link = listLinks(nl).find((l) => l.name === "m8nc0")!;
setLinkUp(nl, link);
const err = (f: () => void) => {
  try {
    f();
    return null;
  } catch (e) {
    return e instanceof NetlinkError ? { errno: e.errno, message: e.message } : { other: String(e) };
  }
};

// IPv4 address with lease lifetimes, then a refresh with REPLACE
addAddress(nl, { index: link.index, bytes: parseIPv4("10.66.0.5")!, prefixlen: 24, valid: 100, preferred: 100 });
const v4a = listAddresses(nl, 2, link.index).find((a) => a.address === "10.66.0.5")!;
addAddress(nl, { index: link.index, bytes: parseIPv4("10.66.0.5")!, prefixlen: 24, valid: 300, preferred: 300, replace: true });
const v4b = listAddresses(nl, 2, link.index).find((a) => a.address === "10.66.0.5")!;
report.lifetimes = [v4a.valid, v4b.valid];
report.duplicate = err(() => addAddress(nl, { index: link.index, bytes: parseIPv4("10.66.0.5")!, prefixlen: 24 }));

// a route whose prefsrc is tentative is refused by the kernel (net-lab G1): the error names what we asked
addAddress(nl, { index: link.index, bytes: parseIPv6("2001:db8:5::10")!, prefixlen: 64 });
report.tentative = (listAddresses(nl, 10, link.index).find((a) => a.address === "2001:db8:5::10")!.flags & IFA_F_TENTATIVE) !== 0;
report.tentativeSrc = err(() =>
  addRoute(nl, { dst: parseIPv6("2001:db8:77::")!, dstLen: 48, oif: link.index, prefsrc: parseIPv6("2001:db8:5::10")!, table: 199 }),
);
// nodad: usable at once
addAddress(nl, { index: link.index, bytes: parseIPv6("2001:db8:5::11")!, prefixlen: 64, flags: IFA_F_NODAD });
report.nodadRoute = err(() => addRoute(nl, { dst: parseIPv6("2001:db8:77::")!, dstLen: 48, oif: link.index, prefsrc: parseIPv6("2001:db8:5::11")!, table: 199 }));
report.table199 = listRoutes(nl, 10, 199).map((r) => `${r.dst}/${r.dstLen} src ${r.prefsrc}`);
report.bigTable = err(() => addRoute(nl, { dst: parseIPv6("2001:db8:78::")!, dstLen: 48, oif: link.index, table: 1000 }));
report.bigTableListed = listRoutes(nl, 10, 1000).length;
report.rule1 = err(() => addRule(nl, { dst: parseIPv6("200::")!, dstLen: 7, table: 199, priority: 100 }));
report.rule2 = err(() => addRule(nl, { dst: parseIPv6("200::")!, dstLen: 7, table: 199, priority: 100 }));
report.rules = listRules(nl, 10).filter((r) => r.table === 199).map((r) => `${r.priority} ${r.dst}/${r.dstLen}`);
report.delMissing = err(() => delAddress(nl, { index: link.index, bytes: parseIPv4("10.66.0.99")!, prefixlen: 24 }));
report.carrier = hasCarrier(listLinks(nl).find((l) => l.index === link.index)!);

// ENOBUFS: a tiny receive buffer and a blocked JS thread make the kernel drop events; the subscription must
// notice, reopen and ask for a re-dump, and still deliver events afterwards
let resyncs = 0, after = 0;
const sub = subscribe(RTMGRP_IPV6_IFADDR, () => { if (resyncs) after++; }, () => resyncs++, 1);
for (let i = 1; i <= 400; i++) {
  const a = parseIPv6(`2001:db8:6::${i.toString(16)}`)!;
  addAddress(nl, { index: link.index, bytes: a, prefixlen: 128, flags: IFA_F_NODAD });
  delAddress(nl, { index: link.index, bytes: a, prefixlen: 128 });
}
const t = Date.now();
while (!resyncs && Date.now() - t < 3000) await Bun.sleep(20);
addAddress(nl, { index: link.index, bytes: parseIPv6("2001:db8:6::ffff")!, prefixlen: 128, flags: IFA_F_NODAD });
const t2 = Date.now();
while (!after && Date.now() - t2 < 3000) await Bun.sleep(20);
report.resyncs = resyncs;
report.eventsAfterResync = after;
sub.close();
nl.close();
process.stdout.write(`${JSON.stringify(report)}\n`);
