// `man8s netctl probe URL [--timeout S] [--json]`: runs one probe (probes/) from the command line.
//
//   runProbe(args): Promise<number>   exit 0 pass, 1 fail, 64 bad usage
import { parseProbeUrl, ProbeUrlError } from "../probes/url.ts";
import { runProbe as runOne, goDuration } from "../probes/run.ts";
import { parseWaitTimeoutMs } from "../probes/waitfor.ts";
import { isUsageError, parseCli, usageExit } from "../common/cli.ts";

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

const usage = (msg: string): number => usageExit("netctl probe", msg);

export async function runProbe(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseCli(args, {
      json: { type: "boolean" },
      timeout: { type: "string" },
    });
  } catch (e) {
    if (isUsageError(e)) return usage(e.message);
    throw e;
  }
  const { values: v, positionals } = parsed;
  if (v.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (positionals.length > 1) return usage(`one URL only (got '${positionals[0]}' and '${positionals[1]}')`);
  const url = positionals[0];
  const json = v.json === true;
  const timeoutText = v.timeout;
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
