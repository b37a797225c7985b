// The daemon's sockets: one admin socket (mode 0600, peer uid checked) and one report socket per installed
// container. Each connection has its own frame reader and write queue; one bad client cannot disturb another.
import type { Socket, UnixSocketListener } from "bun";
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readlinkSync, unlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { peerCred } from "../common/libc-unix.ts";
import { log } from "../common/log.ts";
import { AgentError, ERR } from "./errors.ts";
import { isInstalled, recoverAll } from "./install.ts";
import { CONFIGS_DIR, checkName, reportDir, reportSocket } from "./layout.ts";
import { FrameReader, errorReply, okReply, parseRequest, type RequestId } from "./protocol.ts";
import { procStart } from "./proc.ts";
import { StateStore } from "./state.ts";
import { COMMANDS, type CallContext } from "./commands/index.ts";

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
}

/** A frame stalled half-way for this long means a dead or hostile client (default; --frame-timeout). */
export const PARTIAL_FRAME_TIMEOUT_S = 10;
/** Replies or events queued for a client that does not read: beyond this it is disconnected. */
const MAX_QUEUE = 16 * 1024 * 1024;

type Kind = { admin: true } | { admin: false; container: string };

export class Conn {
  readonly reader = new FrameReader();
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
  ) {}

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
      log(`client does not read its replies (${this.queued} bytes queued): disconnecting`);
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

export class AgentServer {
  readonly state: StateStore;
  private admin?: UnixSocketListener<unknown>;
  private readonly reportListeners = new Map<string, { listener: UnixSocketListener<unknown>; path: string }>();
  private readonly conns = new Map<Socket<unknown>, Conn>();
  private readonly myPidNs: string | null;

  constructor(readonly opts: ServerOptions) {
    this.myPidNs = readNs("self");
    // next to the admin socket: /run/man8s/state by default, a tmpfs that a reboot clears with the containers
    this.state = new StateStore(join(dirname(opts.socketPath), "state"));
  }

  async start(): Promise<void> {
    const path = this.opts.socketPath;
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    if (await isLive(path)) throw new AgentError(ERR.EXISTS, `another agent is listening on ${path}`);
    removeStaleSocket(path);
    // an install killed half-way: back to the last complete pair before any client can ask
    recoverAll(this.opts.root);
    // create the socket with mode 0600 from the start: no window where others could connect
    const old = process.umask(0o177);
    try {
      this.admin = Bun.listen({ unix: path, socket: this.handlers({ admin: true }) });
    } finally {
      process.umask(old);
    }
    chmodSync(path, 0o600);
    this.openReportSocketsForInstalled();
  }

  /** Report sockets for every container with a container.nspawn under the root (agent restarts, reboots). */
  private openReportSocketsForInstalled(): void {
    let names: string[] = [];
    try {
      names = readdirSync(join(this.opts.root, CONFIGS_DIR));
    } catch {
      return;
    }
    for (const n of names) {
      try {
        checkName(n);
      } catch {
        continue;
      }
      if (!isInstalled(this.opts.root, n)) continue;
      try {
        this.openReportSocket(n);
      } catch (e) {
        log(`report socket for ${n}: ${(e as Error).message}`);
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
    const path = reportSocket(this.opts.root, name);
    removeStaleSocket(path);
    // 0666: a container with private users connects as a mapped (non-root) host uid; the directory is
    // bound into that container only, and peers from the host's own pid namespace must be root (see allowed()).
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

  private handlers(kind: Kind) {
    return {
      open: (sock: Socket<unknown>) => {
        const conn = new Conn(sock, kind);
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
      timeout: (sock: Socket<unknown>) => {
        const conn = this.conns.get(sock);
        if (conn && conn.reader.pending > 0) conn.close();
      },
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

  /** Why a peer may not use this socket, or null. */
  private refusal(sock: Socket<unknown>, kind: Kind): string | null {
    const cred = peerCred((sock as unknown as { fd: number }).fd);
    if (!cred) return "cannot read the peer's credentials";
    const conn = this.conns.get(sock);
    if (conn && !kind.admin) conn.peer = { pid: cred.pid, start: procStart(cred.pid) };
    if (kind.admin) {
      return this.opts.allowUids.includes(cred.uid) ? null : `uid ${cred.uid} may not use the admin socket`;
    }
    // a container's processes live in their own pid namespace; host processes must be root
    if (cred.uid === 0) return null;
    const ns = readNs(String(cred.pid));
    if (ns !== null && this.myPidNs !== null && ns !== this.myPidNs) return null;
    return `uid ${cred.uid} on the host may not report for ${kind.container}`;
  }

  private onData(conn: Conn, chunk: Uint8Array): void {
    for (const f of conn.reader.push(chunk)) {
      if (conn.closed) return;
      if (f.kind === "too-large") {
        conn.send(errorReply(null, ERR.FRAME_TOO_LARGE, `frame of ${f.length} bytes exceeds the limit of 1048576`));
        conn.close();
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
    // only a half-received frame arms the timeout; idle clients between requests may stay
    conn.sock.timeout(conn.reader.pending > 0 ? this.opts.frameTimeout : 0);
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
        log(`internal error in '${cmd}': ${(e as Error)?.stack ?? String(e)}`);
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
    this.admin?.stop(true);
    for (const { listener, path } of this.reportListeners.values()) {
      listener.stop(true);
      unlinkIfSocket(path);
    }
    this.reportListeners.clear();
    unlinkIfSocket(this.opts.socketPath);
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

function readNs(pid: string): string | null {
  try {
    return readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return null;
  }
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
