// `man8s hostagent serve`: runs the daemon until SIGTERM/SIGINT, then removes its sockets.
import { dirname, resolve } from "node:path";
import { log, setJournalPriorities, setLogPrefix } from "../common/log.ts";
import { listenFds, stderrIsJournal } from "../common/sd-daemon.ts";
import { parseCli, UsageError, usageExit } from "../common/cli.ts";
import { DEFAULT_SOCKET, checkAbsPath } from "./layout.ts";
import { AgentServer, PARTIAL_FRAME_TIMEOUT_S, type ServerOptions } from "./server.ts";
import { checkHostName } from "./cluster/catalog.ts";
import { hostname } from "node:os";
import { readFileSync } from "node:fs";

const DEFAULT_PREFIX = "/man8s/v1";
const DEFAULT_TTL_S = 10;

const HELP = `usage: man8s hostagent serve [options]

  --socket PATH      admin socket (default ${DEFAULT_SOCKET}; mode 0600). Started by a socket unit
                     (LISTEN_FDS=1), the agent serves the inherited socket; PATH then only locates
                     the state directory beside it and must be the unit's ListenStream=
  --root DIR         host root for /var/lib/man8machine_configs and /etc/systemd/nspawn (default /)
  --bundle DIR       the man8s-init bundle to inject or bind (default: man8s-init next to this binary)
  --ygg-prefix P     the host's yggdrasil /64, for address and render
  --allow-uid N      also accept this uid on the admin socket (repeatable; root is always accepted)
  --frame-timeout S  close a connection that leaves a frame incomplete this long (default ${PARTIAL_FRAME_TIMEOUT_S})

cluster (docs/cluster.md; without --etcd the agent serves its host alone):
  --etcd URL[,URL...]  publish this host's machines to etcd (its client URLs) and see every host's
  --etcd-cert FILE --etcd-key FILE --etcd-ca FILE   TLS client certificate, its key, the CA to trust
  --etcd-prefix P    key prefix (default ${DEFAULT_PREFIX})
  --etcd-ttl S       lease TTL: a dead host's entries vanish after this long (default ${DEFAULT_TTL_S})
  --host-name NAME   this host in the catalog (default the system's host name)
`;

export async function runHostagent(args: string[]): Promise<number> {
  setLogPrefix("man8s hostagent");
  const journal = stderrIsJournal();
  setJournalPriorities(journal);
  if (args[0] === "--help" || args[0] === "-h" || args[0] === "help") {
    process.stdout.write(HELP);
    return 0;
  }
  if (args[0] !== "serve") return usageExit("hostagent", args[0] === undefined ? "no command (serve)" : `unknown command '${args[0]}' (serve)`, journal);
  const opts = {
    socketPath: DEFAULT_SOCKET,
    root: "/",
    bundle: `${dirname(process.execPath)}/man8s-init`,
    yggPrefix: undefined as string | undefined,
    allowUids: [0],
    frameTimeout: PARTIAL_FRAME_TIMEOUT_S,
    listenFd: undefined as number | undefined,
    cluster: undefined as ServerOptions["cluster"],
  };
  const etcd = { urls: [] as string[], cert: "", key: "", ca: "", prefix: DEFAULT_PREFIX, ttl: DEFAULT_TTL_S, host: "" };
  try {
    const { values: v, positionals } = parseCli(args.slice(1), {
      socket: { type: "string" },
      root: { type: "string" },
      bundle: { type: "string" },
      "ygg-prefix": { type: "string" },
      "frame-timeout": { type: "string" },
      "allow-uid": { type: "string", multiple: true },
      etcd: { type: "string" },
      "etcd-cert": { type: "string" },
      "etcd-key": { type: "string" },
      "etcd-ca": { type: "string" },
      "etcd-prefix": { type: "string" },
      "etcd-ttl": { type: "string" },
      "host-name": { type: "string" },
    });
    if (v.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    const fds = listenFds();
    if (fds.length > 1) throw new UsageError(`${fds.length} sockets passed (LISTEN_FDS): the agent takes one, its admin socket`);
    opts.listenFd = fds[0];
    if (v.socket !== undefined) opts.socketPath = checkAbsPath(resolve(v.socket), "--socket");
    if (v.root !== undefined) opts.root = checkAbsPath(resolve(v.root), "--root");
    if (v.bundle !== undefined) opts.bundle = checkAbsPath(resolve(v.bundle), "--bundle");
    opts.yggPrefix = v["ygg-prefix"];
    if (v["frame-timeout"] !== undefined) {
      const n = Number(v["frame-timeout"]);
      if (!Number.isInteger(n) || n < 1 || n > 3600) throw new UsageError("--frame-timeout needs 1..3600 seconds");
      opts.frameTimeout = n;
    }
    for (const u of v["allow-uid"] ?? []) {
      const n = Number(u);
      if (!Number.isInteger(n) || n < 0) throw new UsageError("--allow-uid needs a uid");
      opts.allowUids.push(n);
    }
    if (v.etcd !== undefined) {
      etcd.urls = v.etcd.split(",").map((u) => u.trim()).filter(Boolean);
      for (const u of etcd.urls) if (!/^https?:\/\/[^/\s]+\/?$/.test(u)) throw new UsageError(`--etcd: '${u.slice(0, 80)}' is not an http(s)://HOST:PORT URL`);
      etcd.urls = etcd.urls.map((u) => u.replace(/\/$/, ""));
      if (etcd.urls.length === 0 || etcd.urls.length > 16) throw new UsageError("--etcd needs 1 to 16 URLs");
    }
    for (const k of ["cert", "key", "ca"] as const) {
      const f = v[`etcd-${k}`];
      if (f !== undefined) etcd[k] = checkAbsPath(resolve(f), `--etcd-${k}`);
    }
    if (v["etcd-prefix"] !== undefined) {
      etcd.prefix = v["etcd-prefix"].replace(/\/+$/, "");
      if (!/^\/[A-Za-z0-9_./-]{0,127}$/.test(etcd.prefix)) throw new UsageError("--etcd-prefix must be an absolute key path of [A-Za-z0-9_./-]");
    }
    if (v["etcd-ttl"] !== undefined) {
      const n = Number(v["etcd-ttl"]);
      if (!Number.isInteger(n) || n < 2 || n > 3600) throw new UsageError("--etcd-ttl needs 2..3600 seconds");
      etcd.ttl = n;
    }
    if (v["host-name"] !== undefined) etcd.host = checkHostName(v["host-name"]);
    if (etcd.urls.length > 0) {
      if (Boolean(etcd.cert) !== Boolean(etcd.key)) throw new UsageError("--etcd-cert and --etcd-key go together");
      // read once at start: a certificate the agent cannot read is a start-up error, not a later outage
      const pem = (f: string) => (f ? readFileSync(f, "utf8").slice(0, 1024 * 1024) : undefined);
      const tls = { cert: pem(etcd.cert), key: pem(etcd.key), ca: pem(etcd.ca) };
      opts.cluster = { endpoints: etcd.urls, tls, prefix: etcd.prefix, ttl: etcd.ttl, host: etcd.host || checkHostName(hostname().split(".")[0] || "host") };
    } else if (etcd.cert || etcd.key || etcd.ca) {
      throw new UsageError("--etcd-cert/--etcd-key/--etcd-ca need --etcd");
    }
  } catch (e) {
    // every bad argument is a usage error, checkAbsPath's AgentErrors included
    return usageExit("hostagent serve", (e as Error).message, journal);
  }
  const server = new AgentServer(opts);
  // the daemon must survive anything one request does; a bug is logged, not fatal
  process.on("uncaughtException", (e) => log(`uncaught: ${e?.stack ?? String(e)}`, "err"));
  process.on("unhandledRejection", (e) => log(`unhandled rejection: ${(e as Error)?.stack ?? String(e)}`, "err"));
  try {
    await server.start();
  } catch (e) {
    log(`cannot listen on ${opts.socketPath}: ${(e as Error).message}`, "err");
    return 69;
  }
  log(`listening on ${opts.socketPath}${opts.listenFd === undefined ? "" : ` (inherited fd ${opts.listenFd})`} (pid ${process.pid})`);
  return await new Promise<number>((resolve) => {
    const stop = (sig: string) => {
      log(`${sig}: shutting down`);
      server.stop();
      // machines the agent supervises (no systemd) do not outlive their supervisor: stopped as at shutdown
      void server.runner.stopAll().then(() => resolve(0));
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
  });
}
