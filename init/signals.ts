// Signal intake for the init. Installed before anything else (main.ts calls installSignalIntake()
// first), so a signal at any moment of start-up is queued, never fatal.
//
// Bun's process.on cannot catch real-time signals and signalfd does not work (Bun's event loop waits
// with an empty signal mask; docs/notes.md §2). Earlier versions used libc's eventfd_write as the
// kernel handler, which needed an eventfd at fd number == signo: inherited fds, eventfd() returning
// that very number and Bun's stream copying fds to the lowest free number all broke it (issue 10).
// Now every signal has the same tiny native handler, 97 bytes of x86_64 code placed in an executable
// page: it writes the signal number as one byte to a non-blocking self-pipe, whose read end JS drains
// through the event loop. No fd number matters, a burst of one signal keeps its count (one byte each,
// up to the pipe's 64 KiB), and for fault signals it tells a kill from a real fault by si_code.
import { ptr, toArrayBuffer, type Pointer } from "bun:ffi";
import {
  libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  O_CLOEXEC,
  O_NONBLOCK,
  PROT_EXEC,
  PROT_READ,
  PROT_WRITE,
  SA_ONSTACK,
  SA_RESTART,
  SA_SIGINFO,
  SIG_SETMASK,
  sigactionStruct,
  sigset,
  SYS_rt_sigaction,
} from "../common/libc.ts";
import {
  SIGABRT, SIGBUS, SIGCANCEL, SIGFPE, SIGILL, SIGKILL, SIGPIPE, SIGPWR, SIGRTMAX, SIGRTMIN, SIGSEGV, SIGSETXID, SIGSTOP,
  SIGSYS, SIGTRAP, SIGUSR1, signalName,
} from "../common/signals.ts";

/**
 * The handler page. Entry `user` (offset 0) for every signal; entry `fault` (0x18) for the signals the
 * CPU raises on a real fault. Source (GNU as, Intel syntax); the kernel calls
 * handler(rdi = signo, rsi = siginfo*, rdx = ucontext*) and restores every register on return:
 *
 *   user:  push rdi                        ; the signal number, as the byte to write
 *          mov  edi, [rip + fdslot]        ; the pipe's write end (0x80)
 *          mov  rsi, rsp
 *          mov  edx, 1
 *          mov  eax, 1                     ; write(fd, &signo, 1): raw syscall, errno untouched
 *          syscall
 *          pop  rdi
 *          ret
 *   fault: cmp  dword [rsi + 8], 0         ; si_code <= 0: sent by a process (SI_USER, SI_QUEUE, SI_TKILL)
 *          jle  user
 *          lea  rax, [rip + prev]          ; a real fault: the handler that was there before (0x88)
 *          mov  rax, [rax + rdi*8]
 *          cmp  rax, 1
 *          jbe  dfl                        ; SIG_DFL / SIG_IGN: nothing to chain to
 *          jmp  rax                        ; the runtime's crash handler, same arguments, same return
 *   dfl:   sub  rsp, 32                    ; struct kernel_sigaction {SIG_DFL, 0, 0, 0}
 *          xor  eax, eax
 *          mov  [rsp], rax ; [rsp+8] ; [rsp+16] ; [rsp+24]
 *          mov  rsi, rsp
 *          xor  edx, edx
 *          mov  r10d, 8
 *          mov  eax, 13                    ; rt_sigaction(signo, &dfl, NULL, 8)
 *          syscall
 *          add  rsp, 32
 *          ret                             ; the faulting instruction runs again and the default kills
 */
const CODE =
  "578b3d790000004889e6ba01000000b8010000000f055fc3837e08007ee2488d0563000000488b04f84883f8017602ffe0" +
  "4883ec2031c0488904244889442408488944241048894424184889e631d241ba08000000b80d0000000f054883c420c3";
const ENTRY_USER = 0x00, ENTRY_FAULT = 0x18, FD_SLOT = 0x80, PREV_TABLE = 0x88, PAGE = 4096;

/** Raised by the CPU on a real fault (and SIGSYS by seccomp); sent by kill they are forwarded like any other. */
export const FAULT_SIGNALS = new Set([SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS]);

/**
 * Signals 1–64 that keep their disposition, and why (docs/signals.md has the table):
 *   9 KILL, 19 STOP  cannot be caught
 *   13 PIPE          stays ignored: our own write to a closed pipe raises it (Bun ignores it too)
 *   30 PWR           the JS engine suspends its threads for GC with it; a PWR sent by kill is harmless
 *   33               glibc's SIGSETXID; its handler ignores what another process sends
 * 32 (glibc's SIGCANCEL) is taken by our handler through the raw syscall (glibc's sigaction refuses it):
 * its default would kill the init.
 */
export const NOT_HANDLED = new Map<number, string>([
  [SIGKILL, "uncatchable"], [SIGSTOP, "uncatchable"], [SIGPIPE, "ignored (our own writes raise it)"],
  [SIGPWR, "the JS engine's thread-suspend signal"], [SIGSETXID, "glibc's SIGSETXID"],
]);
const RAW_ONLY = SIGCANCEL;

type Listener = (signo: number) => void;
let listener: Listener | null = null;
const early: number[] = [];

function deliver(signo: number): void {
  if (listener) listener(signo);
  else early.push(signo);
}

/** Route signals to `fn`; signals that arrived before are replayed first, in arrival order. */
export function onSignal(fn: Listener): void {
  listener = fn;
  for (const s of early.splice(0)) fn(s);
}

const handled: number[] = [];

export class SignalIntakeError extends Error {}

/** Install the handler on every catchable signal and verify each; throws SignalIntakeError naming what failed. */
export function installSignalIntake(): void {
  const fds = new Int32Array(2);
  if (libc.pipe2(fds, O_NONBLOCK | O_CLOEXEC) !== 0) throw new SignalIntakeError("signal intake: pipe2 failed");
  const [readFd, writeFd] = [fds[0]!, fds[1]!];

  const page = libc.mmap(null, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (!page || Number(page) === -1) throw new SignalIntakeError("signal intake: mmap failed");
  const bytes = new Uint8Array(toArrayBuffer(page as Pointer, 0, PAGE));
  bytes.set(Buffer.from(CODE, "hex"), 0);
  const data = new DataView(bytes.buffer, bytes.byteOffset, PAGE);
  data.setInt32(FD_SLOT, writeFd, true);
  // what each fault signal had before us (Bun's crash handler), for real faults to chain to
  const old = new BigUint64Array(19);
  for (const s of FAULT_SIGNALS) {
    if (libc.sigaction(s, null, old) !== 0) throw new SignalIntakeError(`signal intake: cannot read the handler of ${signalName(s)}`);
    data.setBigUint64(PREV_TABLE + 8 * s, old[0]!, true);
  }
  if (libc.mprotect(page, PAGE, PROT_READ | PROT_EXEC) !== 0) throw new SignalIntakeError("signal intake: mprotect failed");
  const base = BigInt(page as number);

  const failed: string[] = [];
  const cur = new BigUint64Array(19);
  for (let s = 1; s <= SIGRTMAX; s++) {
    if (NOT_HANDLED.has(s) || s === RAW_ONLY) continue;
    const fault = FAULT_SIGNALS.has(s);
    const entry = base + BigInt(fault ? ENTRY_FAULT : ENTRY_USER);
    // SA_ONSTACK: a stack overflow fault must reach the runtime's handler on its alternate stack
    const flags = SA_RESTART | SA_SIGINFO | (fault ? SA_ONSTACK : 0);
    cur.fill(0n);
    if (libc.sigaction(s, sigactionStruct(entry, flags), null) !== 0 || libc.sigaction(s, null, cur) !== 0 || cur[0] !== entry) {
      failed.push(signalName(s));
      continue;
    }
    handled.push(s);
  }
  if (installRaw(RAW_ONLY, base + BigInt(ENTRY_USER))) handled.push(RAW_ONLY);
  else failed.push(String(RAW_ONLY));
  if (failed.length) throw new SignalIntakeError(`signal intake: no handler could be installed for ${failed.join(", ")}`);

  void drain(readFd);
  // The launcher (init/launcher.c) blocked signals across exec so none is lost before this point;
  // everything has a handler now, so let them in. Children spawned later inherit this empty mask.
  libc.sigprocmask(SIG_SETMASK, sigset(false), null);
}

/**
 * glibc's sigaction refuses its internal signals; the kernel does not. The kernel struct (handler,
 * flags, restorer, mask) is copied from SIGUSR1, which glibc set up with its own restorer.
 */
function installRaw(signo: number, entry: bigint): boolean {
  const k = new BigUint64Array(4);
  if (Number(libc.syscall(SYS_rt_sigaction, SIGUSR1, 0, ptr(k), 8)) !== 0) return false;
  k[0] = entry;
  const back = new BigUint64Array(4);
  return Number(libc.syscall(SYS_rt_sigaction, signo, ptr(k), 0, 8)) === 0 &&
    Number(libc.syscall(SYS_rt_sigaction, signo, 0, ptr(back), 8)) === 0 && back[0] === entry;
}

async function drain(fd: number): Promise<void> {
  for await (const chunk of Bun.file(fd).stream()) for (const s of chunk) deliver(s);
}

/** Signals whose handler was installed and verified. */
export function signalsHandled(): readonly number[] {
  return handled;
}

/** Real-time signals among them (all 31 unless installation failed, which is fatal). */
export function rtSignalsInstalled(): readonly number[] {
  return handled.filter((s) => s >= SIGRTMIN);
}
