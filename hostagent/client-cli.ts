// `man8s agent <command>`: a client of the host agent's admin socket. Human-readable output by default,
// the raw result as JSON with --json. Exit codes: 0 ok, 1 the agent answered with an error,
// 64 bad usage, 69 the agent cannot be reached.
import { resolve } from "node:path";
import { AgentClient } from "./client.ts";
import { AgentError } from "./errors.ts";
import { DEFAULT_SOCKET } from "./layout.ts";
import { DEFAULT_STOP_TIMEOUT_S } from "../common/settings.ts";
import { isUsageError, parseCli, UsageError, usageExit } from "../common/cli.ts";
import type { Classification } from "./classify.ts";
import { type ContainerStatus, isFinal } from "./state.ts";
import { type ClusterEvent, type ClusterSnapshot, clusterLine } from "./cluster/view.ts";

const HELP = `usage: man8s agent [--socket PATH] [--json] COMMAND ...

  ping | version
  classify --rootfs DIR --config FILE
  render NAME --rootfs DIR --config FILE [render options]      (alias: plan)
  install NAME --rootfs DIR --config FILE [render options] [--force]
  inject --rootfs DIR [--copy | --bind] [--bundle DIR]
  address NAME [--prefix P]
  status [NAME]
  watch [NAME]
  watch --cluster                    every host's machines (--etcd), then each change
  lookup NAME[@HOST]                 a machine's host, yggdrasil address and readiness (as containers ask)

render options:
  --ygg-prefix P | --ygg-address A   the container's yggdrasil address (or its host's /64)
  --image-url URL                    recorded as MAN8S_OCI_IMAGE_URL
  --env KEY=VALUE                    extra env (repeatable, wins over the image's)
  --stop-timeout SECONDS             MAN8S_STOP_TIMEOUT (default ${DEFAULT_STOP_TIMEOUT_S})
  --bridge NAME | --private-network  VirtualEthernet on a bridge (default srvgrp0), or loopback only
  --no-private-users                 no PrivateUsers=pick / idmap
  --bundle-mode bind|copy            bind the host bundle read-only (default) or expect a copy
  --bundle DIR                       the bundle to bind or copy
  --volume PATH=data|config|skip|/host/path   where a volume lives (repeatable; default data:
                                     /var/lib/man8machine_storage/NAME/PATH; config: .../man8machine_configs/NAME/PATH)
  --ready PROBE|healthy|start|none   MAN8S_READY (default: healthy with a Healthcheck, else the first
                                     exposed TCP port on 127.0.0.1, else start)
  --health-on-failure none|restart|stop|kill  MAN8S_HEALTH_ON_FAILURE: what the init does when the app turns
                                     unhealthy (default none: only report)
  --nspawn | --envfile               render: print only that file

--config takes an OCI image config (skopeo inspect --config), docker inspect output, or umoci's config.json.
`;

interface Parsed {
  socket: string;
  json: boolean;
  cmd: string;
  pos: string[];
  /** "--flag" -> its values in order (a boolean flag: ["1"]) */
  opts: Map<string, string[]>;
}

const OPTIONS = {
  socket: { type: "string" },
  json: { type: "boolean" },
  rootfs: { type: "string" },
  config: { type: "string" },
  "ygg-prefix": { type: "string" },
  "ygg-address": { type: "string" },
  "image-url": { type: "string" },
  env: { type: "string", multiple: true },
  "stop-timeout": { type: "string" },
  bridge: { type: "string" },
  "bundle-mode": { type: "string" },
  bundle: { type: "string" },
  prefix: { type: "string" },
  volume: { type: "string", multiple: true },
  ready: { type: "string" },
  "health-on-failure": { type: "string" },
  force: { type: "boolean" },
  "private-network": { type: "boolean" },
  "no-private-users": { type: "boolean" },
  copy: { type: "boolean" },
  bind: { type: "boolean" },
  nspawn: { type: "boolean" },
  envfile: { type: "boolean" },
  cluster: { type: "boolean" },
} as const;

/** null: --help was asked for */
function parse(args: string[]): Parsed | null {
  const { values, positionals } = parseCli(args, OPTIONS);
  if (values.help) return null;
  const opts = new Map<string, string[]>();
  for (const [k, v] of Object.entries(values)) {
    if (k !== "socket" && k !== "json" && v !== undefined) opts.set(`--${k}`, Array.isArray(v) ? v : [typeof v === "string" ? v : "1"]);
  }
  const [cmd, ...pos] = positionals;
  if (!cmd) throw new UsageError("no command");
  return { socket: values.socket === undefined ? DEFAULT_SOCKET : resolve(values.socket), json: values.json === true, cmd, pos, opts };
}

const one = (p: Parsed, f: string) => p.opts.get(f)?.at(-1);
const path = (p: Parsed, f: string) => {
  const v = one(p, f);
  return v === undefined ? undefined : resolve(v);
};

function renderArgs(p: Parsed): Record<string, unknown> {
  const name = p.pos[0];
  if (!name) throw new UsageError(`${p.cmd} needs a container NAME`);
  const env: Record<string, string> = {};
  for (const kv of p.opts.get("--env") ?? []) {
    const i = kv.indexOf("=");
    if (i <= 0) throw new UsageError(`--env needs KEY=VALUE, got '${kv}'`);
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const volumes: Record<string, string> = {};
  for (const kv of p.opts.get("--volume") ?? []) {
    const i = kv.indexOf("=");
    if (i <= 0) throw new UsageError(`--volume needs PATH=data|config|skip|/host/path, got '${kv}'`);
    volumes[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const st = one(p, "--stop-timeout");
  return {
    name,
    rootfs: path(p, "--rootfs"),
    configPath: path(p, "--config"),
    yggPrefix: one(p, "--ygg-prefix"),
    yggdrasilAddress: one(p, "--ygg-address"),
    imageUrl: one(p, "--image-url"),
    env: Object.keys(env).length ? env : undefined,
    stopTimeout: st === undefined ? undefined : Number(st),
    bridge: one(p, "--bridge"),
    privateNetwork: p.opts.has("--private-network") || undefined,
    privateUsers: p.opts.has("--no-private-users") ? false : undefined,
    bundleMode: one(p, "--bundle-mode"),
    bundle: path(p, "--bundle"),
    force: p.opts.has("--force") || undefined,
    volumes: Object.keys(volumes).length ? volumes : undefined,
    ready: one(p, "--ready"),
    healthOnFailure: one(p, "--health-on-failure"),
  };
}

function requestOf(p: Parsed): [string, Record<string, unknown>] {
  switch (p.cmd) {
    case "ping":
    case "version":
      return [p.cmd, {}];
    case "classify":
      return ["classify", { rootfs: path(p, "--rootfs"), configPath: path(p, "--config") }];
    case "render":
    case "plan":
    case "install":
      return [p.cmd, renderArgs(p)];
    case "inject":
      return ["inject", { rootfs: path(p, "--rootfs"), mode: p.opts.has("--bind") ? "bind" : "copy", bundle: path(p, "--bundle") }];
    case "address":
      if (!p.pos[0]) throw new UsageError("address needs a NAME");
      return ["address", { name: p.pos[0], prefix: one(p, "--prefix") }];
    case "status":
      return [p.cmd, { name: p.pos[0] }];
    case "watch":
      if (p.opts.has("--cluster")) {
        if (p.pos[0]) throw new UsageError("watch --cluster takes no NAME");
        return ["cluster-watch", {}];
      }
      return [p.cmd, { name: p.pos[0] }];
    case "lookup":
      if (!p.pos[0]) throw new UsageError("lookup needs a NAME or NAME@HOST");
      return ["lookup", { name: p.pos[0] }];
    default:
      throw new UsageError(`unknown command '${p.cmd}'`);
  }
}

const out = (s: string): void => void process.stdout.write(s.endsWith("\n") ? s : `${s}\n`);

/**
 * Container data as a terminal may show it: C0/C1 controls, DEL, and the Unicode line/paragraph separators
 * and bidirectional overrides become visible escapes (\n, \x1b, \u202e), so a container cannot move the
 * cursor, recolour, retitle or reorder what an operator reads. `--json` prints the data exactly.
 */
export function forTerminal(v: unknown): string {
  return String(v).replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\\]/g, (c) => {
    const n = c.charCodeAt(0);
    if (c === "\\") return "\\\\";
    if (c === "\n") return "\\n";
    if (c === "\t") return "\\t";
    if (c === "\r") return "\\r";
    return n <= 0xff ? `\\x${n.toString(16).padStart(2, "0")}` : `\\u${n.toString(16).padStart(4, "0")}`;
  });
}

function statusLine(s: ContainerStatus): string {
  return forTerminal(rawStatusLine(s));
}

function rawStatusLine(s: ContainerStatus): string {
  const gone = s.initAlive === false && !isFinal(s.phase);
  const parts = [`${s.name}: ${s.phase}${gone ? " (its init is gone without an exit report)" : ""}`];
  if (s.appPid !== undefined) parts.push(`app pid ${s.appPid}`);
  if (s.health) parts.push(`health ${s.health}`);
  if (s.healthAction) {
    const a = s.healthAction;
    const last = a.last ? `, last ${a.last} at ${a.at ?? "?"}` : ", no action yet";
    parts.push(`on unhealthy ${a.policy} (${a.policy === "restart" ? `${a.restarts} restarts` : "acts once"}${last})`);
  }
  if (s.exit) parts.push(`exit code ${s.exit.code}${s.exit.reason ? ` (${s.exit.reason})` : ""}`);
  if (s.addresses) parts.push(Object.entries(s.addresses).map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(",") : v}`).join(" "));
  if (s.updatedAt) parts.push(`at ${new Date(s.updatedAt).toISOString()}`);
  if (!s.installed) parts.push("(not installed by this agent)");
  return parts.join(", ");
}

function human(p: Parsed, r: Record<string, unknown>): void {
  switch (p.cmd) {
    case "ping":
      return out("pong");
    case "version":
      return out(`man8s agent ${String(r.version)} (protocol ${String(r.protocol)}, pid ${String(r.pid)})`);
    case "classify": {
      const c = r as unknown as Classification;
      out(`kind: ${c.kind}\nmode: ${c.mode}\nProcessTwo: ${c.processTwo ? "yes" : "no"}\nKillSignal: ${c.killSignal}\nStopSignal: ${c.stopSignal}\nargv: ${JSON.stringify(c.argv)}`);
      out(`user: ${c.user ?? "(root)"}`);
      if (c.execInit) out(`exec init: ${JSON.stringify(c.execInit)}`);
      if (c.nestedInit) out(`nested init: ${c.nestedInit.kind} ${c.nestedInit.flags.join(" ")}`);
      out("evidence:");
      for (const e of c.evidence) out(`  - ${e.weak ? "(weak) " : ""}${e.decision} [${e.source}] ${e.detail}`);
      for (const w of c.warnings) out(`warning: ${w}`);
      return;
    }
    case "render":
    case "plan":
      if (!p.opts.has("--envfile")) out(`${p.opts.has("--nspawn") ? "" : "# container.nspawn\n"}${String(r.nspawn)}`);
      if (!p.opts.has("--nspawn")) out(`${p.opts.has("--envfile") ? "" : "# man8env.env\n"}${String(r.env)}`);
      return;
    case "install":
      out(`installed ${String(r.name)} (${String(r.kind)}, ${String(r.template)})`);
      for (const f of r.files as string[]) out(`  ${f}`);
      out(`  ${String(r.link)} -> ${String(r.linkTarget)}\n  report socket ${String(r.reportSocket)}`);
      out(`  ready: ${(r.ready as { value: string; why: string }).value} (${(r.ready as { why: string }).why})`);
      for (const v of r.volumes as { path: string; mode: string; host?: string; seeded?: string }[]) {
        out(`  volume ${v.path}: ${v.mode}${v.host ? ` ${v.host}` : ""}${v.seeded ? ` (${v.seeded})` : ""}`);
      }
      for (const k of r.kept as { file: string; entry: string }[]) out(`  kept your edit: ${k.file}: ${k.entry}`);
      for (const c of r.conflicts as { file: string; entry: string; rendered: string | null; yours: string | null }[]) {
        out(`  conflict (your value kept): ${c.file}: ${c.entry}: yours ${JSON.stringify(c.yours)}, new rendering ${JSON.stringify(c.rendered)}`);
      }
      return;
    case "inject":
      if (r.mode === "bind") return out(String(r.bindLine));
      return out(`copied ${(r.files as unknown[]).length} entries to ${String(r.path)}, verified`);
    case "address":
      return out(r.address ? String(r.address) : `${String(r.suffix)} (no prefix known: suffix only)`);
    case "lookup":
      if (!r.found) return out(`${String(r.name)}: not found${r.cluster ? "" : " (this agent has no cluster catalog: local machines only)"}${r.stale ? " (stale view)" : ""}`);
      return out(`${String(r.name)}\t${String(r.host ?? "(this host)")}\t${String(r.state)}${r.ready ? " ready" : ""}\t${String(r.address ?? "-")}${r.stale ? "\t(stale view)" : ""}`);
    case "status":
      if (r.container) return out(statusLine(r.container as ContainerStatus));
      for (const s of r.containers as ContainerStatus[]) out(statusLine(s));
      if (r.truncated !== undefined) out(`(list shortened: ${r.truncated === "summary" ? "summary fields only" : `${String(r.truncated)} more not shown`}; see status NAME)`);
      return;
  }
}

export async function runAgent(args: string[]): Promise<number> {
  let p: Parsed | null;
  let req: [string, Record<string, unknown>];
  try {
    p = parse(args);
    if (!p) {
      process.stdout.write(HELP);
      return 0;
    }
    req = requestOf(p);
  } catch (e) {
    if (isUsageError(e)) return usageExit("agent", e.message);
    throw e;
  }
  let c: AgentClient;
  try {
    c = await AgentClient.connect(p.socket);
  } catch (e) {
    process.stderr.write(`man8s agent: cannot connect to ${p.socket}: ${(e as Error).message}\n`);
    return 69;
  }
  try {
    const r = (await c.request(req[0], req[1])) as Record<string, unknown>;
    if (p.cmd === "watch") return await watch(c, p, r);
    if (p.json) out(JSON.stringify(r, null, 2));
    else human(p, r);
    return 0;
  } catch (e) {
    if (e instanceof AgentError) {
      process.stderr.write(`man8s agent: ${e.code}: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`man8s agent: ${(e as Error).message}\n`);
    return 69;
  } finally {
    if (p.cmd !== "watch") c.close();
  }
}

/** Print the current state, then one line (or JSON object) per change until the agent goes away. */
function watch(c: AgentClient, p: Parsed, r: Record<string, unknown>): Promise<number> {
  if (p.opts.has("--cluster")) return watchCluster(c, p, r);
  for (const s of r.containers as ContainerStatus[]) out(p.json ? JSON.stringify(s) : statusLine(s));
  c.eventHandler = (_id, ev) => {
    const e = ev as { status: ContainerStatus };
    out(p.json ? JSON.stringify(e) : statusLine(e.status));
  };
  return new Promise((res) => {
    c.onClose = () => res(0);
  });
}

/** `watch --cluster`: the catalog now (one line per machine), then one line per change or state change. */
function watchCluster(c: AgentClient, p: Parsed, r: Record<string, unknown>): Promise<number> {
  const snap = r as unknown as ClusterSnapshot;
  out(p.json ? JSON.stringify({ type: "cluster", kind: "state", state: snap.state, error: snap.error }) : `cluster ${snap.state}${snap.error ? ` (${snap.error})` : ""}`);
  for (const m of snap.machines) out(p.json ? JSON.stringify({ type: "cluster", kind: "put", name: m.name, host: m.host, entry: m }) : clusterLine(m));
  c.eventHandler = (_id, ev) => {
    const e = ev as ClusterEvent;
    if (p.json) return out(JSON.stringify(e));
    if (e.kind === "state") out(`cluster ${e.state}${e.error ? ` (${e.error})` : ""}`);
    else if (e.kind === "put") out(clusterLine(e.entry));
    else out(`${e.name}@${e.host ?? "?"} gone`);
  };
  return new Promise((res) => {
    c.onClose = () => res(0);
  });
}
