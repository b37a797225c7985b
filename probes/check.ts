// Reachability checks (MAN8S_CHECK_TARGETS, `man8s netctl check`): no hard-coded hosts, only what the user
// names. A target is a probe URL (url.ts) or one of two short forms kept from before the probes existed:
//   HOST:PORT, [V6]:PORT   = tcp://HOST:PORT      (a TCP connection must open)
//   HOST, V6, [V6]         = icmp://HOST          (an ICMP echo must come back)
// Every target runs through the one probe engine (run.ts), so HOST resolves as everywhere else (resolve.ts:
// literal, localhost, /etc/hosts, container name, DNS, then container name again).
//
//   splitCheckTargets(text): string[]            MAN8S_CHECK_TARGETS: blanks or commas separate targets
//   parseCheckTarget(text): Probe                throws ProbeUrlError naming the target
//   runChecks(targets, opts): Promise<string[]>  all in parallel; the failures, empty when all passed
import { parseProbeUrl, ProbeUrlError, type Probe } from "./url.ts";
import type { Env } from "./resolve.ts";

export interface CheckOpts {
  timeoutMs: number;
  log: (m: string) => void;
  /** environment for name resolution (MAN8S_YGGDRASIL_*): default process.env */
  env?: Env;
  /** our yggdrasil /64 as text, when the caller knows it better than the env (the network phase does) */
  yggPrefix?: string | null;
}

export function splitCheckTargets(text: string | undefined): string[] {
  return (text ?? "").split(/[\s,]+/).filter(Boolean);
}

const SCHEME = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//;

export function parseCheckTarget(text: string): Probe {
  const t = text.trim();
  if (SCHEME.test(t) || t.startsWith("exec:")) return parseProbeUrl(t);
  // a bare IPv6 address has several colons and no brackets: it cannot carry a port
  const url = /^\[.*\]:\d+$/.test(t) || /^[^:[\]]+:[^:]*$/.test(t) ? `tcp://${t}` : `icmp://${t.includes(":") && !t.startsWith("[") ? `[${t}]` : t}`;
  try {
    return parseProbeUrl(url);
  } catch (e) {
    if (!(e instanceof ProbeUrlError)) throw e;
    throw new ProbeUrlError(`bad target '${t}': ${e.message.replace(/^bad probe URL '[^']*': /, "").replace(/ \(forms: .*\)$/, "")} (forms: HOST, HOST:PORT, [V6]:PORT, or a probe URL)`);
  }
}

/** Runs all checks in parallel; returns the failures (empty = all reachable). */
export async function runChecks(targets: string[], o: CheckOpts): Promise<string[]> {
  const { runProbe } = await import("./run.ts");
  const results = await Promise.all(
    targets.map(async (t) => {
      let probe: Probe;
      try {
        probe = parseCheckTarget(t);
      } catch (e) {
        o.log(`check ${t}: FAIL ${(e as Error).message}`);
        return `${t}: ${(e as Error).message}`;
      }
      const r = await runProbe(probe, {
        timeoutMs: o.timeoutMs,
        env: o.env ?? process.env,
        ...(o.yggPrefix !== undefined ? { yggPrefix: o.yggPrefix } : {}),
      });
      const host = probe.kind === "exec" ? undefined : probe.host;
      const via = r.address !== undefined && r.address !== host ? ` (${r.address})` : "";
      const detail = r.output.trim().split("\n")[0]!.slice(0, 300);
      o.log(`check ${t}${via}: ${r.ok ? "OK" : `FAIL ${detail}`}`);
      return r.ok ? null : `${t}: ${detail}`;
    }),
  );
  return results.filter((x): x is string => x !== null);
}
