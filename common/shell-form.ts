// Shell form: an argv that hands a script to a shell's -c (Docker's shell-form CMD and ENTRYPOINT,
// `sh -ec '...'`, `bash -o pipefail -c '...'`, Config.Shell + script). The shell stays in front of the
// real work and does not forward signals, so the init signals the app's whole process group
// (init/app.ts) and the agent classifies the image as shell-form (hostagent/classify.ts): one rule for both.
import { basename } from "node:path";

/** Names of POSIX-like shells (also how classify.ts recognises a shell script's #! line). */
export const SHELLS: ReadonlySet<string> = new Set(["sh", "bash", "ash", "dash", "zsh", "ksh", "mksh", "busybox"]);

// options of sh/bash that take the next word as their value
const WITH_VALUE = new Set(["-o", "+o", "-O", "+O"]);

export interface ShellForm {
  /** where the script is in argv */
  index: number;
  script: string;
}

/**
 * SHELL [OPTIONS] -c SCRIPT [ARGS] (the -c may be bundled: -ec, -xc; busybox takes its applet first), or
 * argv = configShell ++ [SCRIPT, ...] when the image sets Config.Shell. Null when argv is not shell form.
 */
export function shellForm(argv: readonly string[], configShell?: readonly string[]): ShellForm | null {
  if (configShell?.length && argv.length > configShell.length && configShell.every((w, i) => argv[i] === w)) {
    return { index: configShell.length, script: argv[configShell.length]! };
  }
  const name = basename(argv[0] ?? "");
  if (!SHELLS.has(name)) return null;
  let i = 1;
  if (name === "busybox") {
    if (!SHELLS.has(argv[1] ?? "") || argv[1] === "busybox") return null;
    i = 2;
  }
  let dashC = false;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      i++;
      break;
    }
    if (WITH_VALUE.has(a)) {
      i++;
      continue;
    }
    if (!/^[-+][a-zA-Z-]/.test(a)) break; // the first operand
    if (/^-[a-zA-Z]*c[a-zA-Z]*$/.test(a)) dashC = true;
  }
  return dashC && i < argv.length ? { index: i, script: argv[i]! } : null;
}

export function isShellForm(argv: readonly string[], configShell?: readonly string[]): boolean {
  return shellForm(argv, configShell) !== null;
}
