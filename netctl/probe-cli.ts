// `man8s netctl probe URL [--timeout S] [--json]`: runs one probe (init/probes) from the command line.
//
//   runProbe(args): Promise<number>   exit 0 pass, 1 fail, 64 bad usage
import { parseProbeUrl, ProbeUrlError } from "../init/probes/url.ts";
import { runProbe as runOne, goDuration } from "../init/probes/run.ts";
import { parseWaitTimeoutMs } from "../init/probes/waitfor.ts";

const HELP = `usage: man8s netctl probe URL [--timeout S] [--json]

Runs one probe once and says whether it passed.
  URL forms:
    tcp://HOST:PORT            a TCP connection is established
    http://HOST[:PORT]/PATH    the response status is 2xx or 3xx (redirects are not followed)
    https://HOST[:PORT]/PATH   the same over TLS (certificate not verified)
    exec:CMD                   CMD exits 0 (run by /bin/sh -c when present)
    icmp://HOST                an ICMP echo reply arrives
  HOST: an address ([v6] in brackets), a DNS name, or a container name (its yggdrasil address in the /64 of
  MAN8S_YGGDRASIL_PREFIX or MAN8S_YGGDRASIL_ADDRESS).
options:
  --timeout S   give up after S seconds (default 5; also 500ms, 2s, 1m); exec: kills its process group
  --json        print {url, ok, exitCode, output, timedOut, durationMs, address} as one JSON line
exit status: 0 passed, 1 failed or timed out, 64 bad usage
`;

function usage(msg: string): number {
  process.stderr.write(`man8s netctl probe: ${msg}\n\n${HELP}`);
  return 64;
}

export async function runProbe(args: string[]): Promise<number> {
  let url: string | undefined;
  let json = false;
  let timeoutText: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = (): string | undefined => {
      const eq = a.indexOf("=");
      if (eq >= 0) return a.slice(eq + 1);
      return args[++i];
    };
    const name = a.startsWith("--") ? a.replace(/=.*$/, "") : a;
    switch (name) {
      case "-h":
      case "--help":
        process.stdout.write(HELP);
        return 0;
      case "--json":
        json = true;
        break;
      case "--timeout":
        timeoutText = value();
        if (timeoutText === undefined) return usage("--timeout needs a value");
        break;
      default:
        if (a.startsWith("-") && a !== "-") return usage(`unknown option '${a}'`);
        if (url !== undefined) return usage(`one URL only (got '${url}' and '${a}')`);
        url = a;
    }
  }
  let timeoutMs: number;
  try {
    timeoutMs = parseWaitTimeoutMs(timeoutText, "--timeout", 5000) || 5000;
  } catch (e) {
    return usage((e as Error).message);
  }
  if (url === undefined) return usage("missing URL");
  let probe;
  try {
    probe = parseProbeUrl(url);
  } catch (e) {
    if (e instanceof ProbeUrlError) return usage(e.message);
    throw e;
  }
  const r = await runOne(probe, { timeoutMs, env: process.env });
  if (json) {
    process.stdout.write(`${JSON.stringify({ url: probe.url, ok: r.ok, exitCode: r.exitCode, output: r.output, timedOut: r.timedOut, durationMs: Math.round(r.durationMs * 1000) / 1000, ...(r.address ? { address: r.address } : {}) })}\n`);
  } else {
    const out = r.output.replace(/\s+$/, "");
    const addr = r.address && r.address !== (probe.kind === "exec" ? "" : probe.host) ? ` [${r.address}]` : "";
    process.stdout.write(`${r.ok ? "ok" : "FAIL"} ${probe.url}${addr} ${goDuration(Math.round(r.durationMs))}${r.timedOut ? " (timed out)" : ""}${out ? `: ${out}` : ""}\n`);
  }
  return r.ok ? 0 : 1;
}
