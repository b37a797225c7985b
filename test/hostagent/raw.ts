// A raw client for malformed traffic: writes arbitrary bytes and records every reply frame and the close.
import type { Socket } from "bun";
import { FrameReader } from "../../hostagent/protocol.ts";

export class Raw {
  readonly frames: Record<string, unknown>[] = [];
  private reader = new FrameReader();
  private waiters: (() => void)[] = [];
  closedFlag = false;
  sock!: Socket<undefined>;
  private queue: Uint8Array[] = [];
  readonly closed: Promise<void>;
  private onClose!: () => void;

  constructor() {
    this.closed = new Promise((r) => (this.onClose = r));
  }

  static async connect(path: string): Promise<Raw> {
    const r = new Raw();
    r.sock = await Bun.connect({
      unix: path,
      socket: {
        data: (_s, chunk) => {
          for (const f of r.reader.push(chunk)) if (f.kind === "value") r.frames.push(f.value as Record<string, unknown>);
          r.wake();
        },
        drain: () => r.flush(),
        close: () => r.closeNow(),
        error: () => r.closeNow(),
      },
    });
    return r;
  }

  private closeNow(): void {
    this.closedFlag = true;
    this.onClose();
    this.wake();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  write(b: Uint8Array): void {
    if (this.closedFlag) return;
    if (this.queue.length) {
      this.queue.push(b);
      return;
    }
    const n = this.sock.write(b);
    if (n < b.length) this.queue.push(b.subarray(Math.max(0, n)));
  }

  private flush(): void {
    while (this.queue.length) {
      const h = this.queue[0]!;
      const n = this.sock.write(h);
      if (n < h.length) {
        this.queue[0] = h.subarray(Math.max(0, n));
        return;
      }
      this.queue.shift();
    }
  }

  /** Wait until `n` frames arrived or the connection closed (or the timeout passed). */
  async waitFrames(n: number, timeoutMs = 5000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (this.frames.length < n && !this.closedFlag && Date.now() < end) {
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, Math.max(1, end - Date.now()));
      });
    }
  }

  end(): void {
    this.sock.end();
  }
}

export function header(len: number): Uint8Array {
  const h = new Uint8Array(4);
  new DataView(h.buffer).setUint32(0, len);
  return h;
}

export function framed(body: Uint8Array): Uint8Array {
  return new Uint8Array([...header(body.length), ...body]);
}
