// `man8s netctl ...`: up | status | check | address. Heavy modules are imported per command.
import type { ParseArgsOptionsConfig } from "node:util";
import { isUsageError, parseCli, UsageError, usageExit } from "../common/cli.ts";
import { ExitError, log } from "../common/log.ts";

const HELP: Record<string, string> = {
  main: `usage: man8s netctl COMMAND [ARGS]

commands:
  up [--once] [--json]            bring the network up (DHCPv4, SLAAC, yggdrasil) as the init does
  status [--json]                 interface, addresses, lease, table 199 and the ygg rule
  check [TARGET...]               reachability of TARGETs (default: MAN8S_CHECK_TARGETS)
  probe URL [--timeout S] [--json]  run one probe (tcp://, http(s)://, exec:, icmp://) once
  address getsuffix NAME          mbctl's suffix of NAME in ::/64 (two lines, as mbctl prints them)
  address NAME [--prefix PREFIX]  the yggdrasil address of NAME in PREFIX (default MAN8S_YGGDRASIL_PREFIX)

every command takes --help. Environment: see docs/netctl.md.
`,
  up: `usage: man8s netctl up [--once] [--json]

Brings the network up from the environment (MAN8S_NETWORK, MAN8S_NETWORK_TIMEOUT, MAN8S_HOST_IFACE,
MAN8S_YGGDRASIL_ADDRESS or MAN8S_CONTAINER_NAME + MAN8S_YGGDRASIL_PREFIX, MAN8S_YGGDRASIL_GATEWAY,
MAN8S_CHECK_TARGETS, MAN8S_NETWORK_FAST_START) and prints the result once online. Without --once it then
stays in the foreground and keeps the DHCPv4 lease (renew, rebind, expiry, NAK) until SIGTERM or SIGINT.
With --once it exits once online and the SLAAC address's DAD is over (about 1 s; a duplicate gets a new
interface identifier); the address then lives until its lease lifetime runs out.
  --json   print the result as JSON (addresses, lease, timings in ms)
exit codes: 0 online (or stopped by a signal) · 65 invalid environment · 69 not online before the timeout
`,
  status: `usage: man8s netctl status [--json]

Shows the live state read from the kernel over rtnetlink: the interface (MAN8S_HOST_IFACE or the first
non-loopback link), its addresses with flags and lifetimes, default routes, table 199, the rules that
point at table 199, and the last DHCPv4 lease recorded by 'up' or the init (/run/man8s/netctl.json).
`,
  check: `usage: man8s netctl check [TARGET...]

Checks that each TARGET is reachable; without arguments the targets come from MAN8S_CHECK_TARGETS
(space or comma separated). TARGET is a probe URL (tcp://, http(s)://, exec:, icmp://; see 'probe --help'),
HOST:PORT or [IPV6]:PORT (a TCP connection must open), or a bare HOST (it must answer an ICMP echo). HOST
resolves as in every probe: an address, localhost, /etc/hosts, a container name (its yggdrasil address in
MAN8S_YGGDRASIL_PREFIX, or in the /64 of MAN8S_YGGDRASIL_ADDRESS), DNS. Reference: docs/probes.md.
exit codes: 0 all reachable · 64 bad usage · 69 some target unreachable
`,
  address: `usage: man8s netctl address getsuffix NAME
       man8s netctl address NAME [--prefix PREFIX]

The mbctl address scheme: the last (128 - prefix length) bits of SHA-256(NAME as UTF-8) in the prefix,
printed in RFC 5952 form. 'getsuffix' prints exactly what 'mbctl address getsuffix' prints. PREFIX
defaults to MAN8S_YGGDRASIL_PREFIX; a bare address is taken as its /64.
exit codes: 0 ok · 64 bad usage or invalid prefix
`,
};

const out = (s: string) => process.stdout.write(s);

export async function runNetctl(args: string[]): Promise<number> {
  const [cmd, ...rest] = args;
  try {
    if (cmd === "--help" || cmd === "-h" || cmd === "help") {
      out(HELP.main!);
      return 0;
    }
    if (cmd === undefined) return usageExit("netctl", "no command (up, status, check, probe or address)");
    // probes are the probes/ leaf; their CLI module parses its own arguments and --help
    if (cmd === "probe") return await (await import("./probe-cli.ts")).runProbe(rest);
    if (!(cmd in HELP) || cmd === "main") return usageExit("netctl", `unknown command '${cmd}'`);
    try {
      switch (cmd) {
        case "address":
          return await cmdAddress(rest);
        case "up":
          return await cmdUp(rest);
        case "status":
          return await cmdStatus(rest);
        case "check":
          return await cmdCheck(rest);
      }
    } catch (e) {
      if (isUsageError(e)) return usageExit(`netctl ${cmd}`, e.message);
      throw e;
    }
    return 64;
  } catch (e) {
    if (e instanceof ExitError) {
      log(`netctl: ${e.message}`);
      return e.code;
    }
    log(`netctl: internal error: ${(e as Error).stack ?? String(e)}`);
    return 70;
  }
}

/** parseCli for one command; null when it printed that command's --help. */
function parse<const O extends ParseArgsOptionsConfig>(cmd: string, args: string[], options: O) {
  const r = parseCli(args, options);
  if ((r.values as { help?: boolean }).help) {
    out(HELP[cmd]!);
    return null;
  }
  return r;
}

function noPositionals(pos: string[]): void {
  if (pos.length) throw new UsageError(`unexpected argument '${pos[0]}'`);
}

async function cmdAddress(args: string[]): Promise<number> {
  const r = parse("address", args, { prefix: { type: "string" } });
  if (!r) return 0;
  const pos = r.positionals;
  const m = await import("../common/net/addrmath.ts");
  if (pos[0] === "getsuffix") {
    if (pos.length !== 2 || r.values.prefix !== undefined) throw new UsageError("getsuffix takes exactly one NAME");
    out(m.getsuffixLines(pos[1]!));
    return 0;
  }
  const name = pos[0];
  if (name === undefined) throw new UsageError("missing NAME");
  noPositionals(pos.slice(1));
  const prefixText = r.values.prefix ?? process.env.MAN8S_YGGDRASIL_PREFIX;
  if (!prefixText) throw new UsageError("no --prefix given and MAN8S_YGGDRASIL_PREFIX is not set");
  const p = m.parsePrefix6(prefixText, 64);
  if (!p) throw new UsageError(`'${prefixText}' is not an IPv6 prefix`);
  out(`${m.formatIPv6(m.addressForName(name, p))}\n`);
  return 0;
}

async function cmdUp(args: string[]): Promise<number> {
  const r = parse("up", args, { once: { type: "boolean" }, json: { type: "boolean" } });
  if (!r) return 0;
  noPositionals(r.positionals);
  const json = r.values.json === true;
  // the stop signals are ours from the start: one during bring-up ends it (exit 0, said in the log) instead of
  // the default action killing us half-way
  const stopSignal = new Promise<"stop">((res) => {
    for (const s of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.once(s, () => res("stop"));
  });
  const { bringUp } = await import("./bringup.ts");
  const show = (r: unknown) => (json ? out(`${JSON.stringify(r)}\n`) : undefined);
  const up = await Promise.race([bringUp(process.env, { log, onChange: (r) => show({ event: r.lease?.event, ...r }) }), stopSignal]);
  if (up === "stop") {
    log("stopped by a signal during bring-up");
    return 0;
  }
  const { result, stop, settled } = up;
  if (json) show(result);
  else {
    out(`interface ${result.iface}\n`);
    for (const [k, v] of Object.entries(result.addresses)) out(`${k.padEnd(10)} ${v}\n`);
    out(`timings    ${Object.entries(result.timings).map(([k, v]) => `${k}=${v.toFixed(1)}ms`).join(" ")}\n`);
  }
  if (r.values.once) {
    // online may rest on an optimistic address: see its DAD through (about 1 s) before leaving it alone
    await settled;
    await stop();
    return 0;
  }
  // stay resident so the lease is renewed; a stop signal ends us cleanly
  await stopSignal;
  await stop();
  return 0;
}

async function cmdCheck(args: string[]): Promise<number> {
  const r = parse("check", args, {});
  if (!r) return 0;
  const { runChecks, splitCheckTargets } = await import("../probes/check.ts");
  const targets = r.positionals.length ? r.positionals : splitCheckTargets(process.env.MAN8S_CHECK_TARGETS);
  if (!targets.length) throw new UsageError("no TARGET given and MAN8S_CHECK_TARGETS is empty");
  // names resolve as in every probe (probes/resolve.ts); our ygg /64 comes from the env
  const failed = await runChecks(targets, { timeoutMs: 3000, log: (m) => out(`${m}\n`) });
  return failed.length ? 69 : 0;
}

async function cmdStatus(args: string[]): Promise<number> {
  const r = parse("status", args, { json: { type: "boolean" } });
  if (!r) return 0;
  noPositionals(r.positionals);
  const { collectStatus, renderStatus } = await import("./status.ts");
  const s = collectStatus(process.env);
  out(r.values.json ? `${JSON.stringify(s, null, 1)}\n` : renderStatus(s));
  return 0;
}
