// Unix-socket bindings the host agent needs and Bun does not expose: the peer's credentials of an
// accepted AF_UNIX connection (SO_PEERCRED). Bun gives the socket's fd (socket.fd); the kernel does the rest.
import { dlopen, ptr } from "bun:ffi";

const lib = dlopen("libc.so.6", {
  getsockopt: { args: ["i32", "i32", "i32", "ptr", "ptr"], returns: "i32" },
}).symbols;

// <asm-generic/socket.h> (x86_64 uses the generic values)
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/**
 * struct ucred (<bits/socket.h>, glibc; include/linux/socket.h): 12 bytes
 *   0 pid_t pid (i32), 4 uid_t uid (u32), 8 gid_t gid (u32)
 * The kernel fills it with the peer's credentials at connect() time, translated into our namespaces
 * (a process in a user namespace shows its host uid; a pid from another pid namespace shows its host pid).
 */
export function peerCred(fd: number): PeerCred | null {
  if (!Number.isInteger(fd) || fd < 0) return null;
  const buf = new Uint8Array(12);
  const len = new Uint32Array([12]);
  if (lib.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, ptr(buf), ptr(len)) !== 0) return null;
  const dv = new DataView(buf.buffer);
  return { pid: dv.getInt32(0, true), uid: dv.getUint32(4, true), gid: dv.getUint32(8, true) };
}
