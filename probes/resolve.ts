// HOST of a probe URL → one IP address.
//
//   resolveHost(host, env, opts?): Promise<Resolved>    throws Error saying what was tried
//   yggPrefix(env): Promise<string | null>              our /64, e.g. "300:2e98:a4b0:1789::/64"
//   containerAddress(name, env): Promise<string|null>   mbctl's address of a container name in our /64
//
// Order: an IP literal is used as is; "localhost" is loopback; then /etc/hosts; then a name without a dot
// is a container name when our yggdrasil prefix is known (MAN8S_YGGDRASIL_PREFIX, else the /64 of
// MAN8S_YGGDRASIL_ADDRESS), needing no DNS; any other name goes to DNS, and if DNS fails and the prefix is
// known it is tried as a container name too (mbctl names may contain dots). The one order for every probe
// and check target (docs/probes.md); a caller that knows our /64 better than the env passes it (yggPrefix).
// The address math (last 64 bits of SHA-256(name) OR'd into the /64) is common/net/addrmath.ts, imported
// lazily because it pulls ip-num.
import { isIP } from "node:net";
import { readFileSync } from "node:fs";

export type Env = Record<string, string | undefined>;

export interface Resolved {
  address: string;
  family: 4 | 6;
  via: "address" | "localhost" | "hosts" | "container" | "cluster" | "dns";
}

export async function yggPrefix(env: Env): Promise<string | null> {
  const { parsePrefix6, formatIPv6 } = await import("../common/net/addrmath.ts");
  const p = env.MAN8S_YGGDRASIL_PREFIX?.trim();
  if (p) {
    const pr = parsePrefix6(p, 64);
    if (!pr) throw new Error(`MAN8S_YGGDRASIL_PREFIX '${p}' is not an IPv6 prefix`);
    return `${formatIPv6(pr.network)}/${pr.len}`;
  }
  const a = env.MAN8S_YGGDRASIL_ADDRESS?.trim();
  if (a) {
    const pr = parsePrefix6(a.replace(/\/\d+$/, ""), 64) ?? null;
    if (!pr) throw new Error(`MAN8S_YGGDRASIL_ADDRESS '${a}' is not an IPv6 address`);
    return `${formatIPv6(pr.network)}/64`;
  }
  return null;
}

export async function containerAddress(name: string, env: Env): Promise<string | null> {
  const prefix = await yggPrefix(env);
  return prefix ? await addressInPrefix(name, prefix) : null;
}

async function addressInPrefix(name: string, prefix: string): Promise<string> {
  const { parsePrefix6, addressForName, formatIPv6 } = await import("../common/net/addrmath.ts");
  const p = parsePrefix6(prefix, 64);
  if (!p) throw new Error(`'${prefix}' is not an IPv6 prefix`);
  return formatIPv6(addressForName(name, { network: p.network, len: 64 }));
}

/** Looks NAME up in an /etc/hosts-format file; null when absent or unreadable. */
export function lookupHostsFile(name: string, file = "/etc/hosts"): string | null {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return null;
  }
  const want = name.toLowerCase();
  for (const line of text.split("\n")) {
    const words = line.replace(/#.*/, "").trim().split(/\s+/);
    if (words.length < 2) continue;
    const addr = words[0]!.replace(/%.*$/, "");
    if (isIP(addr) && words.slice(1).some((w) => w.toLowerCase() === want)) return addr;
  }
  return null;
}

function literal(host: string): Resolved | null {
  const bare = host.replace(/%.*$/, ""); // fe80::1%eth0: the scope is not carried further
  const f = isIP(bare);
  return f === 4 || f === 6 ? { address: bare, family: f, via: "address" } : null;
}

export interface ResolveOptions {
  hostsFile?: string;
  /** our yggdrasil /64 as text; undefined: from env (yggPrefix()); null: none, names never map to containers */
  yggPrefix?: string | null;
}

export async function resolveHost(host: string, env: Env, opts: ResolveOptions = {}): Promise<Resolved> {
  const container = async (name: string) => {
    const prefix = opts.yggPrefix === undefined ? await yggPrefix(env) : opts.yggPrefix;
    return prefix ? await addressInPrefix(name, prefix) : null;
  };
  const lit = literal(host);
  if (lit) return lit;
  if (host.toLowerCase() === "localhost") return { address: "127.0.0.1", family: 4, via: "localhost" };
  const fromHosts = lookupHostsFile(host, opts.hostsFile);
  if (fromHosts) return { address: fromHosts, family: isIP(fromHosts) === 6 ? 6 : 4, via: "hosts" };
  // a container on another host (or NAME@HOST): the agent's cluster catalog knows it (docs/cluster.md)
  if (!host.includes(".") || host.includes("@")) {
    const remote = await (await import("../common/cluster-lookup.ts")).resolveInCluster(host, env);
    if (remote) return { address: remote, family: 6, via: "cluster" };
  }
  if (!host.includes(".")) {
    const c = await container(host);
    if (c) return { address: c, family: 6, via: "container" };
  }
  let dnsError: string;
  try {
    const res = await Bun.dns.lookup(host, {});
    const first = res[0];
    if (first) return { address: first.address, family: first.family === 6 ? 6 : 4, via: "dns" };
    dnsError = "no addresses";
  } catch (e) {
    dnsError = (e as Error).message || String(e);
  }
  const c = await container(host);
  if (c) return { address: c, family: 6, via: "container" };
  throw new Error(
    `cannot resolve '${host}': DNS: ${dnsError}; not tried as a container name (no MAN8S_YGGDRASIL_PREFIX or MAN8S_YGGDRASIL_ADDRESS)`,
  );
}
