// Socket FFI for netctl: AF_NETLINK (rtnetlink), raw ICMP and packet sockets, plus the socket constants
// every socket wrapper (libc-notify.ts, libc-unix.ts) shares. Layouts are Linux x86_64 / glibc; each
// constant and struct names the header it comes from. Bun's own networking has no AF_NETLINK, so this is
// the only way to talk to the kernel without `ip`.
import { EINTR, EINVAL, errno, ErrnoError, libc as lib } from "./libc.ts";

// <bits/socket.h>, <bits/socket_type.h>, <linux/netlink.h>, <asm-generic/socket.h>
export const AF_UNSPEC = 0, AF_UNIX = 1, AF_INET = 2, AF_INET6 = 10, AF_NETLINK = 16;
export const SOCK_DGRAM = 2, SOCK_RAW = 3, SOCK_NONBLOCK = 0o4000, SOCK_CLOEXEC = 0o2000000;
export const NETLINK_ROUTE = 0;
export const SOL_SOCKET = 1, SO_RCVBUF = 8, SO_PASSCRED = 16, SO_PEERCRED = 17, SO_RCVTIMEO = 20, SO_RCVBUFFORCE = 33;
export const SO_PEERPIDFD = 77; // Linux 6.5
export const SCM_CREDENTIALS = 2, MSG_DONTWAIT = 0x40, MSG_NOSIGNAL = 0x4000;
export const SOL_NETLINK = 270, NETLINK_ADD_MEMBERSHIP = 1, NETLINK_EXT_ACK = 11;

/**
 * struct sockaddr_nl (<linux/netlink.h>), 12 bytes:
 *   0 nl_family u16, 2 nl_pad u16, 4 nl_pid u32, 8 nl_groups u32
 */
function sockaddrNl(groups: number): Uint8Array {
  const sa = new Uint8Array(12);
  const dv = new DataView(sa.buffer);
  dv.setUint16(0, AF_NETLINK, true);
  dv.setUint32(8, groups >>> 0, true);
  return sa;
}

/** Opens and binds a NETLINK_ROUTE socket; `groups` is the legacy RTMGRP_* bitmask. */
export function netlinkSocket(opts: { groups?: number; nonblock?: boolean; rcvbuf?: number; timeoutMs?: number } = {}): number {
  const fd = lib.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | (opts.nonblock ? SOCK_NONBLOCK : 0), NETLINK_ROUTE);
  if (fd < 0) throw new ErrnoError(errno(), "socket(AF_NETLINK, NETLINK_ROUTE)");
  try {
    const one = new Int32Array([1]);
    // extended ACKs carry the kernel's own error text ("Invalid source address" etc.); older kernels ignore it
    lib.setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, one, 4);
    if (opts.rcvbuf) {
      const v = new Int32Array([opts.rcvbuf]);
      // FORCE needs CAP_NET_ADMIN (we have it); fall back to the capped variant
      if (lib.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, v, 4) !== 0) lib.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, v, 4);
    }
    if (opts.timeoutMs) {
      // struct timeval (<bits/types/struct_timeval.h>): i64 tv_sec, i64 tv_usec
      const tv = new BigInt64Array([BigInt(Math.floor(opts.timeoutMs / 1000)), BigInt((opts.timeoutMs % 1000) * 1000)]);
      if (lib.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16) !== 0) throw new ErrnoError(errno(), "setsockopt(SO_RCVTIMEO)");
    }
    const sa = sockaddrNl(opts.groups ?? 0);
    if (lib.bind(fd, sa, sa.length) !== 0) throw new ErrnoError(errno(), "bind(AF_NETLINK)");
  } catch (e) {
    lib.close(fd);
    throw e;
  }
  return fd;
}

// <netinet/in.h>
export const IPPROTO_ICMP = 1, IPPROTO_ICMPV6 = 58;

// <linux/if_packet.h>, <linux/if_ether.h>
export const AF_PACKET = 17, ETH_P_IPV6 = 0x86dd;

/**
 * A send-only packet socket (protocol 0: the kernel queues nothing to it). It sends an IPv6 packet we built
 * ourselves, so its source can be `::`, which the kernel's own source selection never picks. CAP_NET_RAW.
 */
export function packetSocket(): number {
  const fd = lib.socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw new ErrnoError(errno(), "socket(AF_PACKET, SOCK_DGRAM)");
  return fd;
}

/**
 * sendto() one link-layer payload on interface `index` to `mac`; SOCK_DGRAM lets the kernel build the
 * Ethernet header. struct sockaddr_ll (<linux/if_packet.h>), 20 bytes: u16 family, u16 protocol BE,
 * i32 ifindex, u16 hatype, u8 pkttype, u8 halen, u8 addr[8].
 */
export function packetSendTo(fd: number, buf: Uint8Array, index: number, protocol: number, mac: Uint8Array, what: string): void {
  const sa = new Uint8Array(20);
  const dv = new DataView(sa.buffer);
  dv.setUint16(0, AF_PACKET, true);
  dv.setUint16(2, protocol);
  dv.setInt32(4, index, true);
  sa[11] = mac.length;
  sa.set(mac.subarray(0, 8), 12);
  const n = Number(lib.sendto(fd, buf, buf.length, 0, sa, sa.length));
  if (n !== buf.length) throw new ErrnoError(n < 0 ? errno() : EINVAL, what);
}

export function sockSend(fd: number, buf: Uint8Array, what: string): void {
  for (;;) {
    const n = Number(lib.send(fd, buf, buf.length, 0));
    if (n === buf.length) return;
    const e = n < 0 ? errno() : EINVAL;
    if (e === EINTR) continue;
    throw new ErrnoError(e, what);
  }
}

/** Blocking recv (bounded by SO_RCVTIMEO); returns the byte count. */
export function sockRecv(fd: number, buf: Uint8Array, what: string): number {
  for (;;) {
    const n = Number(lib.recv(fd, buf, buf.length, 0));
    if (n >= 0) return n;
    const e = errno();
    if (e === EINTR) continue;
    throw new ErrnoError(e, what);
  }
}
