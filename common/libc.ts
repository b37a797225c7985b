// The one place where libc is bound through bun:ffi: one symbol table, one dlopen, errno and the one
// error type every FFI wrapper throws. The thin wrappers (libc-net.ts sockets, libc-notify.ts datagrams,
// libc-unix.ts peer credentials, libc-fs.ts dirfd-relative files) call `libc` and keep their own structs.
// Layouts are glibc x86_64 (the bundle always ships glibc, whatever libc the image has); each carries its
// source. Every lazy.ts entry point gets its own copy of this module, hence its own dlopen: that is one
// per role. Cost: ~0.2 ms, +~6 µs per symbol (bun:ffi compiles a trampoline for each).
import { dlopen, ptr, read, type Pointer } from "bun:ffi";

const proc = dlopen("libc.so.6", {
  // processes and signals (the init)
  sigaction: { args: ["i32", "ptr", "ptr"], returns: "i32" },
  sigprocmask: { args: ["i32", "ptr", "ptr"], returns: "i32" },
  prctl: { args: ["i32", "u64", "u64", "u64", "u64"], returns: "i32" },
  waitid: { args: ["i32", "u32", "ptr", "i32"], returns: "i32" },
  waitpid: { args: ["i32", "ptr", "i32"], returns: "i32" },
  kill: { args: ["i32", "i32"], returns: "i32" },
  getppid: { args: [], returns: "i32" },
  execve: { args: ["ptr", "ptr", "ptr"], returns: "i32" },
  pipe2: { args: ["ptr", "i32"], returns: "i32" },
  mmap: { args: ["ptr", "u64", "i32", "i32", "i32", "i64"], returns: "ptr" },
  mprotect: { args: ["ptr", "u64", "i32"], returns: "i32" },
  // raw syscalls (rt_sigaction, openat2, pidfd_send_signal): pointers go in as ptr(buf) numbers
  syscall: { args: ["i64", "i64", "i64", "i64", "i64"], returns: "i64" },
  close: { args: ["i32"], returns: "i32" },
  ioctl: { args: ["i32", "u64", "ptr"], returns: "i32" },
  // sockets
  socket: { args: ["i32", "i32", "i32"], returns: "i32" },
  bind: { args: ["i32", "ptr", "u32"], returns: "i32" },
  send: { args: ["i32", "ptr", "u64", "i32"], returns: "i64" },
  sendto: { args: ["i32", "ptr", "u64", "i32", "ptr", "u32"], returns: "i64" },
  sendmsg: { args: ["i32", "ptr", "i32"], returns: "i64" },
  recv: { args: ["i32", "ptr", "u64", "i32"], returns: "i64" },
  recvmsg: { args: ["i32", "ptr", "i32"], returns: "i64" },
  setsockopt: { args: ["i32", "i32", "i32", "ptr", "u32"], returns: "i32" },
  getsockopt: { args: ["i32", "i32", "i32", "ptr", "ptr"], returns: "i32" },
  // files relative to a directory fd
  openat: { args: ["i32", "ptr", "i32", "u32"], returns: "i32" },
  mkdirat: { args: ["i32", "ptr", "u32"], returns: "i32" },
  symlinkat: { args: ["ptr", "i32", "ptr"], returns: "i32" },
  renameat2: { args: ["i32", "ptr", "i32", "ptr", "u32"], returns: "i32" },
  unlinkat: { args: ["i32", "ptr", "i32"], returns: "i32" },
  readlinkat: { args: ["i32", "ptr", "ptr", "u64"], returns: "i64" },
  // errors
  strerror: { args: ["i32"], returns: "cstring" },
  strerrorname_np: { args: ["i32"], returns: "cstring" },
  __errno_location: { args: [], returns: "ptr" },
}).symbols;

export const libc = proc;

/** errno of the last failed libc call on this thread. */
export function errno(): number {
  return read.i32(proc.__errno_location() as Pointer, 0);
}

export function strerror(e: number): string {
  return String(proc.strerror(e));
}

/** The symbolic name of an errno ("EEXIST"), as Node's `code`; `errno N` when libc has none. */
export function errnoName(e: number): string {
  const name = proc.strerrorname_np(e);
  return name === null ? `errno ${e}` : String(name);
}

/**
 * A failed libc call or kernel request: `errno`, its symbolic `code` (so it reads like Node's own
 * errors), and what was asked. Message: "what: strerror (errno N)[: detail]".
 */
export class ErrnoError extends Error {
  readonly code: string;
  constructor(
    readonly errno: number,
    readonly what: string,
    detail?: string,
  ) {
    super(`${what}: ${strerror(errno)} (errno ${errno})${detail ? `: ${detail}` : ""}`);
    this.code = errnoName(errno);
  }
}

/** Throws ErrnoError(errno(), what) when a libc call returned a negative value; else the value. */
export function check(rc: number | bigint, what: string): number {
  const n = Number(rc);
  if (n < 0) throw new ErrnoError(errno(), what);
  return n;
}

export function closeFd(fd: number): void {
  proc.close(fd);
}

// <asm-generic/errno-base.h>, <asm-generic/errno.h>
export const EPERM = 1, ENOENT = 2, EINTR = 4, EAGAIN = 11, EACCES = 13, EEXIST = 17, EINVAL = 22;
export const ENAMETOOLONG = 36, EPROTONOSUPPORT = 93;
// <fcntl.h>
export const O_NONBLOCK = 0o4000, O_CLOEXEC = 0o2000000;
// <sys/prctl.h>
export const PR_SET_CHILD_SUBREAPER = 36;
// <sys/wait.h>
export const P_ALL = 0, WNOHANG = 1, WEXITED = 4, WNOWAIT = 0x01000000;
// <signal.h>: how for sigprocmask; sa_flags
export const SIG_BLOCK = 0, SIG_UNBLOCK = 1, SIG_SETMASK = 2;
export const SA_SIGINFO = 4, SA_ONSTACK = 0x08000000, SA_RESTART = 0x10000000;
// <sys/mman.h>
export const PROT_READ = 1, PROT_WRITE = 2, PROT_EXEC = 4, MAP_PRIVATE = 2, MAP_ANONYMOUS = 0x20;
// <asm/unistd_64.h>
export const SYS_rt_sigaction = 13;

/**
 * struct sigaction, glibc x86_64 (sysdeps/unix/sysv/linux/bits/sigaction.h), 152 bytes:
 *   0  sa_handler / sa_sigaction (8)
 *   8  sa_mask: sigset_t = 1024 bits (128)
 * 136  sa_flags (int, padded to 8)
 * 144  sa_restorer (8)
 */
export function sigactionStruct(handler: Pointer | bigint, flags: number): BigUint64Array {
  const sa = new BigUint64Array(19);
  sa[0] = BigInt(handler);
  sa[17] = BigInt(flags);
  return sa;
}

/** glibc sigset_t: 1024 bits; bit (signo-1) set means member. */
export function sigset(all: boolean): BigUint64Array {
  const s = new BigUint64Array(16);
  if (all) s.fill(0xffffffffffffffffn);
  return s;
}

/**
 * siginfo_t for SIGCHLD as filled by waitid (include/uapi/asm-generic/siginfo.h), 128 bytes:
 *   0 si_signo, 4 si_errno, 8 si_code, 16 si_pid, 20 si_uid, 24 si_status
 * si_code: CLD_EXITED=1, CLD_KILLED=2, CLD_DUMPED=3.
 */
export const SIGINFO_SIZE = 128;
export const siginfo = {
  pid: (dv: DataView) => dv.getInt32(16, true),
  code: (dv: DataView) => dv.getInt32(8, true),
  status: (dv: DataView) => dv.getInt32(24, true),
};

/**
 * execve(2) with a NULL-terminated char*[] for argv and envp (kept alive in `keep` until the call).
 * Returns only on failure, with errno.
 */
export function execve(path: string, argv: string[], env: Record<string, string>): number {
  const keep: Buffer[] = [];
  const cstr = (s: string) => {
    const b = Buffer.from(`${s}\0`);
    keep.push(b);
    return BigInt(ptr(b));
  };
  const array = (items: string[]) => {
    const a = new BigUint64Array(items.length + 1);
    items.forEach((s, i) => (a[i] = cstr(s)));
    return a;
  };
  const argvArr = array(argv);
  const envArr = array(Object.entries(env).map(([k, v]) => `${k}=${v}`));
  const pathBuf = Buffer.from(`${path}\0`);
  const rc = proc.execve(pathBuf, argvArr, envArr);
  keep.length = 0;
  return rc === -1 ? errno() : 0;
}

export { ptr };
