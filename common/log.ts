// Logging to stderr with synchronous writes: an init's last words must not sit in a buffer when it exits.
import { writeSync } from "node:fs";

let prefix = "man8s";
export function setLogPrefix(p: string): void {
  prefix = p;
}

export function log(msg: string): void {
  try {
    writeSync(2, `${prefix}: ${msg}\n`);
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
  notExecutable: 126,
  notFound: 127,
} as const;
