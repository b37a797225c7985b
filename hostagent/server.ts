// The daemon's sockets: one admin socket (mode 0600, peer uid checked) and one report socket per installed
// container. Each connection has its own frame reader and write queue; one bad client cannot disturb another.
import type { Socket, UnixSocketListener } from "bun";
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, unlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { closeFd } from "../common/libc.ts";
import { peerCred, peerPidfd, pidfdAlive, userNsOwner } from "../common/libc-unix.ts";
import { REPORT_LIMITS } from "../common/report.ts";
import { log } from "../common/log.ts";
import { AgentError, ERR } from "./errors.ts";
import { isInstalled, recoverAll } from "./install.ts";
import { recoverAllPulls } from "./machines.ts";
import { MachineRunner } from "./nspawn-run.ts";
import { recoverAllRenews } from "./renew.ts";
import { configDir, containerNames, reportDir, reportSocket, statusFile } from "./layout.ts";
import { FrameReader, MAX_FRAME, errorReply, isPlainObject, okReply, parseRequest, type RequestId } from "./protocol.ts";
import { procStat } from "../common/procstat.ts";
import { StateStore, isFinal } from "./state.ts";
import { COMMANDS, type CallContext } from "./commands/index.ts";
import type { AgentServices, CallConn } from "./services.ts";
import type { Cluster, ClusterOptions } from "./cluster/index.ts";

export interface ServerOptions {
  socketPath: string;
  /** the host root for mbctl paths (tests use a temporary directory) */
  root: string;
  /** default bundle directory for inject/render */
  bundle: string;
  /** yggdrasil /64 prefix for address computations, if known */
  yggPrefix?: string;
  /** uids allowed on the admin socket (default: root only) */
  allowUids: number[];
  /** seconds a connection may sit on an incomplete frame */
  frameTimeout: number;
  /**
   * An inherited listening socket for the admin socket (socket activation): systemd made it, with its
   * path and mode, and keeps it across agent restarts, so the agent neither creates nor removes the path.
   */
  listenFd?: number;
  /** --etcd: publish to the cluster catalog (docs/cluster.md) */
  cluster?: Omit<ClusterOptions, "version" | "yggPrefix">;
}

/** A frame stalled half-way for this long means a dead or hostile client (default; --frame-timeout). */
export const PARTIAL_FRAME_TIMEOUT_S = 10;
/** Open connections one container may hold on its report socket (its init uses one at a time). */
export const MAX_REPORT_CONNS = 4;
/** File descriptors kept free for the admin socket, state files and installs, whatever containers do. */
const FD_RESERVE = 256;
/** Reports (frames) per container: a burst, then a steady rate; the init sends a few per phase change. */
const REPORT_BURST = 64;
const REPORT_RATE_PER_S = 20;
/** New report connections per container, same shape (the init opens one per report). */
const CONNECT_BURST = 64;
const CONNECT_RATE_PER_S = 20;
/**
 * A container over a limit loses its listening socket for this long: its further connects fail in the
 * kernel (ECONNREFUSED or ENOENT) and cost the agent nothing, instead of an accept and a close each.
 */
const COOL_DOWN_MS = 1000;
/** A report connection idle this long is closed (the init's connections last one report). */
const REPORT_IDLE_S = 30;
/** Name lookups per container (read-only, answered from memory): their own bucket, so they never cost reports. */
const LOOKUP_BURST = 32;
const LOOKUP_RATE_PER_S = 16;

/** A token bucket: take() is false once the burst is spent faster than the rate refills it. */
class Bucket {
  private tokens: number;
  private at = performance.now();
  constructor(
    private readonly burst: number,
    private readonly perSecond: number,
  ) {
    this.tokens = burst;
  }
  take(now = performance.now()): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.perSecond);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** Per-container limits, shared by all connections of that container's report socket. */
interface ContainerLimits {
  conns: number;
  /** the listener is down until this timer reopens it */
  cooling: ReturnType<typeof setTimeout> | null;
  reports: Bucket;
  connects: Bucket;
  lookups: Bucket;
}

/** Replies or events queued for a client that does not read: beyond this it is disconnected. */
const MAX_QUEUE = 16 * 1024 * 1024;

type Kind = { admin: true } | { admin: false; container: string };

export class Conn implements CallConn {
  readonly reader: FrameReader;
  private queue: Uint8Array[] = [];
  private queued = 0;
  closed = false;
  refused = false;
  /** the peer's host pid and its start time, from SO_PEERCRED at connect time */
  peer: { pid: number; start: string | null } | null = null;
  readonly cleanups: (() => void)[] = [];

  constructor(
    readonly sock: Socket<unknown>,
    readonly kind: Kind,
  ) {
    // a report is small; only the admin socket carries large requests
    this.reader = new FrameReader(kind.admin ? MAX_FRAME : REPORT_LIMITS.frameBytes);
  }

  send(frame: Uint8Array): void {
    if (this.closed) return;
    if (this.queue.length === 0) {
      const n = this.sock.write(frame);
      if (n === frame.length) return;
      frame = frame.subarray(Math.max(n, 0));
    }
    this.queue.push(frame);
    this.queued += frame.length;
    if (this.queued > MAX_QUEUE) {
      log(`client does not read its replies (${this.queued} bytes queued): disconnecting`, "warning");
      this.close();
    }
  }

  flush(): void {
    while (this.queue.length > 0 && !this.closed) {
      const head = this.queue[0]!;
      const n = this.sock.write(head);
      if (n < head.length) {
        this.queue[0] = head.subarray(Math.max(n, 0));
        this.queued -= Math.max(n, 0);
        return;
      }
      this.queue.shift();
      this.queued -= head.length;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.cleanups.splice(0)) c();
    this.sock.end();
  }
}

export class AgentServer implements AgentServices {
  readonly state: StateStore;
  /** machines started by this agent (or by systemd for it) */
  readonly runner: MachineRunner;
  private admin?: UnixSocketListener<unknown>;
  private readonly reportListeners = new Map<string, { listener: UnixSocketListener<unknown>; path: string }>();
  private readonly conns = new Map<Socket<unknown>, Conn>();
  private readonly myPidNs: string | null;
  private readonly myUserNs: string | null;
  private readonly limits = new Map<string, ContainerLimits>();
  private reportConns = 0;
  /** report connections all containers together may hold: the fd limit minus the reserve */
  readonly maxReportConns: number;
  private sweeper?: ReturnType<typeof setInterval>;
  private stopped = false;
  /** the cluster catalog, with --etcd */
  cluster: Cluster | null = null;

  constructor(readonly opts: ServerOptions) {
    this.runner = new MachineRunner(opts.root, dirname(opts.socketPath));
    this.myPidNs = readNs("self", "pid");
    this.myUserNs = readNs("self", "user");
    this.maxReportConns = Math.max(MAX_REPORT_CONNS, fdLimit() - FD_RESERVE);
    // next to the admin socket: /run/man8s/state by default, a tmpfs that a reboot clears with the containers;
    // the durable record lives in the container's config directory (only for installed containers)
    this.state = new StateStore(join(dirname(opts.socketPath), "state"), (name) =>
      existsSync(configDir(opts.root, name)) ? statusFile(opts.root, name) : null,
    );
  }

  private limitsOf(name: string): ContainerLimits {
    let l = this.limits.get(name);
    if (!l) {
      l = { conns: 0, cooling: null, reports: new Bucket(REPORT_BURST, REPORT_RATE_PER_S), connects: new Bucket(CONNECT_BURST, CONNECT_RATE_PER_S), lookups: new Bucket(LOOKUP_BURST, LOOKUP_RATE_PER_S) };
      this.limits.set(name, l);
    }
    return l;
  }

  /** Stop listening for one container for a moment; its open connections stay. */
  private coolDown(name: string): void {
    const l = this.limitsOf(name);
    if (l.cooling) return;
    const existing = this.reportListeners.get(name);
    if (!existing) return;
    log(`report socket of ${name}: over its connection or report rate; not listening for ${COOL_DOWN_MS} ms`);
    existing.listener.stop(false);
    unlinkIfSocket(existing.path);
    this.reportListeners.delete(name);
    l.cooling = setTimeout(() => {
      l.cooling = null;
      if (this.stopped) return;
      try {
        this.openReportSocket(name);
      } catch (e) {
        log(`report socket for ${name}: ${(e as Error).message}`);
      }
    }, COOL_DOWN_MS);
  }

  async start(): Promise<void> {
    const path = this.opts.socketPath;
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    const inherited = this.opts.listenFd;
    if (inherited === undefined) {
      if (await isLive(path)) throw new AgentError(ERR.EXISTS, `another agent is listening on ${path}`);
      removeStaleSocket(path);
    }
    // an install killed half-way: back to the last complete pair before any client can ask
    recoverAll(this.opts.root);
    // a pull killed half-way: none of that machine's paths may remain
    recoverAllPulls(this.opts.root);
    recoverAllRenews(this.opts.root);
    // the containers' report sockets first: once the admin socket answers, the agent knows its containers
    this.openReportSocketsForInstalled();
    // the catalog connects in the background: the agent serves its host whether etcd answers or not
    if (this.opts.cluster) this.cluster = (await import("./cluster/index.ts")).startCluster(this, this.opts.cluster);
    if (inherited !== undefined) {
      // Bun.listen takes a listening fd (its types only declare it for connect)
      this.admin = Bun.listen({ fd: inherited, socket: this.handlers({ admin: true }) } as unknown as Parameters<typeof Bun.listen>[0]);
      this.sweeper = setInterval(() => this.sweep(), 1000);
      return;
    }
    // create the socket with mode 0600 from the start: no window where others could connect
    const old = process.umask(0o177);
    try {
      this.admin = Bun.listen({ unix: path, socket: this.handlers({ admin: true }) });
    } finally {
      process.umask(old);
    }
    chmodSync(path, 0o600);
    // the absolute deadline of a half-received frame: checked once a second, whatever the peer trickles
    this.sweeper = setInterval(() => this.sweep(), 1000);
  }

  private sweep(now = performance.now()): void {
    const limit = this.opts.frameTimeout * 1000;
    for (const conn of this.conns.values()) {
      const t = conn.reader.startedAt;
      if (t !== null && now - t > limit && !conn.closed) {
        log(`closing a connection that left a frame incomplete for ${this.opts.frameTimeout} s`, "warning");
        conn.close();
      }
    }
  }

  /** Report sockets for every container with a container.nspawn under the root (agent restarts, reboots). */
  private openReportSocketsForInstalled(): void {
    for (const n of containerNames(this.opts.root)) {
      if (!isInstalled(this.opts.root, n)) continue;
      this.state.loadDurable(n);
      try {
        this.openReportSocket(n);
      } catch (e) {
        log(`report socket for ${n}: ${(e as Error).message}`, "err");
      }
    }
  }

  /** Create (or recreate) the report socket of one container; idempotent. */
  openReportSocket(name: string): string {
    this.state.markInstalled(name);
    const existing = this.reportListeners.get(name);
    if (existing && existsSync(existing.path)) return existing.path;
    if (existing) existing.listener.stop(true);
    const dir = reportDir(this.opts.root, name);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    // Host users must not reach the socket: the container's config directory is root's alone (0700), so
    // only root can walk to the socket on the host. The container reaches it through its bind mount of
    // the report directory, which does not traverse the parent. The socket itself is 0666 because the
    // container's root is a mapped, unknown host uid; refusal() identifies the peer in any case.
    guardDir(configDir(this.opts.root, name), 0o700);
    guardDir(dir, 0o755);
    const path = reportSocket(this.opts.root, name);
    removeStaleSocket(path);
    const old = process.umask(0o111);
    try {
      const listener = Bun.listen({ unix: path, socket: this.handlers({ admin: false, container: name }) });
      this.reportListeners.set(name, { listener, path });
    } finally {
      process.umask(old);
    }
    chmodSync(path, 0o666);
    return path;
  }

  /** Whether a machine runs, as far as this agent knows: its init reported and is still alive. */
  isRunning(name: string): boolean {
    if (this.runner.isRunning(name)) return true;
    const s = this.state.get(name);
    return s?.initAlive === true && !isFinal(s.phase);
  }

  /** A removed (or never completed) machine: its report socket goes, and the agent forgets it. */
  closeReportSocket(name: string): void {
    const existing = this.reportListeners.get(name);
    if (existing) {
      existing.listener.stop(true);
      unlinkIfSocket(existing.path);
      this.reportListeners.delete(name);
    }
    this.state.forget(name);
  }

  private handlers(kind: Kind) {
    return {
      open: (sock: Socket<unknown>) => {
        const conn = new Conn(sock, kind);
        if (!kind.admin) {
          // bounded before anything else is spent on it: a container cannot take the agent's descriptors
          const l = this.limitsOf(kind.container);
          if (l.conns >= MAX_REPORT_CONNS || this.reportConns >= this.maxReportConns || !l.connects.take()) {
            sock.terminate();
            this.coolDown(kind.container);
            return;
          }
          l.conns++;
          this.reportConns++;
          conn.cleanups.push(() => {
            l.conns--;
            this.reportConns--;
          });
          sock.timeout(REPORT_IDLE_S);
        }
        this.conns.set(sock, conn);
        const why = this.refusal(sock, kind);
        if (why) {
          conn.refused = true;
          conn.send(errorReply(null, ERR.FORBIDDEN, why));
          // closing at once races the peer's own connect completion (Bun reports "Failed to connect"
          // and the reason is lost); a short grace lets it read the refusal first
          setTimeout(() => conn.close(), 50);
        }
      },
      data: (sock: Socket<unknown>, chunk: Uint8Array) => {
        const conn = this.conns.get(sock);
        if (!conn || conn.closed || conn.refused) return;
        this.onData(conn, chunk);
      },
      drain: (sock: Socket<unknown>) => this.conns.get(sock)?.flush(),
      // only report connections arm the idle timeout; frames have their own deadline (sweep)
      timeout: (sock: Socket<unknown>) => this.conns.get(sock)?.close(),
      close: (sock: Socket<unknown>) => this.drop(sock),
      error: (sock: Socket<unknown>) => this.drop(sock),
    };
  }

  private drop(sock: Socket<unknown>): void {
    const conn = this.conns.get(sock);
    if (!conn) return;
    this.conns.delete(sock);
    conn.closed = true;
    for (const c of conn.cleanups.splice(0)) c();
  }

  /**
   * Why a peer may not use this socket, or null. A report socket accepts root of the host (the agent's
   * own user namespace) and processes of a container: another pid namespace AND a user namespace created
   * by root (systemd-nspawn). A host user's `unshare -Urpf` has both namespaces, but its user namespace
   * is owned by that user, so it is refused. The checks read /proc by pid; the peer's pidfd proves that
   * the pid still names the process that connected (no pid reuse in between).
   */
  private refusal(sock: Socket<unknown>, kind: Kind): string | null {
    const fd = (sock as unknown as { fd: number }).fd;
    const cred = peerCred(fd);
    if (!cred) return "cannot read the peer's credentials";
    if (kind.admin) {
      return this.opts.allowUids.includes(cred.uid) ? null : `uid ${cred.uid} may not use the admin socket`;
    }
    const conn = this.conns.get(sock);
    if (conn) conn.peer = { pid: cred.pid, start: procStat(cred.pid)?.startTime ?? null };
    const pidfd = peerPidfd(fd);
    try {
      const userNs = readNs(String(cred.pid), "user");
      const pidNs = readNs(String(cred.pid), "pid");
      const owner = userNsOwner(cred.pid);
      if (pidfd !== null && !pidfdAlive(pidfd)) return "the peer exited before it could be identified";
      if (userNs === null || pidNs === null) return "cannot read the peer's namespaces";
      if (userNs === this.myUserNs) {
        return cred.uid === 0 ? null : `uid ${cred.uid} on the host may not report for ${kind.container}`;
      }
      if (pidNs !== this.myPidNs && owner === 0) return null;
      return `a user namespace owned by uid ${owner ?? "?"} may not report for ${kind.container}`;
    } finally {
      if (pidfd !== null) closeFd(pidfd);
    }
  }

  private onData(conn: Conn, chunk: Uint8Array): void {
    const limits = conn.kind.admin ? null : this.limitsOf(conn.kind.container);
    const bucket = limits?.reports ?? null;
    for (const f of conn.reader.push(chunk)) {
      if (conn.closed) return;
      if (f.kind === "too-large") {
        conn.send(errorReply(null, ERR.FRAME_TOO_LARGE, `frame of ${f.length} bytes exceeds the limit of ${conn.reader.maxFrame}`));
        conn.close();
        return;
      }
      if (limits && f.kind === "value" && isPlainObject(f.value) && f.value.cmd === "lookup") {
        if (!limits.lookups.take()) {
          const id = typeof f.value.id === "number" || typeof f.value.id === "string" ? f.value.id : null;
          conn.send(errorReply(id, ERR.RATE_LIMITED, `more than ${LOOKUP_RATE_PER_S} lookups per second: ask again later`));
          continue;
        }
      } else if (bucket && !bucket.take()) {
        conn.send(errorReply(null, ERR.RATE_LIMITED, `more than ${REPORT_RATE_PER_S} reports per second: closing`));
        conn.close();
        if (!conn.kind.admin) this.coolDown(conn.kind.container);
        return;
      }
      if (f.kind === "bad-msgpack") {
        conn.send(errorReply(null, ERR.BAD_MSGPACK, `invalid msgpack: ${f.message}`));
        continue;
      }
      const p = parseRequest(f.value);
      if (!("req" in p)) {
        conn.send(errorReply(p.id, p.code, p.message));
        continue;
      }
      this.dispatch(conn, p.req.id, p.req.cmd, p.req.args);
    }
  }

  private dispatch(conn: Conn, id: RequestId, cmd: string, args: Record<string, unknown>): void {
    const c = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
    if (!c) {
      conn.send(errorReply(id, ERR.UNKNOWN_COMMAND, `unknown command '${cmd.slice(0, 64)}'`));
      return;
    }
    if (!conn.kind.admin && !c.onReportSocket) {
      conn.send(errorReply(id, ERR.FORBIDDEN, `'${cmd}' is not allowed on a container's report socket`));
      return;
    }
    if (conn.kind.admin && !c.onAdminSocket) {
      conn.send(errorReply(id, ERR.FORBIDDEN, `'${cmd}' is only accepted on a container's report socket`));
      return;
    }
    const ctx: CallContext = {
      server: this,
      conn,
      id,
      container: conn.kind.admin ? undefined : conn.kind.container,
    };
    const fail = (e: unknown) => {
      if (e instanceof AgentError) conn.send(errorReply(id, e.code, e.message));
      else {
        log(`internal error in '${cmd}': ${(e as Error)?.stack ?? String(e)}`, "err");
        conn.send(errorReply(id, ERR.INTERNAL, `internal error in '${cmd}': ${(e as Error)?.message ?? String(e)}`));
      }
    };
    try {
      const r = c.run(args, ctx);
      if (r instanceof Promise) r.then((v) => reply(conn, id, v), fail);
      else reply(conn, id, r);
    } catch (e) {
      fail(e);
    }
  }

  /** Stop listening and remove every socket this process created. */
  stop(): void {
    this.stopped = true;
    void this.cluster?.close();
    if (this.sweeper) clearInterval(this.sweeper);
    for (const l of this.limits.values()) if (l.cooling) clearTimeout(l.cooling);
    this.state.flush();
    this.admin?.stop(true);
    for (const { listener, path } of this.reportListeners.values()) {
      listener.stop(true);
      unlinkIfSocket(path);
    }
    this.reportListeners.clear();
    // an inherited socket belongs to its socket unit: it stays, and connections queue until the next start
    if (this.opts.listenFd === undefined) unlinkIfSocket(this.opts.socketPath);
  }
}

function reply(conn: Conn, id: RequestId, value: unknown): void {
  try {
    conn.send(okReply(id, value));
  } catch (e) {
    conn.send(errorReply(id, ERR.INTERNAL, `reply could not be encoded: ${(e as Error).message}`));
  }
}

/** Is some process accepting connections on this socket path? */
async function isLive(path: string): Promise<boolean> {
  try {
    if (!lstatSync(path).isSocket()) return false;
  } catch {
    return false;
  }
  try {
    const s = await Bun.connect({ unix: path, socket: { data() {} } });
    s.end();
    return true;
  } catch {
    return false;
  }
}

function readNs(pid: string, ns: "pid" | "user"): string | null {
  try {
    return readlinkSync(`/proc/${pid}/ns/${ns}`);
  } catch {
    return null;
  }
}

/** The soft limit on open files (Bun raises it to the hard limit at start). */
function fdLimit(): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    return m && m[1] !== "unlimited" ? Number(m[1]) : 1 << 20;
  } catch {
    return 1024;
  }
}

/** A directory of the agent's own: not a symlink, owned by the agent's user, with exactly this mode. */
function guardDir(path: string, mode: number): void {
  const st = lstatSync(path);
  if (!st.isDirectory()) throw new AgentError(ERR.BAD_PATH, `${path} is not a directory`);
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  if (st.uid !== uid || st.gid !== gid) chownSync(path, uid, gid);
  if ((st.mode & 0o7777) !== mode) chmodSync(path, mode);
}

function unlinkIfSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // already gone
  }
}

/** A socket file left by a dead agent is removed; anything else at that path is an error. */
function removeStaleSocket(path: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new AgentError(ERR.EXISTS, `${path} exists and is not a socket`);
  unlinkSync(path);
}
