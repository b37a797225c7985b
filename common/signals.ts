// Signal names and numbers (Linux x86_64, <asm/signal.h>). RTMIN is 34 as in glibc (musl says 35;
// nspawn and systemd mean glibc's), so SIGRTMIN+3 is always 37.
export const SIGRTMIN = 34;
export const SIGRTMAX = 64;

const NAMES: Record<string, number> = {
  HUP: 1, INT: 2, QUIT: 3, ILL: 4, TRAP: 5, ABRT: 6, IOT: 6, BUS: 7, FPE: 8, KILL: 9, USR1: 10, SEGV: 11,
  USR2: 12, PIPE: 13, ALRM: 14, TERM: 15, STKFLT: 16, CHLD: 17, CONT: 18, STOP: 19, TSTP: 20, TTIN: 21,
  TTOU: 22, URG: 23, XCPU: 24, XFSZ: 25, VTALRM: 26, PROF: 27, WINCH: 28, IO: 29, POLL: 29, PWR: 30, SYS: 31,
};
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
