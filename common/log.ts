// Logging to stderr with synchronous writes: an init's last words must not sit in a buffer when it exits.
// Under systemd with stderr on the journal, each line carries its priority as an sd-daemon "<N>" prefix.
import { writeSync } from "node:fs";
import { PRIORITY, type Priority } from "./sd-daemon.ts";

let prefix = "man8s";
let journal = false;
export function setLogPrefix(p: string): void {
  prefix = p;
}

/** Prefix every line with its priority (call when stderrIsJournal()). */
export function setJournalPriorities(on: boolean): void {
  journal = on;
}

export function log(msg: string, priority: Priority = "info"): void {
  try {
    const text = `${prefix}: ${msg}`;
    // one prefix per line: the journal splits a multi-line message into entries
    writeSync(2, journal ? `${text.split("\n").map((l) => `<${PRIORITY[priority]}>${l}`).join("\n")}\n` : `${text}\n`);
  } catch {
    // stderr closed: nothing sensible left to do
  }
}

/** A failure with an exit code of DESIGN §3.6; main() turns it into a message and that code. */
export class ExitError extends Error {
  /** a brand that survives minification and separate bundling */
  readonly exitError = true;
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** ExitError from any copy of this module (lazy modules are bundled separately: see lazy.ts). */
export function isExitError(e: unknown): e is ExitError {
  return e instanceof Error && (e as Partial<ExitError>).exitError === true && typeof (e as Partial<ExitError>).code === "number";
}

export const EXIT = {
  usage: 64,
  badEnv: 65,
  badUser: 67,
  network: 69,
  internal: 70,
  depTimeout: 75,
  /** killed as unhealthy (MAN8S_HEALTH_ON_FAILURE=kill) */
  unhealthy: 79,
  notExecutable: 126,
  notFound: 127,
} as const;
