// Requests are maps {id, cmd, args}; replies {id, ok: true, result} or {id, ok: false, error: {code, message}};
// `watch` streams {id, event} frames. The frames themselves: common/frame.ts.
import { encodeFrame, isPlainObject } from "../common/frame.ts";
import { ERR } from "./errors.ts";

export { decodePayload, encodedSize, encodeFrame, type Frame, FrameReader, HEADER, isPlainObject, MAX_FRAME } from "../common/frame.ts";

export type RequestId = number | string | null;
export interface Request {
  id: RequestId;
  cmd: string;
  args: Record<string, unknown>;
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
