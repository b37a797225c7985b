// The host's bridge for containers as systemd-networkd files (the Man8S layout: srvgrp0, DHCPv4 server,
// router advertisements with a ULA prefix, masquerading, the host's yggdrasil /64 on the bridge as ::1)
// and the forwarding sysctls routing that /64 and the ULA needs.
import { isIPv4, isIPv6 } from "node:net";
import { formatIPv6, parsePrefix6 } from "../../common/net/addrmath.ts";
import { AgentError, ERR } from "../errors.ts";

export const NETWORK_DIR = "/etc/systemd/network";
export const SYSCTL_FILE = "/etc/sysctl.d/90-man8s.conf";

export interface BridgeOptions {
  bridge: string;
  /** ULA /64 advertised in RAs; the bridge takes ::1 in it */
  ula: string;
  /** the bridge's IPv4 address with its prefix length (the DHCP pool is that network) */
  ipv4: string;
  /** the host's yggdrasil /64 (the bridge takes ::1 in it), or null without yggdrasil */
  yggSubnet: string | null;
  /** DNS servers the DHCP server hands out; empty: those of the uplink (networkd's EmitDNS default) */
  dns: string[];
}

const bad = (msg: string) => new AgentError(ERR.BAD_ARGS, msg);

/** Linux interface names: at most 15 bytes, no '/', whitespace or ':' (dev_valid_name), not '.' or '..' */
export function checkBridgeName(v: string): string {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(v) || v === "." || v === "..") throw bad(`--bridge '${v.slice(0, 40)}' is not an interface name (1-15 of A-Za-z0-9_.-)`);
  return v;
}

/** An IPv6 /64 in canonical text (host bits cleared). */
export function checkPrefix64(v: string, flag: string): string {
  const p = parsePrefix6(v, 64);
  if (!p || !/\/\d+$/.test(v)) throw bad(`${flag} '${v.slice(0, 60)}' is not an IPv6 prefix (e.g. fc00::/64)`);
  if (p.len !== 64) throw bad(`${flag} must be a /64 (SLAAC and the yggdrasil subnet are /64), got /${p.len}`);
  return `${formatIPv6(p.network)}/64`;
}

export function checkIPv4Cidr(v: string): string {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(v);
  if (!m || !isIPv4(m[1]!)) throw bad(`--ipv4 '${v.slice(0, 40)}' is not ADDRESS/LENGTH (e.g. 172.17.0.1/16)`);
  const len = Number(m[2]);
  if (len < 8 || len > 30) throw bad(`--ipv4 prefix length must be 8..30 (room for a DHCP pool), got /${len}`);
  return v;
}

export function checkDns(v: string): string {
  if (!isIPv4(v) && !isIPv6(v)) throw bad(`--dns '${v.slice(0, 40)}' is not an IP address`);
  return v;
}

/** `<prefix>::1/64`: the host's address in a /64 */
export function hostAddress(prefix64: string): string {
  const p = parsePrefix6(prefix64, 64)!;
  const a = new Uint8Array(p.network);
  a[15] = 1;
  return `${formatIPv6(a)}/64`;
}

export function netdevFile(o: BridgeOptions): string {
  return `[NetDev]
Name=${o.bridge}
Kind=bridge
`;
}

export function networkFile(o: BridgeOptions): string {
  const addrs = [o.ipv4, hostAddress(o.ula)];
  if (o.yggSubnet) addrs.push(hostAddress(o.yggSubnet));
  const dns = o.dns.length > 0 ? `DNS=${o.dns.join(" ")}\n` : "";
  return `[Match]
Name=${o.bridge}

[Link]
RequiredForOnline=no

[Network]
${addrs.map((a) => `Address=${a}`).join("\n")}
# the bridge is up with its addresses before any container plugs a veth in
ConfigureWithoutCarrier=yes
DHCPServer=yes
IPv6SendRA=yes
IPMasquerade=both
LinkLocalAddressing=ipv6

[DHCPServer]
EmitDNS=yes
${dns}
[IPv6SendRA]
EmitDNS=no

[IPv6Prefix]
Prefix=${o.ula}
`;
}

export function sysctlFile(): string {
  return `# routing for the containers' bridge: yggdrasil's /64 and the ULA (IPv6), masqueraded IPv4
net.ipv6.conf.all.forwarding = 1
net.ipv4.ip_forward = 1
`;
}

/** The values sysctlFile() sets, as /proc/sys paths (for applying them now and for `host check`). */
export const FORWARDING_SYSCTLS: [string, string][] = [
  ["/proc/sys/net/ipv6/conf/all/forwarding", "1"],
  ["/proc/sys/net/ipv4/ip_forward", "1"],
];
