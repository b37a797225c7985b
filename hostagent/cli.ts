// `man8s hostagent serve`: runs the daemon until SIGTERM/SIGINT, then removes its sockets.
import { dirname, resolve } from "node:path";
import { log, setJournalPriorities, setLogPrefix } from "../common/log.ts";
import { listenFds, stderrIsJournal } from "../common/sd-daemon.ts";
import { AgentError } from "./errors.ts";
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


function value(args: string[], i: number, flag: string): string {
  const v = args[i + 1];
  if (v === undefined) throw new AgentError("usage", `${flag} needs a value`);
  return v;
}

export async function runHostagent(args: string[]): Promise<number> {
  setLogPrefix("man8s hostagent");
  setJournalPriorities(stderrIsJournal());
  if (args[0] !== "serve") {
    process.stderr.write(args[0] === "--help" || args[0] === "-h" || args[0] === "help" ? HELP : `man8s hostagent: expected 'serve'\n\n${HELP}`);
    return args[0] === "--help" || args[0] === "-h" || args[0] === "help" ? 0 : 64;
  }
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
    const fds = listenFds();
    if (fds.length > 1) throw new AgentError("usage", `${fds.length} sockets passed (LISTEN_FDS): the agent takes one, its admin socket`);
    opts.listenFd = fds[0];
    for (let i = 1; i < args.length; i++) {
      const a = args[i]!;
      switch (a) {
        case "--help":
        case "-h":
          process.stdout.write(HELP);
          return 0;
        case "--socket":
          opts.socketPath = checkAbsPath(resolve(value(args, i++, a)), "--socket");
          break;
        case "--root":
          opts.root = checkAbsPath(resolve(value(args, i++, a)), "--root");
          break;
        case "--bundle":
          opts.bundle = checkAbsPath(resolve(value(args, i++, a)), "--bundle");
          break;
        case "--ygg-prefix":
          opts.yggPrefix = value(args, i++, a);
          break;
        case "--frame-timeout": {
          const n = Number(value(args, i++, a));
          if (!Number.isInteger(n) || n < 1 || n > 3600) throw new AgentError("usage", "--frame-timeout needs 1..3600 seconds");
          opts.frameTimeout = n;
          break;
        }
        case "--allow-uid": {
          const n = Number(value(args, i++, a));
          if (!Number.isInteger(n) || n < 0) throw new AgentError("usage", "--allow-uid needs a uid");
          opts.allowUids.push(n);
          break;
        }
        case "--etcd":
          etcd.urls = value(args, i++, a).split(",").map((u) => u.trim()).filter(Boolean);
          for (const u of etcd.urls) if (!/^https?:\/\/[^/\s]+\/?$/.test(u)) throw new AgentError("usage", `--etcd: '${u.slice(0, 80)}' is not an http(s)://HOST:PORT URL`);
          etcd.urls = etcd.urls.map((u) => u.replace(/\/$/, ""));
          if (etcd.urls.length === 0 || etcd.urls.length > 16) throw new AgentError("usage", "--etcd needs 1 to 16 URLs");
          break;
        case "--etcd-cert":
        case "--etcd-key":
        case "--etcd-ca":
          etcd[a.slice(7) as "cert" | "key" | "ca"] = checkAbsPath(resolve(value(args, i++, a)), a);
          break;
        case "--etcd-prefix":
          etcd.prefix = value(args, i++, a).replace(/\/+$/, "");
          if (!/^\/[A-Za-z0-9_./-]{0,127}$/.test(etcd.prefix)) throw new AgentError("usage", "--etcd-prefix must be an absolute key path of [A-Za-z0-9_./-]");
          break;
        case "--etcd-ttl": {
          const n = Number(value(args, i++, a));
          if (!Number.isInteger(n) || n < 2 || n > 3600) throw new AgentError("usage", "--etcd-ttl needs 2..3600 seconds");
          etcd.ttl = n;
          break;
        }
        case "--host-name":
          etcd.host = checkHostName(value(args, i++, a));
          break;
        default:
          throw new AgentError("usage", `unknown option '${a}'`);
      }
    }
    if (etcd.urls.length > 0) {
      if (Boolean(etcd.cert) !== Boolean(etcd.key)) throw new AgentError("usage", "--etcd-cert and --etcd-key go together");
      // read once at start: a certificate the agent cannot read is a start-up error, not a later outage
      const pem = (f: string) => (f ? readFileSync(f, "utf8").slice(0, 1024 * 1024) : undefined);
      const tls = { cert: pem(etcd.cert), key: pem(etcd.key), ca: pem(etcd.ca) };
      opts.cluster = { endpoints: etcd.urls, tls, prefix: etcd.prefix, ttl: etcd.ttl, host: etcd.host || checkHostName(hostname().split(".")[0] || "host") };
    } else if (etcd.cert || etcd.key || etcd.ca) {
      throw new AgentError("usage", "--etcd-cert/--etcd-key/--etcd-ca need --etcd");
    }
  } catch (e) {
    log(`${(e as Error).message}`, "err");
    process.stderr.write(`\n${HELP}`);
    return 64;
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
