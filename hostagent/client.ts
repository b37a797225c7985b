// Client side of the agent protocol, used by `man8s agent`, the tests and the benchmark.
import type { Socket } from "bun";
import { AgentError } from "./errors.ts";
import { FrameReader, encodeFrame, isPlainObject } from "./protocol.ts";

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
}

export class AgentClient {
  private readonly reader = new FrameReader();
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private sock!: Socket<undefined>;
  private closedErr: Error | null = null;
  private queue: Uint8Array[] = [];
  eventHandler: ((id: unknown, event: unknown) => void) | null = null;
  /** replies with id null (frame-level errors) go here */
  unmatched: unknown[] = [];
  onClose: (() => void) | null = null;

  static async connect(path: string): Promise<AgentClient> {
    const c = new AgentClient();
    c.sock = await Bun.connect({
      unix: path,
      socket: {
        data: (_s, chunk) => c.onData(chunk),
        drain: () => c.flush(),
        close: () => c.onClosed(new Error("connection closed by the agent")),
        error: (_s, e) => c.onClosed(e),
      },
    });
    return c;
  }

  private onClosed(e: Error): void {
    if (this.closedErr) return;
    this.closedErr = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    this.onClose?.();
  }

  get closed(): boolean {
    return this.closedErr !== null;
  }

  private onData(chunk: Uint8Array): void {
    for (const f of this.reader.push(chunk)) {
      if (f.kind !== "value" || !isPlainObject(f.value)) continue;
      const m = f.value;
      if ("event" in m) {
        this.eventHandler?.(m.id, m.event);
        continue;
      }
      const p = typeof m.id === "number" ? this.pending.get(m.id) : undefined;
      if (!p) {
        this.unmatched.push(m);
        // an error without an id is about the connection (refused peer, oversized frame): fail everything
        if ((m.id === null || m.id === undefined) && m.ok === false) {
          const err = isPlainObject(m.error) ? m.error : {};
          this.onClosed(new AgentError(String(err.code ?? "E_UNKNOWN"), String(err.message ?? "error")));
        }
        continue;
      }
      this.pending.delete(m.id as number);
      if (m.ok === true) p.resolve(m.result);
      else {
        const err = isPlainObject(m.error) ? m.error : {};
        p.reject(new AgentError(String(err.code ?? "E_UNKNOWN"), String(err.message ?? "error")));
      }
    }
  }

  /** Write raw bytes (tests use this to send malformed frames). */
  writeRaw(bytes: Uint8Array): void {
    if (this.queue.length > 0) {
      this.queue.push(bytes);
      return;
    }
    const n = this.sock.write(bytes);
    if (n < bytes.length) this.queue.push(bytes.subarray(Math.max(n, 0)));
  }

  private flush(): void {
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      const n = this.sock.write(head);
      if (n < head.length) {
        this.queue[0] = head.subarray(Math.max(n, 0));
        return;
      }
      this.queue.shift();
    }
  }

  request<T = unknown>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.writeRaw(encodeFrame({ id, cmd, args }));
    });
  }

  close(): void {
    this.sock.end();
  }
}
