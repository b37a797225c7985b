// Shared pieces of the probe tests: temp dirs (test/scratch.ts, prefix m8p), a notify-socket listener, process checks.
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { scratchDir } from "../scratch.ts";
import { closeFd } from "../../common/libc.ts";
import type { Creds } from "../../common/libc-net.ts";
import { bindUnixDatagram, recvDatagram } from "../../common/libc-notify.ts";

export const ROOT = `${import.meta.dir}/../..`;
export const isRoot = process.getuid?.() === 0;

export function tempDir(tag: string): { path: string; remove(): void } {
  const path = scratchDir(`m8p-${tag}`);
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export interface Message {
  /** performance.now() when the datagram was read (polled every 2 ms) */
  t: number;
  /** Date.now() at the same moment */
  wall: number;
  text: string;
  creds: Creds | null;
}

/** An AF_UNIX datagram listener with SO_PASSCRED, polled every 2 ms, collecting every message. */
export class NotifyListener {
  readonly messages: Message[] = [];
  private fd: number;
  private timer: ReturnType<typeof setInterval>;
  private waiters: { pred: (m: Message) => boolean; resolve: (m: Message) => void }[] = [];
  constructor(readonly path: string) {
    this.fd = bindUnixDatagram(path);
    this.timer = setInterval(() => this.poll(), 2);
  }
  poll(): void {
    for (;;) {
      const d = recvDatagram(this.fd);
      if (!d) return;
      const m = { t: performance.now(), wall: Date.now(), text: new TextDecoder().decode(d.data), creds: d.creds };
      this.messages.push(m);
      this.waiters = this.waiters.filter((w) => {
        if (!w.pred(m)) return true;
        w.resolve(m);
        return false;
      });
    }
  }
  /** Resolves with the first message (already received or future) matching pred, or null after timeoutMs. */
  waitFor(pred: (m: Message) => boolean, timeoutMs: number): Promise<Message | null> {
    const have = this.messages.find(pred);
    if (have) return Promise.resolve(have);
    return new Promise((resolve) => {
      const w = { pred, resolve: (m: Message | null) => { clearTimeout(t); resolve(m); } };
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        resolve(null);
      }, timeoutMs);
      this.waiters.push(w as never);
    });
  }
  close(): void {
    clearInterval(this.timer);
    this.poll();
    closeFd(this.fd);
  }
}

/** /proc/PID/stat fields after the command name: [state, ppid, pgrp, ...]; null when gone. */
function statFields(pid: number): string[] | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    return s.slice(s.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** Alive = exists and is not a zombie (a killed orphan stays a zombie until its new parent reaps it). */
export function processExists(pid: number): boolean {
  const f = statFields(pid);
  return f !== null && f[0] !== "Z" && f[0] !== "X";
}

/** True when a live (non-zombie) process is still in process group pgid. */
export function groupExists(pgid: number): boolean {
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const f = statFields(Number(name));
    if (f && f[2] === String(pgid) && f[0] !== "Z" && f[0] !== "X") return true;
  }
  return false;
}

/** A TCP port that nothing listens on right now (bind, note, close). */
export function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const p = l.port;
  l.stop(true);
  return p;
}

export async function sh(cmd: string): Promise<{ code: number; out: string }> {
  const p = Bun.spawn(["sh", "-c", cmd], { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code: await p.exited, out: out + err };
}
