// libc sockets through bun:ffi for the probes: AF_UNIX SOCK_DGRAM with sendmsg + SCM_CREDENTIALS (sd_notify)
// and ICMP echo sockets (unprivileged SOCK_DGRAM/IPPROTO_ICMP, or SOCK_RAW). Bun has neither natively
// (docs/notes.md §6). Layouts are glibc x86_64, the same ABI the bundle ships whatever libc the image
// has; each struct below names its header. Nothing here blocks: every socket is SOCK_NONBLOCK and
// callers poll with MSG_DONTWAIT-style reads.
import { ptr } from "bun:ffi";
import { EAGAIN, EINTR, errno, ErrnoError, libc as L } from "./libc.ts";
import { AF_INET, AF_INET6, AF_UNIX, MSG_DONTWAIT, MSG_NOSIGNAL, SCM_CREDENTIALS, SO_PASSCRED, SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK, SOL_SOCKET } from "./libc-net.ts";

/** socket(2), always non-blocking and close-on-exec. Throws ErrnoError. */
export function openSocket(family: number, type: number, protocol: number): number {
  const fd = L.socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
  if (fd < 0) throw new ErrnoError(errno(), "socket");
  return fd;
}

export function setIntOption(fd: number, level: number, name: number, value: number): void {
  const v = new Int32Array([value]);
  if (L.setsockopt(fd, level, name, v, 4) !== 0) throw new ErrnoError(errno(), "setsockopt");
}

/**
 * struct sockaddr_un <sys/un.h>, 110 bytes: 0 sun_family u16, 2 sun_path[108].
 * A leading "@" means the abstract namespace (first path byte 0, length counts only the used bytes).
 * Returns the buffer and the address length to pass (offsetof(sun_path) + path length, + NUL for paths).
 */
export function sockaddrUn(path: string): { buf: Uint8Array; len: number } {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length === 0 || bytes.length >= 108) throw new Error(`unix socket path '${path}' is empty or longer than 107 bytes`);
  const buf = new Uint8Array(110);
  new DataView(buf.buffer).setUint16(0, AF_UNIX, true);
  buf.set(bytes, 2);
  const abstract = bytes[0] === 0x40; // "@"
  if (abstract) buf[2] = 0;
  return { buf, len: 2 + bytes.length + (abstract ? 0 : 1) };
}

/**
 * struct sockaddr_in <netinet/in.h>, 16 bytes: 0 family u16, 2 port u16 BE, 4 addr[4], 8 zero[8].
 * struct sockaddr_in6 <netinet/in.h>, 28 bytes: 0 family, 2 port BE, 4 flowinfo u32, 8 addr[16], 24 scope_id u32.
 */
export function sockaddrIn(addr: Uint8Array, port = 0, scopeId = 0): Uint8Array {
  if (addr.length === 4) {
    const b = new Uint8Array(16);
    const dv = new DataView(b.buffer);
    dv.setUint16(0, AF_INET, true);
    dv.setUint16(2, port, false);
    b.set(addr, 4);
    return b;
  }
  const b = new Uint8Array(28);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, AF_INET6, true);
  dv.setUint16(2, port, false);
  b.set(addr, 8);
  dv.setUint32(24, scopeId, true);
  return b;
}

/** Reads the address out of a sockaddr_in / sockaddr_in6 filled by recvmsg. */
export function sockaddrInAddress(b: Uint8Array): Uint8Array | null {
  const family = b[0]! | (b[1]! << 8);
  if (family === AF_INET) return b.slice(4, 8);
  if (family === AF_INET6) return b.slice(8, 24);
  return null;
}

export interface Creds {
  pid: number;
  uid: number;
  gid: number;
}

/*
 * struct msghdr <bits/socket.h>, 56 bytes:
 *   0 msg_name ptr, 8 msg_namelen u32 (+4 pad), 16 msg_iov ptr, 24 msg_iovlen size_t,
 *  32 msg_control ptr, 40 msg_controllen size_t, 48 msg_flags int (+4 pad)
 * struct iovec <bits/types/struct_iovec.h>, 16 bytes: 0 iov_base ptr, 8 iov_len size_t
 * struct cmsghdr <bits/socket.h>, 16 bytes then data: 0 cmsg_len size_t, 8 cmsg_level int, 12 cmsg_type int
 * struct ucred <bits/socket.h>, 12 bytes: 0 pid i32, 4 uid u32, 8 gid u32
 * CMSG_LEN(12) = 28, CMSG_SPACE(12) = 32.
 */
const CMSG_HDR = 16, UCRED_LEN = 12, CMSG_SPACE_UCRED = 32;

function msghdr(name: Uint8Array | null, namelen: number, iov: BigUint64Array, control: Uint8Array | null): BigUint64Array {
  const m = new BigUint64Array(7);
  m[0] = name ? BigInt(ptr(name)) : 0n;
  m[1] = BigInt(namelen);
  m[2] = BigInt(ptr(iov));
  m[3] = 1n;
  m[4] = control ? BigInt(ptr(control)) : 0n;
  m[5] = control ? BigInt(control.length) : 0n;
  m[6] = 0n;
  return m;
}

/**
 * sendmsg(2) of one datagram to a unix socket path, with explicit SCM_CREDENTIALS when `creds` is given
 * (the kernel accepts a pid other than our own only with CAP_SYS_ADMIN over the pid namespace).
 * Throws ErrnoError (EPERM for a refused claim, ENOENT/ECONNREFUSED for a missing listener).
 */
export function sendUnixDatagram(path: string, data: Uint8Array, creds?: Creds): number {
  const { buf: sa, len: salen } = sockaddrUn(path);
  const fd = openSocket(AF_UNIX, SOCK_DGRAM, 0);
  try {
    const payload = data.length > 0 ? data : new Uint8Array(1);
    const iov = new BigUint64Array([BigInt(ptr(payload)), BigInt(data.length)]);
    let control: Uint8Array | null = null;
    if (creds) {
      control = new Uint8Array(CMSG_SPACE_UCRED);
      const dv = new DataView(control.buffer);
      dv.setBigUint64(0, BigInt(CMSG_HDR + UCRED_LEN), true);
      dv.setInt32(8, SOL_SOCKET, true);
      dv.setInt32(12, SCM_CREDENTIALS, true);
      dv.setInt32(16, creds.pid, true);
      dv.setUint32(20, creds.uid, true);
      dv.setUint32(24, creds.gid, true);
    }
    const m = msghdr(sa, salen, iov, control);
    const n = Number(L.sendmsg(fd, m, MSG_NOSIGNAL));
    if (n < 0) throw new ErrnoError(errno(), "sendmsg");
    return n;
  } finally {
    L.close(fd);
  }
}

/** A bound AF_UNIX SOCK_DGRAM socket with SO_PASSCRED (a listener like nspawn's notify socket). */
export function bindUnixDatagram(path: string): number {
  const { buf, len } = sockaddrUn(path);
  const fd = openSocket(AF_UNIX, SOCK_DGRAM, 0);
  setIntOption(fd, SOL_SOCKET, SO_PASSCRED, 1);
  if (L.bind(fd, buf, len) !== 0) {
    const e = errno();
    L.close(fd);
    throw new ErrnoError(e, `bind ${path}`);
  }
  return fd;
}

export interface Datagram {
  data: Uint8Array;
  /** source address bytes (sockaddr_in/in6 sources only) */
  from: Uint8Array | null;
  /** SCM_CREDENTIALS of the sender when the socket has SO_PASSCRED */
  creds: Creds | null;
}

/** Non-blocking recvmsg(2): null when nothing is queued (EAGAIN); throws ErrnoError otherwise. */
export function recvDatagram(fd: number, max = 65536): Datagram | null {
  const data = new Uint8Array(max);
  const name = new Uint8Array(128);
  const control = new Uint8Array(64);
  const iov = new BigUint64Array([BigInt(ptr(data)), BigInt(max)]);
  const m = msghdr(name, name.length, iov, control);
  const n = Number(L.recvmsg(fd, m, MSG_DONTWAIT));
  if (n < 0) {
    const e = errno();
    if (e === EAGAIN || e === EINTR) return null;
    throw new ErrnoError(e, "recvmsg");
  }
  let creds: Creds | null = null;
  const controllen = Number(m[5]);
  const cdv = new DataView(control.buffer);
  for (let off = 0; off + CMSG_HDR <= controllen; ) {
    const len = Number(cdv.getBigUint64(off, true));
    if (len < CMSG_HDR) break;
    if (cdv.getInt32(off + 8, true) === SOL_SOCKET && cdv.getInt32(off + 12, true) === SCM_CREDENTIALS && len >= CMSG_HDR + UCRED_LEN) {
      creds = { pid: cdv.getInt32(off + 16, true), uid: cdv.getUint32(off + 20, true), gid: cdv.getUint32(off + 24, true) };
    }
    off += (len + 7) & ~7;
  }
  const namelen = Number(m[1]);
  return { data: data.slice(0, n), from: namelen > 0 ? sockaddrInAddress(name.slice(0, namelen)) : null, creds };
}

/** sendto(2) of one datagram to an IPv4/IPv6 address (ICMP sockets). Throws ErrnoError. */
export function sendToAddress(fd: number, data: Uint8Array, addr: Uint8Array, scopeId = 0): number {
  const sa = sockaddrIn(addr, 0, scopeId);
  const n = Number(L.sendto(fd, data, data.length, MSG_NOSIGNAL, sa, sa.length));
  if (n < 0) throw new ErrnoError(errno(), "sendto");
  return n;
}
