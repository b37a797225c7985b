// Unix-socket bindings the host agent needs and Bun does not expose: the peer's credentials of an
// accepted AF_UNIX connection (SO_PEERCRED), a pidfd for the peer (SO_PEERPIDFD) so a check cannot be
// fooled by pid reuse, and the owner of a process's user namespace (NS_GET_OWNER_UID).
import { ptr } from "bun:ffi";
import { closeSync, constants, openSync } from "node:fs";
import { libc as lib } from "./libc.ts";
import { type Creds, readUcred, SO_PEERCRED, SO_PEERPIDFD, SOL_SOCKET, UCRED_LEN } from "./libc-net.ts";

// <linux/nsfs.h>: _IO(0xb7, 0x4)
const NS_GET_OWNER_UID = 0xb704;
// <asm/unistd_64.h>
const SYS_pidfd_send_signal = 424;

/**
 * SO_PEERCRED: the kernel fills a struct ucred with the peer's credentials at connect() time, translated into our namespaces
 * (a process in a user namespace shows its host uid; a pid from another pid namespace shows its host pid).
 */
export function peerCred(fd: number): Creds | null {
  if (!Number.isInteger(fd) || fd < 0) return null;
  const buf = new Uint8Array(UCRED_LEN);
  const len = new Uint32Array([UCRED_LEN]);
  if (lib.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, ptr(buf), ptr(len)) !== 0) return null;
  return readUcred(new DataView(buf.buffer), 0);
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
