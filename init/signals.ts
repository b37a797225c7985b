// Signal intake for the init. Installed before anything else (main.ts calls installSignalIntake()
// first), so a signal at any moment of start-up is queued, never fatal.
//
// Standard signals use process.on. Bun cannot catch real-time signals that way, and signalfd does not
// work because Bun's event loop waits with an empty signal mask (notes/bun-lab.md §2). So for every
// RT signal we set the kernel handler to libc's eventfd_write: the kernel calls
// handler(signo, siginfo*, ctx), which becomes eventfd_write(fd = signo, value) — one write(2) to an
// eventfd we placed at fd number == signo — and JS reads that eventfd through the event loop.
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  F_GETFD,
  libc,
  O_CLOEXEC,
  SA_RESTART,
  SA_SIGINFO,
  SIG_SETMASK,
  sigactionStruct,
  sigset,
} from "../common/libc.ts";
import { parseSignal, SIGRTMAX, SIGRTMIN } from "../common/signals.ts";

/**
 * Standard signals the init catches. Not here: KILL/STOP (uncatchable), ILL/TRAP/ABRT/BUS/FPE/SEGV
 * (owned by the runtime's crash handler), PWR (the JS engine suspends threads with it), PIPE (our own
 * write to a closed pipe raises it; forwarding would kill the app for our mistake), STKFLT (Bun cannot
 * catch it and fd 16 is not free for the eventfd route).
 */
export const STANDARD_SIGNALS = [
  "SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGTERM", "SIGCHLD", "SIGCONT",
  "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH",
  "SIGIO", "SIGSYS",
] as const;

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

const installed: number[] = [];

export function installSignalIntake(): void {
  for (const name of STANDARD_SIGNALS) {
    const n = parseSignal(name)!;
    process.on(name, () => deliver(n));
  }
  const handler = libc.dlsym(null, Buffer.from("eventfd_write\0"));
  if (!handler) throw new Error("dlsym(eventfd_write) failed");
  for (let signo = SIGRTMIN; signo <= SIGRTMAX; signo++) {
    if (libc.fcntl(signo, F_GETFD, 0) !== -1) continue; // fd taken: this RT signal keeps its default
    const e = libc.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e < 0) continue;
    const ok = libc.dup3(e, signo, O_CLOEXEC) === signo;
    libc.close(e);
    if (!ok || libc.sigaction(signo, sigactionStruct(handler, SA_RESTART | SA_SIGINFO), null) !== 0) continue;
    installed.push(signo);
    watchEventfd(signo);
  }
  // The launcher (init/launcher.c) blocked signals across exec so none is lost before this point;
  // everything has a handler now, so let them in. Children spawned later inherit this empty mask.
  libc.sigprocmask(SIG_SETMASK, sigset(false), null);
}

/** RT signals that have a handler (the rest keep the kernel default). */
export function rtSignalsInstalled(): readonly number[] {
  return installed;
}

function watchEventfd(signo: number): void {
  void (async () => {
    // One wake-up can stand for several queued signals of this number: the eventfd counter sums the
    // siginfo pointers the kernel passed, so the count is lost. Like standard signals, a burst of the
    // same RT signal may coalesce; distinct signals never do.
    for await (const _chunk of Bun.file(signo).stream()) deliver(signo);
  })();
}
