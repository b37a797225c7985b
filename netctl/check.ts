// Reachability checks (MAN8S_CHECK_TARGETS, `man8s netctl check`): no hard-coded hosts, only what the user names.
// Forms: `HOST:PORT`, `[V6]:PORT`, `tcp://HOST:PORT` (a TCP connect must succeed) or a bare `HOST`, which is
// reachable when a TCP connect to its discard port (9) is answered at all, accepted or refused (a refusal is
// an RST from the host itself). Bun has no ICMP, and raw sockets would need CAP_NET_RAW. HOST is an address,
// a DNS name, or a container name, which maps to its yggdrasil address with our prefix (DESIGN §6).
import { addressForName, formatIPv6, parseIPv4, parseIPv6, type Prefix6 } from "./addrmath.ts";

export interface CheckOpts {
  timeoutMs: number;
  log: (m: string) => void;
  yggPrefix?: Prefix6;
}

export function parseTarget(t: string): { host: string; port?: number } | null {
  const s = t.replace(/^tcp:\/\//, "");
  let m = /^\[([0-9a-fA-F:.]+)\](?::(\d+))?$/.exec(s);
  if (m) return { host: m[1]!, ...(m[2] ? { port: Number(m[2]) } : {}) };
  if (parseIPv6(s)) return { host: s };
  m = /^([^:\s]+)(?::(\d+))?$/.exec(s);
  if (!m) return null;
  const port = m[2] ? Number(m[2]) : undefined;
  if (port !== undefined && (port < 1 || port > 65535)) return null;
  return { host: m[1]!, ...(port ? { port } : {}) };
}

async function resolve(host: string, o: CheckOpts): Promise<string> {
  if (parseIPv4(host) || parseIPv6(host)) return host;
  try {
    const r = await Bun.dns.lookup(host, {});
    if (r[0]) return r[0].address;
  } catch {
    // not in DNS: maybe a container name
  }
  if (o.yggPrefix) return formatIPv6(addressForName(host, o.yggPrefix));
  throw new Error(`cannot resolve ${host}`);
}

function tcpProbe(addr: string, port: number, timeoutMs: number, refusedIsOk: boolean): Promise<string | null> {
  return new Promise((res) => {
    let settled = false;
    const done = (v: string | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(t);
      res(v);
    };
    const t = setTimeout(() => done(`no answer from ${addr} port ${port} within ${timeoutMs} ms`), timeoutMs);
    Bun.connect({
      hostname: addr,
      port,
      socket: {
        open(s) {
          s.end();
          done(null);
        },
        data() {},
        error(_s, e) {
          done(`${addr} port ${port}: ${e.message}`);
        },
        connectError(_s, e) {
          const code = (e as { code?: string }).code;
          done(refusedIsOk && code === "ECONNREFUSED" ? null : `${addr} port ${port}: ${code ?? e.message}`);
        },
      },
    }).catch((e: Error & { code?: string }) => done(refusedIsOk && e.code === "ECONNREFUSED" ? null : `${addr} port ${port}: ${e.code ?? e.message}`));
  });
}

/** Runs all checks in parallel; returns the failures (empty = all reachable). */
export async function runChecks(targets: string[], o: CheckOpts): Promise<string[]> {
  const results = await Promise.all(
    targets.map(async (t) => {
      const p = parseTarget(t);
      if (!p) return `${t}: not HOST, HOST:PORT or tcp://HOST:PORT`;
      try {
        const addr = await resolve(p.host, o);
        const err = await tcpProbe(addr, p.port ?? 9, o.timeoutMs, p.port === undefined);
        o.log(`check ${t}${addr !== p.host ? ` (${addr})` : ""}: ${err ? `FAIL ${err}` : "OK"}`);
        return err ? `${t}: ${err}` : null;
      } catch (e) {
        o.log(`check ${t}: FAIL ${(e as Error).message}`);
        return `${t}: ${(e as Error).message}`;
      }
    }),
  );
  return results.filter((x): x is string => x !== null);
}
