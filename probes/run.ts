// Runs one probe with a timeout.
//
//   runProbe(probe, opts): Promise<ProbeResult>      never throws for probe failures; ok says pass/fail
//   runCommand(argv, opts): Promise<CommandResult>   the exec engine (also used for HEALTHCHECK CMD)
//   shellCommand(cmd): SplitResult                   exec: argv: /bin/sh -c CMD, or its words without a shell
//   goDuration(ms): string                           Go's time.Duration text ("30s", "1.5s", "250ms")
//
// exec: the command runs with Bun.spawn (so the init's reaper leaves it alone) in its own session and process
// group (detached → setsid); at the timeout (or on opts.signal) the whole group gets SIGKILL and the result is
// exitCode -1, timedOut. stdout and stderr go into one buffer capped at OUTPUT_LIMIT bytes, with "..." appended
// when more was written (moby's limitedBuffer). tcp/http use node:net / node:tls (a pending connect can be
// destroyed, and no HTTP_PROXY or connection pool is involved); http sends one HTTP/1.1 GET with
// Connection: close and passes on a 2xx/3xx status line. icmp: see icmp.ts.
import { existsSync } from "node:fs";
import { constants as osConstants } from "node:os";
import type { Probe } from "./url.ts";
import { type SplitResult, splitWords } from "../common/shellwords.ts";
import { resolveHost, type Env } from "./resolve.ts";
import { setLongTimeout, sleepLong } from "../common/timer.ts";
import { trackBunChild, untrackBunChild } from "../common/bun-children.ts";

export const OUTPUT_LIMIT = 4096;

export interface ProbeResult {
  ok: boolean;
  /** exec: the command's exit code (128+n when killed by signal n); others 0 pass / 1 fail; -1 timeout or error */
  exitCode: number;
  /** exec: captured output (capped); others: one line saying what happened */
  output: string;
  timedOut: boolean;
  durationMs: number;
  /** the address the host resolved to (tcp/http/icmp) */
  address?: string;
}

export interface RunOptions {
  timeoutMs: number;
  /** environment for name resolution (MAN8S_YGGDRASIL_*) */
  env?: Env;
  /** our yggdrasil /64, when the caller knows it (resolve.ts ResolveOptions); default: from env */
  yggPrefix?: string | null;
  /** environment of exec: commands (default: process.env) */
  spawnEnv?: Record<string, string | undefined>;
  cwd?: string;
  uid?: number;
  gid?: number;
  /** exec: commands run as the app's user: the init's launcher wraps argv (init/launch.ts) */
  wrap?: (argv: string[]) => string[];
  signal?: AbortSignal;
}

export interface CommandResult {
  exitCode: number;
  output: string;
  timedOut: boolean;
  aborted: boolean;
  pid: number;
  /** set when the command could not be started */
  spawnError?: string;
}

/** Go's time.Duration.String() for whole milliseconds and up (what Docker prints in timeout messages). */
export function goDuration(ms: number): string {
  if (ms === 0) return "0s";
  if (ms < 1000) return `${+ms.toFixed(3)}ms`;
  let s = ms / 1000;
  let out = "";
  const h = Math.floor(s / 3600);
  if (h) out += `${h}h`;
  s -= h * 3600;
  const m = Math.floor(s / 60);
  if (h || m) out += `${m}m`;
  s -= m * 60;
  return `${out}${+s.toFixed(3)}s`;
}

/** Appends while there is room; remembers truncation (moby daemon/health.go limitedBuffer). */
export class LimitedBuffer {
  private chunks: Uint8Array[] = [];
  private size = 0;
  truncated = false;
  constructor(readonly limit = OUTPUT_LIMIT) {}
  write(data: Uint8Array): void {
    const keep = Math.min(this.limit - this.size, data.length);
    if (keep > 0) {
      this.chunks.push(data.subarray(0, keep));
      this.size += keep;
    }
    if (keep < data.length) this.truncated = true;
  }
  toString(): string {
    return Buffer.concat(this.chunks).toString("utf8") + (this.truncated ? "..." : "");
  }
}

/**
 * argv for an exec: probe: through the image's /bin/sh when present, else its words (common/shellwords.ts,
 * command mode), refusing what needs a shell (| ; $ ...) rather than passing it on as words.
 */
export function shellCommand(cmd: string, shell = "/bin/sh"): SplitResult {
  if (existsSync(shell)) return { ok: true, argv: [shell, "-c", cmd] };
  const words = splitWords(cmd);
  return words.ok ? words : { ok: false, reason: `${words.reason}, and the image has no ${shell}` };
}

async function drain(stream: ReadableStream<Uint8Array>, buf: LimitedBuffer, stop: Promise<void>): Promise<void> {
  const reader = stream.getReader();
  let stopped = false;
  void stop.then(() => {
    stopped = true;
    reader.cancel().catch(() => {});
  });
  try {
    while (!stopped) {
      const { done, value } = await reader.read();
      if (done) break;
      if (value) buf.write(value);
    }
  } catch {
    // cancelled or the pipe broke: keep what we have
  }
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/**
 * Runs argv in a new session/process group with stdin closed and stdout+stderr captured.
 * At timeoutMs (or opts.signal) the whole process group is killed with SIGKILL.
 */
export async function runCommand(argv: string[], opts: RunOptions & { outputLimit?: number }): Promise<CommandResult> {
  const buf = new LimitedBuffer(opts.outputLimit ?? OUTPUT_LIMIT);
  if (argv.length === 0) return { exitCode: -1, output: "empty command", timedOut: false, aborted: false, pid: 0, spawnError: "empty command" };
  let proc: ReturnType<typeof Bun.spawn<"ignore", "pipe", "pipe">>;
  try {
    proc = Bun.spawn(opts.wrap ? opts.wrap(argv) : argv, {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      detached: true,
      env: (opts.spawnEnv ?? process.env) as Record<string, string>,
      ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
      ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
      ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    });
  } catch (e) {
    const msg = `cannot run ${JSON.stringify(argv[0])}: ${(e as Error).message}`;
    return { exitCode: -1, output: msg, timedOut: false, aborted: false, pid: 0, spawnError: msg };
  }
  const pid = proc.pid;
  trackBunChild(pid); // the init's reaper must leave Bun's child to Bun
  let timedOut = false, aborted = false;
  let releaseReaders!: () => void;
  const readersStop = new Promise<void>((r) => (releaseReaders = r));
  const readers = Promise.all([drain(proc.stdout, buf, readersStop), drain(proc.stderr, buf, readersStop)]);
  // a Healthcheck Timeout of "720h" is longer than a plain setTimeout can wait
  const timer = setLongTimeout(() => {
    timedOut = true;
    killGroup(pid);
  }, opts.timeoutMs);
  const onAbort = () => {
    aborted = true;
    killGroup(pid);
  };
  if (opts.signal?.aborted) onAbort();
  else opts.signal?.addEventListener("abort", onAbort, { once: true });
  let code: number;
  try {
    code = await proc.exited;
  } finally {
    untrackBunChild(pid);
    timer.clear();
    opts.signal?.removeEventListener("abort", onAbort);
  }
  if (timedOut || aborted) killGroup(pid); // grandchildren left in the group
  // A background child that escaped the group may hold the pipes: wait for EOF only a little.
  const grace = setTimeout(releaseReaders, timedOut || aborted ? 50 : 200);
  await readers;
  clearTimeout(grace);
  releaseReaders();
  const sig = proc.signalCode;
  if (!timedOut && !aborted && sig) code = 128 + ((osConstants.signals as Record<string, number>)[sig] ?? 0);
  return { exitCode: timedOut || aborted ? -1 : code, output: buf.toString(), timedOut, aborted, pid };
}

function hostForHeader(host: string, port: number, tls: boolean): string {
  const h = host.includes(":") ? `[${host}]` : host;
  return port === (tls ? 443 : 80) ? h : `${h}:${port}`;
}

interface ConnectOutcome {
  ok: boolean;
  timedOut: boolean;
  detail: string;
}

/** TCP connect, optionally followed by one HTTP GET; always destroys the socket. */
async function connectProbe(
  address: string,
  port: number,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  http?: { hostHeader: string; path: string; tls: boolean; servername?: string },
): Promise<ConnectOutcome> {
  const net = await import("node:net");
  const tlsMod = http?.tls ? await import("node:tls") : null;
  return await new Promise<ConnectOutcome>((resolve) => {
    let settled = false;
    const sock = tlsMod
      ? tlsMod.connect({ host: address, port, rejectUnauthorized: false, ...(http?.servername ? { servername: http.servername } : {}) })
      : net.createConnection({ host: address, port });
    let head = "";
    const finish = (o: ConnectOutcome) => {
      if (settled) return;
      settled = true;
      timer.clear();
      signal?.removeEventListener("abort", onAbort);
      sock.destroy();
      resolve(o);
    };
    const timer = setLongTimeout(
      () => finish({ ok: false, timedOut: true, detail: `no ${http ? "HTTP response" : "connection"} within ${goDuration(Math.round(timeoutMs))}` }),
      timeoutMs,
    );
    const onAbort = () => finish({ ok: false, timedOut: false, detail: "aborted" });
    signal?.addEventListener("abort", onAbort, { once: true });
    sock.on("error", (e: NodeJS.ErrnoException) => finish({ ok: false, timedOut: false, detail: e.code ? `${e.code}: ${e.message}` : e.message }));
    sock.on(tlsMod ? "secureConnect" : "connect", () => {
      if (!http) return finish({ ok: true, timedOut: false, detail: `connected to ${address}:${port}` });
      sock.write(
        `GET ${http.path} HTTP/1.1\r\nHost: ${http.hostHeader}\r\nUser-Agent: man8s-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n`,
      );
    });
    if (http) {
      sock.on("data", (chunk: Buffer) => {
        head += chunk.toString("latin1");
        const eol = head.indexOf("\r\n");
        if (eol < 0 && head.length < 8192) return;
        const line = eol < 0 ? head.slice(0, 200) : head.slice(0, eol);
        const m = /^HTTP\/\d(?:\.\d)? (\d{3})(?: (.*))?$/.exec(line);
        if (!m) return finish({ ok: false, timedOut: false, detail: `not an HTTP status line: ${JSON.stringify(line.slice(0, 80))}` });
        const status = Number(m[1]);
        finish({ ok: status >= 200 && status < 400, timedOut: false, detail: `HTTP ${status}${m[2] ? ` ${m[2]}` : ""}` });
      });
      sock.on("end", () => finish({ ok: false, timedOut: false, detail: "connection closed before an HTTP status line" }));
    }
  });
}

export async function runProbe(probe: Probe, opts: RunOptions): Promise<ProbeResult> {
  const t0 = performance.now();
  const elapsed = () => performance.now() - t0;
  if (probe.kind === "exec") {
    const argv = shellCommand(probe.command);
    if (!argv.ok) return { ok: false, exitCode: -1, output: `exec: ${argv.reason}`, timedOut: false, durationMs: elapsed() };
    const r = await runCommand(argv.argv, opts);
    return { ok: r.exitCode === 0, exitCode: r.exitCode, output: r.timedOut ? `timed out after ${goDuration(opts.timeoutMs)}: ${r.output}` : r.output, timedOut: r.timedOut, durationMs: elapsed() };
  }
  if (probe.kind === "ready") {
    const r = await (await import("../common/cluster-lookup.ts")).readyProbe(probe.host, opts.env ?? process.env, opts.timeoutMs);
    return { ok: r.ok, exitCode: r.ok ? 0 : 1, output: r.detail, timedOut: false, durationMs: elapsed(), ...(r.address ? { address: r.address } : {}) };
  }
  let address: string, family: 4 | 6;
  try {
    const res = await Promise.race([
      resolveHost(probe.host, opts.env ?? process.env, opts.yggPrefix !== undefined ? { yggPrefix: opts.yggPrefix } : {}),
      sleepLong(opts.timeoutMs).then(() => null),
    ]);
    if (!res) return { ok: false, exitCode: -1, output: `resolving '${probe.host}' took longer than ${goDuration(opts.timeoutMs)}`, timedOut: true, durationMs: elapsed() };
    ({ address, family } = res);
  } catch (e) {
    return { ok: false, exitCode: 1, output: (e as Error).message, timedOut: false, durationMs: elapsed() };
  }
  const left = Math.max(1, opts.timeoutMs - elapsed());
  if (probe.kind === "icmp") {
    const { icmpEcho } = await import("./icmp.ts");
    try {
      const r = await icmpEcho(address, family, left, opts.signal);
      const timedOut = !r.ok && r.detail.startsWith("no echo reply");
      return { ok: r.ok, exitCode: r.ok ? 0 : timedOut ? -1 : 1, output: r.detail, timedOut, durationMs: elapsed(), address };
    } catch (e) {
      return { ok: false, exitCode: 1, output: (e as Error).message, timedOut: false, durationMs: elapsed(), address };
    }
  }
  const http = probe.kind === "http"
    ? {
      hostHeader: hostForHeader(probe.host.replace(/%.*$/, ""), probe.port, probe.tls),
      path: probe.path,
      tls: probe.tls,
      ...(address !== probe.host ? { servername: probe.host } : {}),
    }
    : undefined;
  const o = await connectProbe(address, probe.port, left, opts.signal, http);
  return { ok: o.ok, exitCode: o.ok ? 0 : o.timedOut ? -1 : 1, output: o.detail, timedOut: o.timedOut, durationMs: elapsed(), address };
}
