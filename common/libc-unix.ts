// Unix-socket bindings the host agent needs and Bun does not expose: the peer's credentials of an
// accepted AF_UNIX connection (SO_PEERCRED), a pidfd for the peer (SO_PEERPIDFD) so a check cannot be
// fooled by pid reuse, and the owner of a process's user namespace (NS_GET_OWNER_UID).
import { ptr } from "bun:ffi";
import { closeSync, constants, openSync } from "node:fs";
import { libc as lib } from "./libc.ts";
import { SO_PEERCRED, SO_PEERPIDFD, SOL_SOCKET } from "./libc-net.ts";

// <linux/nsfs.h>: _IO(0xb7, 0x4)
const NS_GET_OWNER_UID = 0xb704;
// <asm/unistd_64.h>
const SYS_pidfd_send_signal = 424;

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

/** A pidfd for the process that connected (the caller closes it), or null where the kernel lacks it. */
export function peerPidfd(fd: number): number | null {
  if (!Number.isInteger(fd) || fd < 0) return null;
  const v = new Int32Array(1);
  const len = new Uint32Array([4]);
  if (lib.getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, ptr(v), ptr(len)) !== 0) return null;
  return v[0]!;
}

/** Is the process behind this pidfd still running (so its pid still names it)? */
export function pidfdAlive(pidfd: number): boolean {
  return lib.syscall(SYS_pidfd_send_signal, pidfd, 0, 0, 0) === 0n;
}

/** The uid (in our namespace) that created the user namespace of `pid`, or null. */
export function userNsOwner(pid: number): number | null {
  let fd = -1;
  try {
    fd = openSync(`/proc/${pid}/ns/user`, constants.O_RDONLY);
    const uid = new Uint32Array(1);
    return lib.ioctl(fd, NS_GET_OWNER_UID, ptr(uid)) === 0 ? uid[0]! : null;
  } catch {
    return null;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}
