// The wire format of the agent's sockets (docs/protocol.md): a stream of frames, each a 4-byte big-endian
// payload length followed by one msgpack value. Shared by the agent (hostagent/protocol.ts adds requests and
// replies) and by the init's client of its report socket (common/report-client.ts). The decoder never
// throws: it returns typed problems so a server can answer (bad msgpack) or close (oversized header: the
// stream cannot be resynchronised cheaply).
import { Decoder, Encoder } from "@msgpack/msgpack";

export const MAX_FRAME = 1024 * 1024;
export const HEADER = 4;

// One encoder/decoder pair per process: they keep reusable buffers and a key cache, which matters for latency.
const encoder = new Encoder({ ignoreUndefined: true });
const decoder = new Decoder({ maxStrLength: MAX_FRAME, maxBinLength: MAX_FRAME, maxArrayLength: MAX_FRAME, maxMapLength: MAX_FRAME });

/** Encode one value as a complete frame (header + payload). Throws if the payload would exceed MAX_FRAME. */
export function encodeFrame(value: unknown): Uint8Array {
  const body = encoder.encode(value);
  if (body.length > MAX_FRAME) throw new RangeError(`frame of ${body.length} bytes exceeds ${MAX_FRAME}`);
  const out = new Uint8Array(HEADER + body.length);
  new DataView(out.buffer).setUint32(0, body.length, false);
  out.set(body, HEADER);
  return out;
}

/** The payload size a value encodes to (no limit applied): to fit a reply before sending it. */
export function encodedSize(value: unknown): number {
  return encoder.encode(value).length;
}

export type Frame =
  | { kind: "value"; value: unknown }
  | { kind: "bad-msgpack"; message: string }
  | { kind: "too-large"; length: number };

/**
 * Incremental frame splitter for one connection. push() returns the frames completed by this chunk.
 * Linear in the bytes received: a frame's body is allocated once at its announced length and filled in
 * place, however small the chunks. After a too-large header it stops (the caller closes the connection).
 */
export class FrameReader {
  private readonly head = new Uint8Array(HEADER);
  private headLen = 0;
  private body: Uint8Array | null = null;
  private filled = 0;
  private dead = false;
  /** performance.now() when the incomplete frame began, null between frames (the server's deadline) */
  startedAt: number | null = null;

  constructor(readonly maxFrame = MAX_FRAME) {}

  /** bytes held for an incomplete frame */
  get pending(): number {
    return this.headLen + this.filled;
  }

  push(chunk: Uint8Array, now = performance.now()): Frame[] {
    const out: Frame[] = [];
    let off = 0;
    while (!this.dead && off < chunk.length) {
      if (this.body === null) {
        const take = Math.min(HEADER - this.headLen, chunk.length - off);
        this.head.set(chunk.subarray(off, off + take), this.headLen);
        this.headLen += take;
        off += take;
        if (this.headLen < HEADER) break;
        const h = this.head;
        const len = ((h[0]! << 24) >>> 0) + (h[1]! << 16) + (h[2]! << 8) + h[3]!;
        if (len > this.maxFrame) {
          this.dead = true;
          out.push({ kind: "too-large", length: len });
          break;
        }
        if (len === 0) {
          this.headLen = 0;
          out.push(decodePayload(new Uint8Array(0)));
          continue;
        }
        this.body = new Uint8Array(len);
        this.filled = 0;
      }
      const take = Math.min(this.body.length - this.filled, chunk.length - off);
      // copied, never viewed: the chunk's memory belongs to the socket layer and may be reused
      this.body.set(chunk.subarray(off, off + take), this.filled);
      this.filled += take;
      off += take;
      if (this.filled === this.body.length) {
        out.push(decodePayload(this.body));
        this.body = null;
        this.filled = 0;
        this.headLen = 0;
      }
    }
    if (this.pending === 0 || this.dead) this.startedAt = null;
    else if (this.startedAt === null || (out.length > 0 && this.pending > 0)) this.startedAt = now;
    return out;
  }
}

export function decodePayload(payload: Uint8Array): Frame {
  if (payload.length === 0) return { kind: "bad-msgpack", message: "empty frame" };
  try {
    return { kind: "value", value: decoder.decode(payload) };
  } catch (e) {
    return { kind: "bad-msgpack", message: e instanceof Error ? e.message : String(e) };
  }
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof Date);
}

