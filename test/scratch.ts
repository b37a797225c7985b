// The one place test scratch lives: /tmp/m8t-PID/ for each test process, one private (0700) directory per
// use inside it (scratchDir). test/preload.ts removes it after the last test file (bun test gives no exit
// hook); the first use also removes the roots of test processes that are gone (killed runs).
// Labs (network labs, the real-app lab, the systemd host) take a fixed per-process directory from labDir
// instead: they remove it themselves, keep it when asked (M8N_KEEP, M8R_KEEP, M8S_KEEP) for inspection,
// and the systemd host has an overlay mounted in it; the preload's sweep must not touch those.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";

const BASE = "/tmp";
export const SCRATCH = `${BASE}/m8t-${process.pid}`;

let made = false;
function root(): string {
  if (!made) {
    for (const n of readdirSync(BASE)) {
      const m = /^m8t-(\d+)$/.exec(n);
      if (m && Number(m[1]) !== process.pid && !existsSync(`/proc/${m[1]}`)) rmSync(`${BASE}/${n}`, { recursive: true, force: true });
    }
    mkdirSync(SCRATCH, { recursive: true });
    chmodSync(SCRATCH, 0o755); // traversable by the unprivileged users some tests run as
    made = true;
  }
  return SCRATCH;
}

/** A new directory SCRATCH/TAG-XXXXXX (mode 0700) for one test, fixture or helper. */
export function scratchDir(tag: string): string {
  return mkdtempSync(`${root()}/${tag}-`);
}

/** A lab's own directory, /tmp/NAME-PID (not created; the lab creates, removes or keeps it). */
export function labDir(name: string): string {
  return `${BASE}/${name}-${process.pid}`;
}

/** After the last test of this process (preload): everything under SCRATCH. */
export function removeScratch(): void {
  rmSync(SCRATCH, { recursive: true, force: true });
  made = false;
}
