// `man8s hostagent serve`: runs the daemon until SIGTERM/SIGINT, then removes its sockets.
import { dirname, resolve } from "node:path";
import { log, setJournalPriorities, setLogPrefix } from "../common/log.ts";
import { listenFds, stderrIsJournal } from "../common/sd-daemon.ts";
import { parseCli, UsageError, usageExit } from "../common/cli.ts";
import { DEFAULT_SOCKET, checkAbsPath } from "./layout.ts";
import { AgentServer, PARTIAL_FRAME_TIMEOUT_S } from "./server.ts";

const HELP = `usage: man8s hostagent serve [options]

  --socket PATH      admin socket (default ${DEFAULT_SOCKET}; mode 0600). Started by a socket unit
                     (LISTEN_FDS=1), the agent serves the inherited socket; PATH then only locates
                     the state directory beside it and must be the unit's ListenStream=
  --root DIR         host root for /var/lib/man8machine_configs and /etc/systemd/nspawn (default /)
  --bundle DIR       the man8s-init bundle to inject or bind (default: man8s-init next to this binary)
  --ygg-prefix P     the host's yggdrasil /64, for address and render
  --allow-uid N      also accept this uid on the admin socket (repeatable; root is always accepted)
  --frame-timeout S  close a connection that leaves a frame incomplete this long (default ${PARTIAL_FRAME_TIMEOUT_S})
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
  };
  try {
    const { values: v, positionals } = parseCli(args.slice(1), {
      socket: { type: "string" },
      root: { type: "string" },
      bundle: { type: "string" },
      "ygg-prefix": { type: "string" },
      "frame-timeout": { type: "string" },
      "allow-uid": { type: "string", multiple: true },
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
