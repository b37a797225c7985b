// `man8s machines ...` and `man8s oci download`: mbctl's commands, as clients of the host agent (the work
// runs there, so one NAME is handled by one operation at a time). Progress arrives as events and is printed
// one line each (JSON objects with --json). Exit codes: 0 ok, 1 the agent refused or failed, 64 usage,
// 69 the agent cannot be reached. Ctrl-C closes the connection, which cancels a pull in the agent.
import { lstatSync } from "node:fs";
import os from "node:os";
import { resolve } from "node:path";
import { suffixText } from "./address.ts";
import { AgentClient } from "./client.ts";
import { forTerminal } from "./client-cli.ts";
import { AgentError } from "./errors.ts";
import { DEFAULT_SOCKET } from "./layout.ts";
import { isUsageError, parseCli, UsageError, usageExit } from "../common/cli.ts";
import { type ClusterSnapshot, clusterHeader, clusterLine } from "./cluster/view.ts";

const HELP = `usage: man8s machines [--socket PATH] [--json] COMMAND ...

  pull SOURCE NAME [options]   pull an image into the store, unpack it to /var/lib/man8machines/NAME,
                               classify, render, install and inject; refuses an existing NAME
  list                         every machine: name, image and digest, state, yggdrasil address
  list --cluster               every host's machines (an agent with --etcd): name, host, state, address
  remove NAME [--keep-data]    remove a stopped machine: rootfs, links, config, storage (unless --keep-data)
  shell NAME [--network-only] [-- CMD...]   enter a running machine's namespaces (nsenter), default /bin/sh
                               of the image; --network-only runs a HOST command in its network namespace
  exec NAME [--user U] -- CMD...   run CMD in the machine as the image's User (or U), with the app's
                               environment and WorkingDir; stdio and the exit code forwarded
  renew NAME [--to REF|sha256:DIGEST] [--timeout S]   re-resolve the image; if the digest changed: new
                               rootfs beside the old, re-render keeping your edits, swap, restart if it ran,
                               and roll back by itself when it does not come up within S (default 60)
  rollback NAME                back to the previous rootfs and config (one generation is kept)
  start | stop | restart NAME  systemctl on systemd-nspawn@NAME when systemd is PID 1; otherwise the agent
                               runs the unit's nspawn command line itself and supervises it

SOURCE: docker.io/library/nginx:1.25, registry:5000/app:tag, REF@sha256:..., docker://REF,
        oci:/DIR[:TAG], oci-archive:/FILE
pull options:
  --volume PATH=data|config|skip|/host/path   where a volume lives (repeatable)
  --env KEY=VALUE              extra env (repeatable, wins over the image's)
  --ready PROBE|healthy|start|none            MAN8S_READY
  --bundle-mode bind|copy      the init bundle bound read-only (default) or copied into the rootfs
  --bridge NAME | --private-network   VirtualEthernet on a bridge (default srvgrp0), or loopback only
  --start                      start the machine once it is installed
  --template netns-init|netns-noinit|netns-systemd   mbctl's templates, overriding the classification
  --tls-verify=false           plain HTTP or an unverified certificate (a local registry)
  --authfile FILE              registry credentials (containers-auth.json)
  --cert-dir DIR               client certificates and CAs for the registry

usage: man8s oci download SOURCE PATH    pull and unpack only (PATH = the rootfs, PATH.config.json beside it)
       man8s oci man8init PATH           (re)install the init bundle into a rootfs (a verified copy)
       man8s cache prune [--recent MIN]  remove the store's blobs that no machine's image references and no
                                         pull of the last MIN minutes (default 60; 0: machines only)
       man8s address getsuffix NAME      mbctl's two lines: the name and its address suffix in ::/64
`;

const OPTIONS = {
  socket: { type: "string" },
  json: { type: "boolean" },
  volume: { type: "string", multiple: true },
  env: { type: "string", multiple: true },
  ready: { type: "string" },
  "bundle-mode": { type: "string" },
  "tls-verify": { type: "string" },
  authfile: { type: "string" },
  "cert-dir": { type: "string" },
  "keep-data": { type: "boolean" },
  bridge: { type: "string" },
  user: { type: "string" },
  to: { type: "string" },
  timeout: { type: "string" },
  recent: { type: "string" },
  "network-only": { type: "boolean" },
  "private-network": { type: "boolean" },
  template: { type: "string" },
  start: { type: "boolean" },
  cluster: { type: "boolean" },
} as const;

function pairs(list: string[] | undefined, flag: string, what: string): Record<string, string> | undefined {
  if (!list?.length) return undefined;
  const out: Record<string, string> = {};
  for (const kv of list) {
    const i = kv.indexOf("=");
    if (i <= 0) throw new UsageError(`${flag} needs ${what}, got '${kv}'`);
    out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

function tlsVerify(v: string | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  if (v === "true") return true;
  if (v === "false") return false;
  throw new UsageError("--tls-verify takes true or false");
}

type V = ReturnType<typeof parse>["values"];
function parse(args: string[]) {
  return parseCli(args, OPTIONS);
}

function registry(v: V) {
  return { tlsVerify: tlsVerify(v["tls-verify"]), authfile: v.authfile ? resolve(v.authfile) : undefined, certDir: v["cert-dir"] ? resolve(v["cert-dir"]) : undefined };
}

type Group = "machines" | "oci" | "cache" | "address";

function requestOf(group: Group, pos: string[], v: V): [string, Record<string, unknown>] {
  const [cmd, ...rest] = pos;
  const need = (n: number, what: string) => {
    if (rest.length !== n) throw new UsageError(`${cmd} needs ${what}`);
  };
  if (group === "oci") {
    if (cmd === "man8init") {
      need(1, "PATH");
      return ["inject", { rootfs: resolve(rest[0]!), mode: "copy" }];
    }
    if (cmd !== "download") throw new UsageError(`unknown oci command '${cmd ?? ""}'`);
    need(2, "SOURCE PATH");
    return ["oci-download", { source: rest[0], path: resolve(rest[1]!), ...registry(v) }];
  }
  if (group === "cache") {
    if (cmd !== "prune" && cmd !== "clear") throw new UsageError(`unknown cache command '${cmd ?? ""}'`);
    need(0, "no arguments");
    const m = v.recent === undefined ? undefined : Number(v.recent);
    if (m !== undefined && (!Number.isInteger(m) || m < 0 || m > 525_600)) throw new UsageError("--recent needs 0..525600 minutes");
    return ["cache-prune", m === undefined ? {} : { recentMinutes: m }];
  }
  switch (cmd) {
    case "pull":
      need(2, "SOURCE NAME");
      return [
        "pull",
        {
          source: rest[0],
          name: rest[1],
          volumes: pairs(v.volume, "--volume", "PATH=data|config|skip|/host/path"),
          env: pairs(v.env, "--env", "KEY=VALUE"),
          ready: v.ready,
          bundleMode: v["bundle-mode"],
          start: v.start || undefined,
          bridge: v.bridge,
          privateNetwork: v["private-network"] || undefined,
          template: v.template,
          ...registry(v),
        },
      ];
    case "list":
      need(0, "no arguments");
      return v.cluster ? ["cluster", {}] : ["machines", {}];
    case "start":
    case "stop":
    case "restart":
      need(1, "NAME");
      return [cmd, { name: rest[0] }];
    case "renew": {
      need(1, "NAME");
      const t = v.timeout === undefined ? undefined : Number(v.timeout);
      if (t !== undefined && (!Number.isInteger(t) || t < 1 || t > 3600)) throw new UsageError("--timeout needs 1..3600 seconds");
      return ["renew", { name: rest[0], to: v.to, timeout: t, ...registry(v) }];
    }
    case "rollback":
      need(1, "NAME");
      return ["rollback", { name: rest[0] }];
    case "remove":
      need(1, "NAME");
      return ["remove", { name: rest[0], keepData: v["keep-data"] || undefined }];
    default:
      throw new UsageError(cmd ? `unknown command '${cmd}'` : "no command");
  }
}

const out = (s: string): void => void process.stdout.write(s.endsWith("\n") ? s : `${s}\n`);

function human(cmd: string, r: Record<string, unknown>): void {
  switch (cmd) {
    case "cluster": {
      const s = r as unknown as ClusterSnapshot;
      out(clusterHeader(s));
      for (const m of s.machines) out(clusterLine(m));
      return;
    }
    case "pull":
      out(`pulled ${forTerminal(r.name)} from ${forTerminal(r.source)} in ${(r.seconds as number).toFixed(1)} s`);
      out(`  digest ${forTerminal(r.digest)} (${String(r.layers)} layers, ${String(r.reused)} already stored, ${String(r.fetchedBytes)} bytes fetched)`);
      out(`  rootfs ${forTerminal(r.rootfs)}`);
      if (r.started) out(`  started (nspawn pid ${String((r.started as { pid: unknown }).pid)})`);
      return;
    case "oci-download":
      out(`downloaded ${forTerminal(r.digest)} into ${forTerminal(r.path)} (config ${forTerminal(r.config)})`);
      return;
    case "machines": {
      const rows = (r.machines as Record<string, unknown>[]).map((m) => [
        String(m.name),
        m.source ? String(m.source) : "-",
        m.digest ? String(m.digest).slice(0, 19) : "-",
        `${m.running ? (m.ready ? "ready" : "running") : "stopped"}/${String(m.phase)}${m.health ? ` health=${String(m.health)}` : ""}${m.exitCode !== undefined ? ` exit=${String(m.exitCode)}` : ""}`,
        m.address ? String(m.address) : "-",
      ].map(forTerminal));
      const head = ["NAME", "IMAGE", "DIGEST", "STATE", "ADDRESS"];
      const w = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i]!.length)));
      for (const row of [head, ...rows]) out(row.map((c, i) => c.padEnd(w[i]!)).join("  ").trimEnd());
      return;
    }
    case "start":
    case "restart":
      out(`${cmd === "start" ? "started" : "restarted"} ${forTerminal(r.name)} (${r.how === "systemd" ? "systemd-nspawn@ unit" : `supervised by the agent, nspawn pid ${String(r.pid)}`})`);
      return;
    case "stop":
      out(`stopped ${forTerminal(r.name)}${r.code !== null ? ` (nspawn exit code ${String(r.code)}${r.killed ? ", killed after the stop timeout" : ""})` : ""}`);
      return;
    case "renew":
      if (r.rolledBack) out(`rolled back ${forTerminal(r.name)} to ${forTerminal(r.digest)}: ${forTerminal(r.failedDigest)} did not come up`);
      else if (!r.changed) out(`${forTerminal(r.name)} is up to date (${forTerminal(r.digest)}), ${(r.seconds as number).toFixed(2)} s`);
      else out(`renewed ${forTerminal(r.name)}: ${forTerminal(r.previous)} -> ${forTerminal(r.digest)} in ${(r.seconds as number).toFixed(1)} s`);
      return;
    case "rollback":
      out(`rolled back ${forTerminal(r.name)} to ${forTerminal(r.digest)} (from ${forTerminal(r.from)})`);
      return;
    case "inject":
      out(`installed the init into ${forTerminal(r.path)} (${(r.files as unknown[]).length} entries, verified)`);
      return;
    case "cache-prune":
      out(`pruned ${(r.untagged as string[]).length} unused tags; blobs ${String(r.blobsBefore)} -> ${String(r.blobsAfter)}, ${String(r.bytesFreed)} bytes freed`);
      return;
    case "remove":
      for (const p of r.parts as { part: string; path: string; action: string }[]) out(`${p.action.padEnd(7)} ${p.part}: ${forTerminal(p.path)}`);
      return;
  }
}

export async function runMachines(group: Group, all: string[]): Promise<number> {
  // what follows `--` is the command for shell/exec, never options of ours
  const dd = all.indexOf("--");
  const args = dd < 0 ? all : all.slice(0, dd);
  const command = dd < 0 ? [] : all.slice(dd + 1);
  let v: V;
  let req: [string, Record<string, unknown>];
  try {
    let pos: string[];
    ({ values: v, positionals: pos } = parse(args));
    if (v.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (group === "address") {
      // computed here, as mbctl does (no agent, any name): the fixed prefix ::/64
      if (pos[0] !== "getsuffix" || pos.length !== 2) throw new UsageError("expected getsuffix NAME");
      out(`容器名字: ${forTerminal(pos[1])}\nIPv6 后缀地址: ${suffixText(pos[1]!)}`);
      return 0;
    }
    if (group === "machines" && (pos[0] === "shell" || pos[0] === "exec")) {
      if (pos.length !== 2) throw new UsageError(`${pos[0]} needs NAME (and -- CMD...)`);
      if (pos[0] === "exec" && command.length === 0) throw new UsageError("exec needs -- CMD...");
      return await enter(pos[0], pos[1]!, command, v);
    }
    req = requestOf(group, pos, v);
  } catch (e) {
    if (!isUsageError(e)) throw e;
    return usageExit(group, e.message);
  }
  const socket = v.socket ? resolve(v.socket) : DEFAULT_SOCKET;
  let c: AgentClient;
  try {
    c = await AgentClient.connect(socket);
  } catch (e) {
    process.stderr.write(`man8s ${group}: cannot connect to the agent at ${socket}: ${(e as Error).message}\n`);
    return 69;
  }
  // a layer's progress: updated in place on a terminal, one line per layer (when it is there) otherwise
  const tty = process.stderr.isTTY === true;
  let inPlace = false;
  c.eventHandler = (_id, ev) => {
    const e = ev as { step?: unknown; message?: unknown; layer?: { state?: unknown } };
    if (v.json) return out(JSON.stringify(ev));
    const line = `${forTerminal(e.step)}: ${forTerminal(e.message)}`;
    const clear = inPlace ? "\r\x1b[K" : "";
    if (e.step === "layer" && e.layer?.state === "fetching") {
      if (!tty) return;
      process.stderr.write(`${clear}${line.slice(0, (process.stderr.columns || 80) - 1)}`);
      inPlace = true;
      return;
    }
    process.stderr.write(`${clear}${line}\n`);
    inPlace = false;
  };
  // Ctrl-C: closing the connection cancels the operation in the agent, which removes what it made
  const interrupt = () => {
    c.close();
    process.exit(130);
  };
  process.on("SIGINT", interrupt);
  process.on("SIGTERM", interrupt);
  try {
    const r = (await c.request(req[0], req[1])) as Record<string, unknown>;
    if (v.json) out(JSON.stringify({ type: "result", result: r }));
    else human(req[0], r);
    return r.rolledBack === true ? 1 : 0; // a renew that had to roll back did not renew
  } catch (e) {
    if (e instanceof AgentError) {
      if (v.json) out(JSON.stringify({ type: "error", code: e.code, message: e.message }));
      process.stderr.write(`man8s ${group}: ${e.code}: ${forTerminal(e.message)}\n`);
      return 1;
    }
    process.stderr.write(`man8s ${group}: ${(e as Error).message}\n`);
    return 69;
  } finally {
    c.close();
  }
}

interface Enter {
  pid: number;
  env: Record<string, string>;
  workingDir: string;
  user: { uid: number; gid: number; groups: number[] } | null;
  hasShell: boolean;
  bundleShell: string | null;
  /** the bundle's launcher inside the machine (sets uid, gid and supplementary groups), or null */
  launcher: string | null;
  /** cgroup.procs files of the init's cgroups: exec joins them before it enters */
  cgroups: string[];
}

/**
 * argv[0] looked up in the machine's PATH through /proc/PID/root (the launcher execs a path, not a
 * name). A link is taken as found: it is resolved inside the machine when the launcher execs it.
 */
function pathIn(pid: number, argv0: string, path: string | undefined): string {
  if (argv0.includes("/")) return argv0;
  for (const d of (path ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":").slice(0, 64)) {
    if (!d.startsWith("/")) continue;
    try {
      const st = lstatSync(`/proc/${pid}/root${d}/${argv0}`);
      if (!st.isDirectory()) return `${d}/${argv0}`;
    } catch {
      // not in this directory
    }
  }
  return argv0; // the launcher says "not found" (127)
}

/** A host shell that writes itself into each cgroup.procs file, then execs argv (children inherit). */
function inCgroups(files: string[], argv: string[]): string[] {
  if (!files.length) return argv;
  const script = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo 0 > "$1" || { echo "man8s machines: cannot join the machine\'s cgroup $1" >&2; exit 125; }; shift; n=$((n-1)); done; exec "$@"';
  return ["/bin/sh", "-c", script, "man8s-exec", String(files.length), ...files, ...argv];
}

/**
 * shell / exec: the agent names the machine's PID 1 and the app's environment; nsenter runs here, so the
 * command has this terminal and its exit code is ours (128+N for a signal, as a shell reports it).
 */
async function enter(cmd: "shell" | "exec", name: string, command: string[], v: V): Promise<number> {
  const socket = v.socket ? resolve(v.socket) : DEFAULT_SOCKET;
  let e: Enter;
  try {
    const c = await AgentClient.connect(socket);
    try {
      e = (await c.request("enter", { name, user: v.user })) as Enter;
    } finally {
      c.close();
    }
  } catch (err) {
    const code = err instanceof AgentError ? `${err.code}: ` : "";
    process.stderr.write(`man8s machines: ${code}${forTerminal((err as Error).message)}\n`);
    return err instanceof AgentError ? 1 : 69;
  }
  let argv: string[];
  let env: Record<string, string>;
  if (cmd === "shell" && v["network-only"]) {
    // a host command in the machine's network namespace only (mbctl's `iperf3 -s` example)
    argv = ["nsenter", "-t", String(e.pid), "-n", "--", ...(command.length ? command : [process.env.SHELL || "/bin/sh"])];
    env = process.env as Record<string, string>;
  } else if (cmd === "shell") {
    if (!command.length && !e.hasShell && !e.bundleShell) {
      process.stderr.write(`man8s machines: the image of ${forTerminal(name)} has no /bin/sh: give a command (shell ${forTerminal(name)} -- CMD)\n`);
      return 1;
    }
    const shell = e.hasShell ? ["/bin/sh"] : [e.bundleShell!, "sh"];
    argv = inCgroups(e.cgroups, ["nsenter", "-t", String(e.pid), "-a", "--", ...(command.length ? command : shell)]);
    env = { ...e.env, TERM: process.env.TERM ?? "dumb" };
  } else {
    if (e.launcher) {
      const u = e.user;
      const ids = u ? [String(u.uid), String(u.gid), u.groups.length ? u.groups.join(",") : String(u.gid)] : ["-", "-", "-"];
      const run = [e.launcher, "--man8s-exec", ...ids, "-", pathIn(e.pid, command[0]!, e.env.PATH), ...command];
      argv = inCgroups(e.cgroups, ["nsenter", "-t", String(e.pid), "-a", "--wd", "--", ...run]);
    } else {
      const ids = e.user ? ["-S", String(e.user.uid), "-G", String(e.user.gid)] : [];
      argv = inCgroups(e.cgroups, ["nsenter", "-t", String(e.pid), "-a", "--wd", ...ids, "--", ...command]);
    }
    env = { ...e.env, ...(process.env.TERM ? { TERM: process.env.TERM } : {}) };
  }
  const p = Bun.spawn(argv, { stdin: "inherit", stdout: "inherit", stderr: "inherit", env });
  // the terminal's signals go to the command (same process group); we only wait for it
  const ignore = () => {};
  process.on("SIGINT", ignore);
  process.on("SIGQUIT", ignore);
  const code = await p.exited;
  const sig = p.signalCode;
  if (sig) {
    const n = (os.constants.signals as Record<string, number>)[sig] ?? 1;
    return 128 + n;
  }
  return code;
}
