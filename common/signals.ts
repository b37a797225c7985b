// Signal names and numbers (Linux x86_64, <asm/signal.h>). RTMIN is 34 as in glibc (musl says 35;
// nspawn and systemd mean glibc's), so SIGRTMIN+3 is always 37.
export const SIGHUP = 1, SIGINT = 2, SIGILL = 4, SIGTRAP = 5, SIGABRT = 6, SIGBUS = 7, SIGFPE = 8, SIGKILL = 9;
export const SIGUSR1 = 10, SIGSEGV = 11, SIGPIPE = 13, SIGTERM = 15, SIGCHLD = 17, SIGSTOP = 19, SIGPWR = 30, SIGSYS = 31;

const NAMES: Record<string, number> = {
  HUP: SIGHUP, INT: SIGINT, QUIT: 3, ILL: SIGILL, TRAP: SIGTRAP, ABRT: SIGABRT, IOT: SIGABRT, BUS: SIGBUS, FPE: SIGFPE,
  KILL: SIGKILL, USR1: SIGUSR1, SEGV: SIGSEGV, USR2: 12, PIPE: SIGPIPE, ALRM: 14, TERM: SIGTERM, STKFLT: 16,
  CHLD: SIGCHLD, CONT: 18, STOP: SIGSTOP, TSTP: 20, TTIN: 21, TTOU: 22, URG: 23, XCPU: 24, XFSZ: 25, VTALRM: 26,
  PROF: 27, WINCH: 28, IO: 29, POLL: 29, PWR: SIGPWR, SYS: SIGSYS,
};
/** glibc's own thread signals (nptl): thread cancellation and setxid; they have no name in <signal.h> */
export const SIGCANCEL = 32, SIGSETXID = 33;
export const SIGRTMIN = 34;
export const SIGRTMAX = 64;
/** What systemd means by SIGRTMIN+3..+6 (systemd(1)); nspawn's --kill-signal default is SIGRTMIN+3. */
export const SIG_HALT = SIGRTMIN + 3, SIG_POWEROFF = SIGRTMIN + 4, SIG_REBOOT = SIGRTMIN + 5, SIG_KEXEC = SIGRTMIN + 6;

const BY_NUMBER = new Map<number, string>();
for (const [n, v] of Object.entries(NAMES)) if (!BY_NUMBER.has(v)) BY_NUMBER.set(v, n);

/** Parse `SIGQUIT`, `QUIT`, `3`, `SIGRTMIN+3`, `RTMIN+3`, `SIGRTMAX-2`. Returns null when invalid. */
export function parseSignal(text: string): number | null {
  const s = text.trim().toUpperCase().replace(/^SIG/, "");
  if (/^\d+$/.test(s)) {
    const n = Number(s);
    return n >= 1 && n <= SIGRTMAX ? n : null;
  }
  const rt = /^RT(MIN|MAX)(?:([+-])(\d+))?$/.exec(s);
  if (rt) {
    const base = rt[1] === "MIN" ? SIGRTMIN : SIGRTMAX;
    const off = rt[3] ? Number(rt[3]) * (rt[2] === "-" ? -1 : 1) : 0;
    const n = base + off;
    return n >= SIGRTMIN && n <= SIGRTMAX ? n : null;
  }
  return NAMES[s] ?? null;
}

/** `SIGTERM`, `SIGRTMIN+3`. */
export function signalName(n: number): string {
  if (n >= SIGRTMIN && n <= SIGRTMAX) return n === SIGRTMIN ? "SIGRTMIN" : `SIGRTMIN+${n - SIGRTMIN}`;
  const name = BY_NUMBER.get(n);
  return name ? `SIG${name}` : String(n); // 32 and 33 have no name (glibc keeps them for threads)
}
