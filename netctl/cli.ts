// `man8s netctl ...`: up | status | check | address. Heavy modules are imported per command.
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
    if (cmd === undefined || cmd === "--help" || cmd === "-h" || cmd === "help") {
      (cmd === undefined ? process.stderr : process.stdout).write(HELP.main!);
      return cmd === undefined ? 64 : 0;
    }
    // probes belong to the init (probes/); their CLI module parses its own arguments and --help
    if (cmd === "probe") return await (await import("./probe-cli.ts")).runProbe(rest);
    if (!(cmd in HELP) || cmd === "main") {
      process.stderr.write(`man8s netctl: unknown command '${cmd}'\n\n${HELP.main}`);
      return 64;
    }
    if (rest.includes("--help") || rest.includes("-h")) {
      out(HELP[cmd]!);
      return 0;
    }
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

function usage(cmd: string, msg: string): never {
  throw new ExitError(64, `${msg}\n\n${HELP[cmd]}`);
}

function flags(cmd: string, args: string[], allowed: string[]): Set<string> {
  const f = new Set<string>();
  for (const a of args) {
    if (!allowed.includes(a)) usage(cmd, `unexpected argument '${a}'`);
    f.add(a);
  }
  return f;
}

async function cmdAddress(args: string[]): Promise<number> {
  const m = await import("../common/net/addrmath.ts");
  if (args[0] === "getsuffix") {
    if (args.length !== 2) usage("address", "getsuffix takes exactly one NAME");
    out(m.getsuffixLines(args[1]!));
    return 0;
  }
  let name: string | undefined;
  let prefixText: string | undefined = process.env.MAN8S_YGGDRASIL_PREFIX;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--prefix") {
      prefixText = args[++i];
      if (prefixText === undefined) usage("address", "--prefix needs a value");
    } else if (a.startsWith("--prefix=")) prefixText = a.slice(9);
    else if (name === undefined) name = a;
    else usage("address", `unexpected argument '${a}'`);
  }
  if (name === undefined) usage("address", "missing NAME");
  if (!prefixText) usage("address", "no --prefix given and MAN8S_YGGDRASIL_PREFIX is not set");
  const p = m.parsePrefix6(prefixText, 64);
  if (!p) usage("address", `'${prefixText}' is not an IPv6 prefix`);
  out(`${m.formatIPv6(m.addressForName(name, p))}\n`);
  return 0;
}

async function cmdUp(args: string[]): Promise<number> {
  const f = flags("up", args, ["--once", "--json"]);
  // the stop signals are ours from the start: one during bring-up ends it (exit 0, said in the log) instead of
  // the default action killing us half-way
  const stopSignal = new Promise<"stop">((res) => {
    for (const s of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.once(s, () => res("stop"));
  });
  const { bringUp } = await import("./bringup.ts");
  const show = (r: unknown) => (f.has("--json") ? out(`${JSON.stringify(r)}\n`) : undefined);
  const up = await Promise.race([bringUp(process.env, { log, onChange: (r) => show({ event: r.lease?.event, ...r }) }), stopSignal]);
  if (up === "stop") {
    log("stopped by a signal during bring-up");
    return 0;
  }
  const { result, stop, settled } = up;
  if (f.has("--json")) show(result);
  else {
    out(`interface ${result.iface}\n`);
    for (const [k, v] of Object.entries(result.addresses)) out(`${k.padEnd(10)} ${v}\n`);
    out(`timings    ${Object.entries(result.timings).map(([k, v]) => `${k}=${v.toFixed(1)}ms`).join(" ")}\n`);
  }
  if (f.has("--once")) {
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
  const { runChecks, splitCheckTargets } = await import("../probes/check.ts");
  const targets = args.length ? args : splitCheckTargets(process.env.MAN8S_CHECK_TARGETS);
  if (!targets.length) usage("check", "no TARGET given and MAN8S_CHECK_TARGETS is empty");
  // names resolve as in every probe (probes/resolve.ts); our ygg /64 comes from the env
  const failed = await runChecks(targets, { timeoutMs: 3000, log: (m) => out(`${m}\n`) });
  return failed.length ? 69 : 0;
}

async function cmdStatus(args: string[]): Promise<number> {
  const f = flags("status", args, ["--json"]);
  const { collectStatus, renderStatus } = await import("./status.ts");
  const s = collectStatus(process.env);
  out(f.has("--json") ? `${JSON.stringify(s, null, 1)}\n` : renderStatus(s));
  return 0;
}
