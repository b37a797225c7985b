// rtnetlink framing: build requests (nlmsghdr + family header + rtattrs), send them on a blocking
// NETLINK_ROUTE socket, collect the ACK or dump, and parse replies. Layouts from <linux/netlink.h>,
// <linux/rtnetlink.h>, <linux/if_addr.h>, <linux/if_link.h>, <linux/fib_rules.h>, rtnetlink(7).
import { closeFd, ErrnoError } from "../common/libc.ts";
import { netlinkSocket, sockRecv, sockSend } from "../common/libc-net.ts";

// <linux/netlink.h>
export const NLMSG_NOOP = 1, NLMSG_ERROR = 2, NLMSG_DONE = 3, NLMSG_OVERRUN = 4;
export const NLM_F_REQUEST = 0x1, NLM_F_MULTI = 0x2, NLM_F_ACK = 0x4, NLM_F_DUMP = 0x300;
export const NLM_F_REPLACE = 0x100, NLM_F_EXCL = 0x200, NLM_F_CREATE = 0x400;
export const NLM_F_ACK_TLVS = 0x200, NLMSGERR_ATTR_MSG = 1;
// <linux/rtnetlink.h>
export const RTM_NEWLINK = 16, RTM_DELLINK = 17, RTM_GETLINK = 18, RTM_SETLINK = 19;
export const RTM_NEWADDR = 20, RTM_DELADDR = 21, RTM_GETADDR = 22;
export const RTM_NEWROUTE = 24, RTM_DELROUTE = 25, RTM_GETROUTE = 26;
export const RTM_NEWRULE = 32, RTM_DELRULE = 33, RTM_GETRULE = 34;
// legacy multicast group bits for bind(): RTMGRP_*
export const RTMGRP_LINK = 0x1, RTMGRP_IPV4_IFADDR = 0x10, RTMGRP_IPV4_ROUTE = 0x40;
export const RTMGRP_IPV6_IFADDR = 0x100, RTMGRP_IPV6_ROUTE = 0x400;

export const NLMSG_HDRLEN = 16;
export const align4 = (n: number): number => (n + 3) & ~3;

/** A kernel refusal (not a failed send or recv): errno plus what we asked for, and the kernel's extended-ACK text when it sent one. */
export class NetlinkError extends ErrnoError {
  constructor(
    errno: number,
    what: string,
    readonly kernelMsg?: string,
  ) {
    super(errno, what, kernelMsg);
  }
}

/** Attribute list builder: struct rtattr {u16 len; u16 type} + payload, padded to 4 bytes. */
export class Attrs {
  readonly parts: Uint8Array[] = [];
  add(type: number, data: Uint8Array): this {
    const b = new Uint8Array(align4(4 + data.length));
    const dv = new DataView(b.buffer);
    dv.setUint16(0, 4 + data.length, true);
    dv.setUint16(2, type, true);
    b.set(data, 4);
    this.parts.push(b);
    return this;
  }
  u32(type: number, v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0, true);
    return this.add(type, b);
  }
  str(type: number, s: string): this {
    return this.add(type, new TextEncoder().encode(`${s}\0`));
  }
}

export function buildMessage(type: number, flags: number, seq: number, header: Uint8Array, attrs?: Attrs): Uint8Array {
  const parts = attrs?.parts ?? [];
  const len = NLMSG_HDRLEN + header.length + parts.reduce((a, p) => a + p.length, 0);
  const b = new Uint8Array(len);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, len, true);
  dv.setUint16(4, type, true);
  dv.setUint16(6, flags, true);
  dv.setUint32(8, seq, true);
  dv.setUint32(12, 0, true);
  let o = NLMSG_HDRLEN;
  b.set(header, o);
  o += header.length;
  for (const p of parts) {
    b.set(p, o);
    o += p.length;
  }
  return b;
}

export interface NlMsg {
  type: number;
  flags: number;
  seq: number;
  /** the message body after nlmsghdr */
  body: Uint8Array;
}

/** Splits a buffer holding one or more netlink messages (Bun may hand several datagrams in one chunk). */
export function splitMessages(buf: Uint8Array): NlMsg[] {
  const out: NlMsg[] = [];
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let o = 0; o + NLMSG_HDRLEN <= buf.length; ) {
    const len = dv.getUint32(o, true);
    if (len < NLMSG_HDRLEN || o + len > buf.length) break;
    out.push({
      type: dv.getUint16(o + 4, true),
      flags: dv.getUint16(o + 6, true),
      seq: dv.getUint32(o + 8, true),
      body: buf.subarray(o + NLMSG_HDRLEN, o + len),
    });
    o += align4(len);
  }
  return out;
}

/** Parses the rtattrs that follow a fixed header of `hdrLen` bytes; last one of a type wins. */
export function parseAttrs(body: Uint8Array, hdrLen: number): Map<number, Uint8Array> {
  const m = new Map<number, Uint8Array>();
  const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  for (let o = hdrLen; o + 4 <= body.length; ) {
    const len = dv.getUint16(o, true);
    if (len < 4 || o + len > body.length) break;
    m.set(dv.getUint16(o + 2, true) & 0x3fff, body.subarray(o + 4, o + len));
    o += align4(len);
  }
  return m;
}

export const u32At = (b: Uint8Array, o = 0): number => new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(o, true);

function cstr(b: Uint8Array): string {
  const z = b.indexOf(0);
  return new TextDecoder().decode(z < 0 ? b : b.subarray(0, z));
}

/**
 * A blocking request socket. Every request asks for an ACK; the reply is matched by sequence number.
 * Requests are short kernel round-trips (tens of µs), so blocking the JS thread is cheaper than async.
 */
export class Rtnl {
  private fd: number;
  private seq = Math.floor(Math.random() * 0x7fffffff);
  private buf = new Uint8Array(1 << 16);

  constructor() {
    // the timeout only guards against a kernel that never answers; it never fires in practice
    this.fd = netlinkSocket({ timeoutMs: 5000 });
  }

  close(): void {
    if (this.fd >= 0) closeFd(this.fd);
    this.fd = -1;
  }

  /** Sends one request; returns the data messages of a dump (empty for a plain ACK). Throws NetlinkError. */
  request(type: number, flags: number, header: Uint8Array, attrs: Attrs | undefined, what: string): NlMsg[] {
    const seq = ++this.seq >>> 0;
    const dump = (flags & NLM_F_DUMP) === NLM_F_DUMP;
    const msg = buildMessage(type, NLM_F_REQUEST | (dump ? 0 : NLM_F_ACK) | flags, seq, header, attrs);
    sockSend(this.fd, msg, what);
    const out: NlMsg[] = [];
    for (;;) {
      const n = sockRecv(this.fd, this.buf, what);
      for (const m of splitMessages(this.buf.subarray(0, n))) {
        if (m.seq !== seq) continue; // a stale reply of an earlier, abandoned request
        if (m.type === NLMSG_ERROR) {
          const err = new DataView(m.body.buffer, m.body.byteOffset).getInt32(0, true);
          if (err === 0) return out;
          throw new NetlinkError(-err, what, extAckMessage(m));
        }
        if (m.type === NLMSG_DONE) return out;
        if (m.type === NLMSG_NOOP || m.type === NLMSG_OVERRUN) continue;
        out.push({ ...m, body: m.body.slice() });
      }
    }
  }
}

/** The NLMSGERR_ATTR_MSG text of an extended ACK, if any. */
function extAckMessage(m: NlMsg): string | undefined {
  if (!(m.flags & NLM_F_ACK_TLVS)) return undefined;
  // struct nlmsgerr: int error + the original nlmsghdr (16), payload omitted when NLM_F_CAPPED
  const origLen = new DataView(m.body.buffer, m.body.byteOffset).getUint32(4, true);
  const capped = (m.flags & 0x100) !== 0; // NLM_F_CAPPED
  const tlvAt = 4 + (capped ? NLMSG_HDRLEN : align4(origLen));
  const attrs = parseAttrs(m.body, tlvAt);
  const t = attrs.get(NLMSGERR_ATTR_MSG);
  return t ? cstr(t) : undefined;
}

export { cstr };
