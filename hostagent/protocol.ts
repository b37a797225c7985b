// Wire format: a stream of frames, each a 4-byte big-endian payload length followed by one msgpack value.
// Requests are maps {id, cmd, args}; replies {id, ok: true, result} or {id, ok: false, error: {code, message}};
// `watch` streams {id, event} frames. The decoder never throws: it returns typed problems so the server can
// answer (bad msgpack) or close (oversized header: the stream cannot be resynchronised cheaply).
import { Decoder, Encoder } from "@msgpack/msgpack";
import { ERR } from "./errors.ts";

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

export type Frame =
  | { kind: "value"; value: unknown }
  | { kind: "bad-msgpack"; message: string }
  | { kind: "too-large"; length: number };

/**
 * Incremental frame splitter for one connection. push() returns the frames completed by this chunk.
 * After a too-large header it stops (the caller closes the connection).
 */
export class FrameReader {
  private buf: Uint8Array = new Uint8Array(0);
  private dead = false;

  /** bytes held for an incomplete frame (the server times out connections that stall mid-frame) */
  get pending(): number {
    return this.buf.length;
  }

  push(chunk: Uint8Array): Frame[] {
    if (this.dead) return [];
    const data = this.buf.length === 0 ? chunk : concat(this.buf, chunk);
    const out: Frame[] = [];
    let off = 0;
    while (data.length - off >= HEADER) {
      const len = ((data[off]! << 24) >>> 0) + (data[off + 1]! << 16) + (data[off + 2]! << 8) + data[off + 3]!;
      if (len > MAX_FRAME) {
        this.dead = true;
        this.buf = new Uint8Array(0);
        out.push({ kind: "too-large", length: len });
        return out;
      }
      if (data.length - off - HEADER < len) break;
      const payload = data.subarray(off + HEADER, off + HEADER + len);
      off += HEADER + len;
      out.push(decodePayload(payload));
    }
    // copy the remainder: the chunk's memory belongs to the socket layer and may be reused
    this.buf = off === data.length ? new Uint8Array(0) : data.slice(off);
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

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

export type RequestId = number | string | null;
export interface Request {
  id: RequestId;
  cmd: string;
  args: Record<string, unknown>;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof Date);
}

/** Validate the envelope of a decoded frame. Returns the request, or an error with whatever id could be read. */
export function parseRequest(v: unknown): { req: Request } | { id: RequestId; code: string; message: string } {
  if (!isPlainObject(v)) return { id: null, code: ERR.BAD_REQUEST, message: "a request must be a msgpack map {id, cmd, args}" };
  const rawId = v.id;
  const id: RequestId = typeof rawId === "number" || typeof rawId === "string" ? rawId : null;
  if (rawId !== undefined && rawId !== null && id === null) {
    return { id: null, code: ERR.BAD_REQUEST, message: "id must be a number or a string" };
  }
  if (typeof v.cmd !== "string" || v.cmd.length === 0 || v.cmd.length > 64) {
    return { id, code: ERR.BAD_REQUEST, message: "cmd must be a non-empty string" };
  }
  const args = v.args === undefined || v.args === null ? {} : v.args;
  if (!isPlainObject(args)) return { id, code: ERR.BAD_REQUEST, message: "args must be a map" };
  return { req: { id, cmd: v.cmd, args } };
}

export function okReply(id: RequestId, result: unknown): Uint8Array {
  return encodeFrame({ id, ok: true, result });
}

export function errorReply(id: RequestId, code: string, message: string): Uint8Array {
  return encodeFrame({ id, ok: false, error: { code, message } });
}
