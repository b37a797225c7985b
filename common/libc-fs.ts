// Directory-fd-relative file operations Node does not expose (openat2, mkdirat, symlinkat, renameat2,
// unlinkat, readlinkat), for writing into a tree that someone else may be changing at the same time (a
// running container's rootfs): every name is resolved below a directory fd we hold, never through a
// symlink, so swapping a directory for a symlink cannot send a write elsewhere. Errors throw ErrnoError
// with the errno and its symbolic code (so ioError() reports them like Node's). Reference: docs/validation.md.
import { ptr } from "bun:ffi";
import { check, EAGAIN, EINVAL, ENAMETOOLONG, errno, ErrnoError, libc as lib, O_CLOEXEC } from "./libc.ts";

// <asm-generic/fcntl.h> (x86_64), <linux/openat2.h>, <linux/fcntl.h>, <stdio.h>, <asm/unistd_64.h>
export const O_RDONLY = 0, O_WRONLY = 1, O_CREAT = 0o100, O_EXCL = 0o200, O_DIRECTORY = 0o200000, O_NOFOLLOW = 0o400000;
export const O_PATH = 0o10000000;
export const AT_FDCWD = -100, AT_REMOVEDIR = 0x200;
export const RESOLVE_NO_MAGICLINKS = 0x02, RESOLVE_NO_SYMLINKS = 0x04, RESOLVE_BENEATH = 0x08;
export const RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2;
const SYS_openat2 = 437;

const cstr = (s: string) => {
  if (s.includes("\0")) throw new ErrnoError(EINVAL, `name ${JSON.stringify(s.slice(0, 80))} contains NUL`);
  return Buffer.from(`${s}\0`);
};

/**
 * openat2(2) with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS: `name` is resolved below
 * `dirfd` and no component, the last included, may be a symlink. EAGAIN (a concurrent rename seen by the
 * kernel's own check) is retried a bounded number of times.
 */
export function openBeneath(dirfd: number, name: string, flags: number, mode = 0): number {
  const how = new BigUint64Array([BigInt(flags | O_CLOEXEC), BigInt(mode), BigInt(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)]);
  const path = cstr(name);
  for (let i = 0; ; i++) {
    const rc = Number(lib.syscall(SYS_openat2, dirfd, ptr(path), ptr(how), 24));
    if (rc >= 0) return rc;
    const e = errno();
    if (e !== EAGAIN || i >= 16) throw new ErrnoError(e, `openat2 ${name}`);
  }
}

/** The directory at an absolute path, which must not itself be a symlink. */
export function openDirPath(path: string): number {
  return check(lib.openat(AT_FDCWD, cstr(path), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0), `open ${path}`);
}

export function mkdirAt(dirfd: number, name: string, mode: number): void {
  check(lib.mkdirat(dirfd, cstr(name), mode), `mkdirat ${name}`);
}

export function symlinkAt(target: string, dirfd: number, name: string): void {
  check(lib.symlinkat(cstr(target), dirfd, cstr(name)), `symlinkat ${name}`);
}

export function renameAt(fromDir: number, from: string, toDir: number, to: string, flags = 0): void {
  check(lib.renameat2(fromDir, cstr(from), toDir, cstr(to), flags), `renameat2 ${from} -> ${to}`);
}

export function unlinkAt(dirfd: number, name: string, flags = 0): void {
  check(lib.unlinkat(dirfd, cstr(name), flags), `unlinkat ${name}`);
}

export function readlinkAt(dirfd: number, name: string): string {
  const buf = Buffer.alloc(4096);
  const n = check(lib.readlinkat(dirfd, cstr(name), ptr(buf), buf.length), `readlinkat ${name}`);
  if (n >= buf.length) throw new ErrnoError(ENAMETOOLONG, `readlinkat ${name}`);
  return buf.subarray(0, n).toString("utf8");
}

/** The directory fd's own path in /proc, for readdir(3) on it (the magic link names the open directory). */
export const fdPath = (fd: number) => `/proc/self/fd/${fd}`;
