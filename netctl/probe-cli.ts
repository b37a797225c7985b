// `man8s netctl probe URL [--timeout S] [--json]`: runs one probe (init/probes) from the command line.
//
//   runProbe(args): Promise<number>   exit 0 pass, 1 fail, 64 bad usage
//
// Hidden test/diagnostic mode (not in --help): `probe --notify-ready [URL] [--interval D] [--linger D]
// [--claim-pid N]` runs the MAN8S_READY machinery: polls URL until it passes (no URL: at once), sends READY=1
// + STATUS= to $NOTIFY_SOCKET (claiming pid 1 when it is PID 2), prints one JSON line, stays LINGER (default
// 300 ms) and exits 0. It is how the tests prove READY=1 through a real systemd-nspawn before the init uses it.
import { parseProbeUrl, ProbeUrlError } from "../init/probes/url.ts";
import { runProbe as runOne, goDuration } from "../init/probes/run.ts";
import { parseWaitTimeoutMs } from "../init/probes/waitfor.ts";
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
      "notify-ready": { type: "boolean" },
      interval: { type: "string" },
      linger: { type: "string" },
      "claim-pid": { type: "string" },
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
  const json = v.json === true, notifyReady = v["notify-ready"] === true;
  const timeoutText = v.timeout, intervalText = v.interval, lingerText = v.linger, claimText = v["claim-pid"];
  let timeoutMs: number, intervalMs: number, lingerMs: number;
  try {
    timeoutMs = parseWaitTimeoutMs(timeoutText, "--timeout", 5000) || 5000;
    intervalMs = parseWaitTimeoutMs(intervalText, "--interval", 100) || 100;
    lingerMs = parseWaitTimeoutMs(lingerText, "--linger", 300);
  } catch (e) {
    return usage((e as Error).message);
  }
  if (notifyReady) return await notifyReadyMode(url, intervalMs, lingerMs, claimText);
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

async function notifyReadyMode(url: string | undefined, intervalMs: number, lingerMs: number, claimText: string | undefined): Promise<number> {
  const { startReady } = await import("../init/probes/ready.ts");
  const { log } = await import("../common/log.ts");
  if (url !== undefined) {
    try {
      parseProbeUrl(url);
    } catch (e) {
      return usage((e as Error).message);
    }
  }
  const claimPid = claimText === undefined ? undefined : Number(claimText);
  if (claimPid !== undefined && !Number.isInteger(claimPid)) return usage(`--claim-pid '${claimText}' is not a pid`);
  const env = { ...process.env, MAN8S_READY: url ?? "" };
  const h = startReady(env, { log, intervalMs, ...(claimPid !== undefined ? { claimPid } : {}) });
  const info = await h.done;
  await h.stop();
  process.stdout.write(`${JSON.stringify({ pid: process.pid, ...info })}\n`);
  if (lingerMs > 0) await Bun.sleep(lingerMs);
  return info?.notify.sent ? 0 : 1;
}
