// `man8s host setup|check`: prepares and diagnoses a Man8S host (see docs/host.md).
import { existsSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { isUsageError, parseCli, UsageError, usageExit } from "../../common/cli.ts";
import { AgentError } from "../errors.ts";
import { DEFAULT_SOCKET, checkAbsPath } from "../layout.ts";
import { formatChecks, runChecks } from "./check.ts";
import { FORWARDING_SYSCTLS, checkBridgeName, checkDns, checkIPv4Cidr, checkPrefix64 } from "./network.ts";
import { type FileResult, diff, plan, withMarker, write } from "./setup.ts";
import { AGENT_SERVICE_UNIT, AGENT_SOCKET_UNIT } from "./units.ts";
import { yggdrasilSelf } from "./ygg.ts";

const HELP = `usage: man8s host setup [options]    write the bridge's networkd files, forwarding, the agent's units
       man8s host check [options]    diagnose this host: one line per check, ok or FAIL with its fix

setup options:
  --bridge NAME            the containers' bridge (default srvgrp0)
  --ula PREFIX             IPv6 ULA /64 advertised on the bridge (default fc00::/64)
  --ipv4 ADDR/LEN          the bridge's IPv4 address; DHCP serves its network (default 172.17.0.1/16)
  --ygg-subnet auto|none|PREFIX   the host's yggdrasil /64 (auto: yggdrasilctl getSelf); the bridge gets ::1
  --dns ADDR               DNS server handed out by DHCP (repeatable; default: the uplink's)
  --binary PATH            the man8s binary the agent's unit runs (default: this binary)
  --bundle DIR             the init bundle (default: man8s-init next to the binary)
  --socket PATH            the agent's admin socket (default ${DEFAULT_SOCKET})
  --root DIR               write under DIR instead of / (nothing is started or reloaded)
  --dry-run                print every file it would write, write nothing
  --force                  replace files it did not write (or that were edited since)

check options: --bridge NAME, --socket PATH, --machines-dir DIR (default /var/lib/machines)
`;

const usage = (m: string) => new UsageError(m);

function parse(args: string[]) {
  return parseCli(args, {
    bridge: { type: "string", default: "srvgrp0" },
    ula: { type: "string", default: "fc00::/64" },
    ipv4: { type: "string", default: "172.17.0.1/16" },
    "ygg-subnet": { type: "string", default: "auto" },
    dns: { type: "string", multiple: true, default: [] },
    binary: { type: "string" },
    bundle: { type: "string" },
    socket: { type: "string", default: DEFAULT_SOCKET },
    root: { type: "string", default: "/" },
    "machines-dir": { type: "string", default: "/var/lib/machines" },
    "dry-run": { type: "boolean", default: false },
    force: { type: "boolean", default: false },
  });
}

function yggSubnet(v: string): string | null {
  if (v === "none") return null;
  if (v !== "auto") return checkPrefix64(v, "--ygg-subnet");
  const self = yggdrasilSelf();
  if (!self.ok) throw usage(`--ygg-subnet auto: ${self.error}; start yggdrasil, or give --ygg-subnet PREFIX (or none)`);
  return self.subnet;
}

function run(argv: string[]): string {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe", timeout: 60_000 });
  if (r.exitCode !== 0) throw new AgentError("E_IO", `${argv.join(" ")} failed (${r.exitCode ?? r.signalCode}): ${r.stderr.toString().slice(-500).trim()}`);
  return `${argv.join(" ")}\n`;
}

/** On the live host (root /): apply what changed now, as a reboot would. */
function apply(results: FileResult[], out: (s: string) => void): void {
  const changed = new Set(results.filter((r) => r.outcome === "created" || r.outcome === "updated").map((r) => r.role));
  if (changed.has("sysctl")) {
    for (const [path, value] of FORWARDING_SYSCTLS) writeFileSync(path, value);
    out(`applied ${FORWARDING_SYSCTLS.map(([p, v]) => `${p.slice("/proc/sys/".length).replace(/\//g, ".")}=${v}`).join(" ")}\n`);
  }
  if (!existsSync("/run/systemd/system")) {
    if (changed.size > 0) out("systemd is not running: units and networkd files take effect at the next boot under systemd\n");
    return;
  }
  if ([...changed].some((r) => r !== "sysctl")) out(run(["systemctl", "daemon-reload"]));
  if (changed.has("netdev") || changed.has("network")) {
    out(run(["systemctl", "enable", "--now", "systemd-networkd.service"]));
    out(run(["networkctl", "reload"]));
  }
  if (changed.has("agent-socket") || changed.has("agent-service")) {
    out(run(["systemctl", "enable", AGENT_SOCKET_UNIT, AGENT_SERVICE_UNIT]));
    out(run(["systemctl", "start", AGENT_SOCKET_UNIT]));
    // a running agent picks up a changed command line; containers keep running (it knows them on restart)
    if (changed.has("agent-service")) out(run(["systemctl", "try-restart", AGENT_SERVICE_UNIT]));
  }
}

export async function runHost(args: string[]): Promise<number> {
  const out = (s: string) => process.stdout.write(s);
  const cmd = args[0];
  if (cmd === "help" || cmd === "--help" || cmd === "-h") {
    out(HELP);
    return 0;
  }
  if (cmd !== "setup" && cmd !== "check") return usageExit("host", cmd === undefined ? "no command (setup or check)" : `unknown command '${cmd}' (setup or check)`);
  try {
    const { values: v, positionals } = parse(args.slice(1));
    if (v.help) {
      out(HELP);
      return 0;
    }
    if (positionals.length > 0) throw usage(`unexpected argument '${positionals[0]}'`);
    const bridge = checkBridgeName(v.bridge);
    const socket = checkAbsPath(resolve(v.socket), "--socket");
    if (cmd === "check") {
      const rs = await runChecks({ bridge, socket, machinesDir: checkAbsPath(resolve(v["machines-dir"]), "--machines-dir") });
      out(formatChecks(rs));
      const failed = rs.filter((r) => !r.ok).length;
      out(failed === 0 ? `all ${rs.length} checks ok\n` : `${failed} of ${rs.length} checks failed\n`);
      return failed === 0 ? 0 : 1;
    }
    const root = checkAbsPath(resolve(v.root), "--root");
    const binary = checkAbsPath(resolve(v.binary ?? process.execPath), "--binary");
    if (v.binary === undefined && /\/bun$/.test(binary)) throw usage("running from source: give --binary (the built man8s) for the agent's unit");
    const opts = {
      bridge,
      ula: checkPrefix64(v.ula, "--ula"),
      ipv4: checkIPv4Cidr(v.ipv4),
      yggSubnet: yggSubnet(v["ygg-subnet"]),
      dns: v.dns.map(checkDns),
      binary,
      bundle: checkAbsPath(resolve(v.bundle ?? `${dirname(binary)}/man8s-init`), "--bundle"),
      socket,
    };
    const results = diff(root, plan(opts), v.force);
    if (v["dry-run"]) {
      for (const r of results) out(`--- ${join(root, r.path)} (${r.outcome === "refused" ? `refused: ${r.reason}` : `would be ${r.outcome}`})\n${withMarker(r.content)}\n`);
      return results.some((r) => r.outcome === "refused") ? 1 : 0;
    }
    write(root, results);
    for (const r of results) out(`${r.outcome.padEnd(9)} ${join(root, r.path)}\n`);
    if (results.every((r) => r.outcome === "unchanged")) {
      out("nothing changed\n");
      return 0;
    }
    if (root === "/") apply(results, out);
    return 0;
  } catch (e) {
    const err = e as AgentError;
    // a bad flag or value (the checks throw E_BAD_ARGS) is a usage error; anything else failed the work
    if (isUsageError(e) || err.code === "usage" || err.code === "E_BAD_ARGS") return usageExit(`host ${cmd}`, err.message);
    process.stderr.write(`man8s host ${cmd}: ${err.message}\n`);
    return 1;
  }
}
