// Reachability checks (MAN8S_CHECK_TARGETS, `man8s netctl check`): no hard-coded hosts, only what the user names.
// Forms: `HOST:PORT`, `[V6]:PORT`, `tcp://HOST:PORT` (a TCP connection must open) or a bare `HOST`, which
// must answer an ICMP echo. HOST is an address, a DNS name, or a container name (no dot), which maps to
// its yggdrasil address with our prefix (DESIGN §6).
import { addressForName, formatIPv6, parseIPv4, parseIPv6, type Prefix6 } from "./addrmath.ts";
import { icmpEcho } from "./icmp.ts";
import { setLongTimeout } from "../common/timer.ts";

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

/** A dot-less name is a container name when we know our ygg prefix (DESIGN §6); anything else goes to DNS. */
async function resolve(host: string, o: CheckOpts): Promise<string> {
  if (parseIPv4(host) || parseIPv6(host)) return host;
  if (o.yggPrefix && !host.includes(".")) return formatIPv6(addressForName(host, o.yggPrefix));
  try {
    const r = await Bun.dns.lookup(host, {});
    if (r[0]) return r[0].address;
  } catch {
    // reported below
  }
  throw new Error(`cannot resolve ${host}`);
}

function tcpProbe(addr: string, port: number, timeoutMs: number): Promise<string | null> {
  return new Promise((res) => {
    let settled = false;
    const done = (v: string | null) => {
      if (settled) return;
      settled = true;
      t.clear();
      res(v);
    };
    // the timeout is what is left of MAN8S_NETWORK_TIMEOUT: it may exceed a plain setTimeout's range
    const t = setLongTimeout(() => done(`no answer from ${addr} port ${port} within ${timeoutMs} ms`), timeoutMs);
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
          done(`${addr} port ${port}: ${(e as { code?: string }).code ?? e.message}`);
        },
      },
    }).catch((e: Error & { code?: string }) => done(`${addr} port ${port}: ${e.code ?? e.message}`));
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
        const err = p.port === undefined ? await icmpEcho((parseIPv4(addr) ?? parseIPv6(addr))!, o.timeoutMs) : await tcpProbe(addr, p.port, o.timeoutMs);
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
