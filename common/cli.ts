// How every man8s command reads its arguments and reports bad usage: node:util parseArgs (strict), and one
// usage-error format on stderr, exit 64 (EX_USAGE, sysexits.h):
//   man8s CMD: PROBLEM
//   run 'man8s CMD --help' for usage
// A usage error says what is wrong in one line and where the help is; it does not repeat the help.
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { EXIT } from "./log.ts";
import { PRIORITY } from "./sd-daemon.ts";

/** Bad usage: the message is the PROBLEM of the format above. */
export class UsageError extends Error {
  /** a brand that survives minification and the separate bundles of lazy.ts (each has its own copy of this class) */
  readonly usageError = true;
}

export function isUsageError(e: unknown): e is UsageError {
  return e instanceof Error && (e as Partial<UsageError>).usageError === true;
}

/** parseArgs' messages in the one voice of our usage errors (its own are long and capitalised). */
function problemOf(e: Error & { code?: string }): string {
  const quoted = /'([^']*)'/.exec(e.message)?.[1] ?? "";
  switch (e.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown option '${quoted}'`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `unexpected argument '${quoted}'`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE": {
      const flag = quoted.split(" ")[0]!;
      if (e.message.includes("argument missing")) return `${flag} needs a value`;
      if (e.message.includes("ambiguous")) return `${flag} needs a value (one starting with '-' is given as ${flag}=-VALUE)`;
      if (e.message.includes("does not take an argument")) return `${flag} takes no value`;
      return e.message.split("\n")[0]!;
    }
    default:
      return e.message.split("\n")[0]!;
  }
}

const HELP_OPTION = { help: { type: "boolean", short: "h" } } as const;

/**
 * parseArgs, strict, positionals allowed (commands check their own count), `--help`/`-h` always known.
 * Everything after `--` is positional. A parse failure throws a UsageError.
 */
export function parseCli<const O extends ParseArgsOptionsConfig>(args: string[], options: O) {
  const config = { args, options: { ...HELP_OPTION, ...options }, allowPositionals: true, strict: true } as const;
  try {
    return parseArgs(config);
  } catch (e) {
    throw new UsageError(problemOf(e as Error));
  }
}

/** The usage-error text for command CMD ("agent", "netctl up"; "" for man8s itself). */
export function usageText(cmd: string, problem: string): string {
  const name = cmd ? `man8s ${cmd}` : "man8s";
  return `${name}: ${problem}\nrun '${name} --help' for usage\n`;
}

/** Writes the usage error to stderr (each line at priority err when stderr is the journal); returns 64. */
export function usageExit(cmd: string, problem: string, journal = false): number {
  const text = usageText(cmd, problem);
  process.stderr.write(journal ? text.replace(/^(?=.)/gm, `<${PRIORITY.err}>`) : text);
  return EXIT.usage;
}
