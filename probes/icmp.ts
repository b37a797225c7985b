// ICMP / ICMPv6 echo, through a socket (no `ping` needed in the image): up to 3 requests 1 s apart.
//
//   icmpEcho(address, family, timeoutMs, signal?): Promise<IcmpResult>
//
// Socket choice: an unprivileged ICMP datagram socket (socket(AF_INET[6], SOCK_DGRAM, IPPROTO_ICMP[V6]),
// allowed when our gid is inside net.ipv4.ping_group_range, which is "1 0" = nobody by default in a fresh
// netns), else a raw socket (needs CAP_NET_RAW, which root in a container normally has). `method` says
// which was used. The reply is matched on type, identifier (raw sockets), sequence and source.
// The socket is non-blocking and polled (1 → 10 ms backoff), so the event loop is never blocked.
import { closeFd, EACCES, EPERM, EPROTONOSUPPORT, ErrnoError } from "../common/libc.ts";
import { AF_INET, AF_INET6, IPPROTO_ICMP, IPPROTO_ICMPV6, SOCK_DGRAM, SOCK_RAW } from "../common/libc-net.ts";
import { openSocket, recvDatagram, sendToAddress } from "../common/libc-notify.ts";

const ECHO_TRIES = 3;
const ECHO_GAP_MS = 1000;

export interface IcmpResult {
  ok: boolean;
  method: "dgram" | "raw";
  rttMs: number;
  detail: string;
}

/** RFC 1071 Internet checksum. */
export function inetChecksum(b: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += (b[i]! << 8) | b[i + 1]!;
  if (b.length % 2) sum += b[b.length - 1]! << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

function openIcmp(family: 4 | 6): { fd: number; method: "dgram" | "raw" } {
  const af = family === 4 ? AF_INET : AF_INET6;
  const proto = family === 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6;
  try {
    return { fd: openSocket(af, SOCK_DGRAM, proto), method: "dgram" };
  } catch (e) {
    if (!(e instanceof ErrnoError) || (e.errno !== EACCES && e.errno !== EPERM && e.errno !== EPROTONOSUPPORT)) throw e;
  }
  try {
    return { fd: openSocket(af, SOCK_RAW, proto), method: "raw" };
  } catch (e) {
    if (e instanceof ErrnoError) throw new ErrnoError(e.errno, `ICMP socket (datagram socket refused by net.ipv4.ping_group_range, raw socket needs CAP_NET_RAW)`);
    throw e;
  }
}

function sameBytes(a: Uint8Array | null, b: Uint8Array): boolean {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export async function icmpEcho(address: string, family: 4 | 6, timeoutMs: number, signal?: AbortSignal): Promise<IcmpResult> {
  const { parseIPv4, parseIPv6 } = await import("../common/net/addrmath.ts");
  const dst = family === 4 ? parseIPv4(address) : parseIPv6(address);
  if (!dst) throw new Error(`'${address}' is not an IPv${family} address`);
  const { fd, method } = openIcmp(family);
  const t0 = performance.now();
  const id = (Math.random() * 0xffff) | 0;
  const first = ((Math.random() * 0x7fff) | 0) + 1;
  const done = (ok: boolean, detail: string): IcmpResult => ({ ok, method, rttMs: performance.now() - t0, detail });
  try {
    // up to ECHO_TRIES requests, ECHO_GAP_MS apart (a first echo can be lost while neighbours resolve);
    // a reply to any of them passes
    const sent = new Set<number>();
    const send = (): string | null => {
      const seq = first + sent.size;
      // echo request: type, code, checksum, identifier, sequence, payload
      const req = new Uint8Array(8 + 16);
      req[0] = family === 4 ? 8 : 128;
      const dv = new DataView(req.buffer);
      dv.setUint16(4, id, false);
      dv.setUint16(6, seq, false);
      req.set(new TextEncoder().encode("man8s-probe-ping"), 8);
      if (family === 4) dv.setUint16(2, inetChecksum(req), false); // ICMPv6: the kernel fills the checksum
      sent.add(seq);
      try {
        sendToAddress(fd, req, dst);
        return null;
      } catch (e) {
        return `echo to ${address} not sent: ${(e as Error).message}`;
      }
    };
    const notSent = send();
    if (notSent) return done(false, notSent);
    const replyType = family === 4 ? 0 : 129;
    const unreachType = family === 4 ? 3 : 1;
    let wait = 1;
    while (performance.now() - t0 < timeoutMs) {
      if (signal?.aborted) return done(false, "aborted");
      if (sent.size < ECHO_TRIES && performance.now() - t0 >= sent.size * ECHO_GAP_MS) {
        const err = send();
        if (err) return done(false, err);
      }
      let d;
      try {
        d = recvDatagram(fd, 2048);
      } catch (e) {
        return done(false, `echo to ${address}: ${(e as Error).message}`);
      }
      if (!d) {
        await Bun.sleep(Math.min(wait, Math.max(0, timeoutMs - (performance.now() - t0))));
        wait = Math.min(wait * 2, 10);
        continue;
      }
      let icmp = d.data;
      if (family === 4 && method === "raw") {
        const ihl = (icmp[0]! & 0x0f) * 4; // raw IPv4 sockets deliver the IP header too
        icmp = icmp.subarray(ihl);
      }
      if (icmp.length < 8) continue;
      const idv = new DataView(icmp.buffer, icmp.byteOffset, icmp.byteLength);
      const type = icmp[0]!;
      if (type === replyType) {
        if (!sent.has(idv.getUint16(6, false))) continue;
        if (method === "raw" && idv.getUint16(4, false) !== id) continue; // datagram sockets: the kernel owns the id
        if (d.from && !sameBytes(d.from, dst)) continue;
        return done(true, `echo reply from ${address} (${method} socket)`);
      }
      if (type === unreachType && icmp.length >= 8 + 8) {
        // the offending datagram follows: IPv4 header + 8 bytes, or the IPv6 header (40) + 8 bytes
        const inner = family === 4 ? icmp.subarray(8 + ((icmp[8]! & 0x0f) * 4)) : icmp.subarray(8 + 40);
        if (inner.length >= 8 && ((inner[4]! << 8) | inner[5]!) === id && sent.has((inner[6]! << 8) | inner[7]!)) {
          return done(false, `${address} unreachable (ICMP type ${type} code ${icmp[1]})`);
        }
      }
    }
    return done(false, `no echo reply from ${address} within ${timeoutMs} ms`);
  } finally {
    closeFd(fd);
  }
}
