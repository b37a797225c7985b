// The env file (/man8env.env) as DESIGN §3.1 defines it: literal values, no quoting, no expansion.
// The original loader eval'd each line, which expanded $… and ran `…`; we deliberately do not.
import { readFileSync, statSync } from "node:fs";
import { ExitError, EXIT } from "../common/log.ts";

export interface EnvFile {
  vars: Map<string, string>;
  /** keys defined more than once (the later value wins) and how many times each was defined, for the log */
  duplicates: Map<string, number>;
}

const KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** only spaces and tabs may come before a key (DESIGN §3.1 step 2); NBSP, VT, FF, U+2028... are errors */
const INDENT = /^[ \t]*/;
/** the bound on the file, far above any real one (1M lines of KEY=1 fit) */
export const MAX_ENV_FILE_BYTES = 16 * 1024 * 1024;

export function parseEnv(text: string, file: string): EnvFile {
  const vars = new Map<string, string>();
  const duplicates = new Map<string, number>();
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  lines.forEach((raw, i) => {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    const trimmed = line.slice(INDENT.exec(line)![0].length);
    if (trimmed === "" || trimmed.startsWith("#")) return;
    const where = `${file}:${i + 1}`;
    const odd = /^\s/u.exec(trimmed);
    if (odd) {
      const cp = `U+${odd[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;
      throw new ExitError(EXIT.badEnv, `${where}: ${cp} before the key: only spaces and tabs may indent a line`);
    }
    const eq = trimmed.indexOf("=");
    if (eq < 0) throw new ExitError(EXIT.badEnv, `${where}: expected KEY=VALUE, found no '=' in ${quote(line)}`);
    const key = trimmed.slice(0, eq);
    if (!KEY.test(key)) throw new ExitError(EXIT.badEnv, `${where}: invalid key ${quote(key)} (keys match [A-Za-z_][A-Za-z0-9_]*)`);
    if (vars.has(key)) duplicates.set(key, (duplicates.get(key) ?? 1) + 1);
    vars.set(key, trimmed.slice(eq + 1));
  });
  return { vars, duplicates };
}

/** Log lines for the duplicates: one per key up to `max` keys, then one line for the rest (never one per line). */
export function duplicateSummary(file: string, duplicates: ReadonlyMap<string, number>, max = 10): string[] {
  const out: string[] = [];
  for (const [k, n] of duplicates) {
    if (out.length === max) {
      out.push(`${file}: ${duplicates.size - max} more keys defined more than once; the last value of each wins`);
      break;
    }
    out.push(`${file}: ${k} defined ${n === 2 ? "twice" : `${n} times`}; the last value wins`);
  }
  return out;
}

export function loadEnvFile(file: string): EnvFile | null {
  let bytes: Buffer;
  try {
    const size = statSync(file).size;
    if (size > MAX_ENV_FILE_BYTES) throw new ExitError(EXIT.badEnv, `${file}: ${size} bytes, more than the ${MAX_ENV_FILE_BYTES} an env file may have`);
    bytes = readFileSync(file);
  } catch (e) {
    if (e instanceof ExitError) throw e;
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new ExitError(EXIT.badEnv, `${file}: cannot read: ${(e as Error).message}`);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ExitError(EXIT.badEnv, `${file}:${badUtf8Line(bytes)}: not valid UTF-8`);
  }
  if (text.includes("\0")) {
    const line = text.slice(0, text.indexOf("\0")).split("\n").length;
    throw new ExitError(EXIT.badEnv, `${file}:${line}: contains a NUL byte`);
  }
  return parseEnv(text, file);
}

function badUtf8Line(bytes: Buffer): number {
  const dec = new TextDecoder("utf-8", { fatal: true });
  let start = 0;
  for (let line = 1; ; line++) {
    const nl = bytes.indexOf(0x0a, start);
    const end = nl < 0 ? bytes.length : nl;
    try {
      dec.decode(bytes.subarray(start, end));
    } catch {
      return line;
    }
    if (nl < 0) return line;
    start = nl + 1;
  }
}

function quote(s: string): string {
  return JSON.stringify(s.length > 60 ? `${s.slice(0, 60)}…` : s);
}

/**
 * The init's own control variables that carry commands (an argv, a health check, probe lists): read by the
 * init, never passed to the app, its health checks or probes. They are unbounded by nature and the app has
 * no use for them: MAN8S_APPLICATION_ARGV alone can be hundreds of KiB, and the kernel refuses any
 * environment string over 128 KiB (E2BIG), so exporting it made a long argv impossible to run. Every other
 * variable is exported, including the small MAN8S_* settings (MAN8S_STOP_SIGNAL...) and those describing the
 * container (MAN8S_CONTAINER_NAME, MAN8S_YGGDRASIL_*, MAN8S_HOST_IFACE).
 */
export const INIT_ONLY_VARS: ReadonlySet<string> = new Set([
  "MAN8S_APPLICATION_ARGV", "MAN8S_APPLICATION_ARGS", "MAN8S_EXEC_INIT", "MAN8S_HEALTHCHECK",
  "MAN8S_WAIT_FOR", "MAN8S_READY", "MAN8S_CHECK_TARGETS", "MAN8S_ENV_FILE",
]);

/** Linux's MAX_ARG_STRLEN: one argv or environment string, its NUL included, may not be longer. */
export const MAX_ARG_STRLEN = 32 * 4096;

/**
 * The environment the app gets: env without the init's control variables. An exported variable too long
 * for the kernel fails here with 65 naming it, instead of an exec error that names nothing.
 */
export function appEnvironment(env: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (INIT_ONLY_VARS.has(k)) continue;
    const bytes = Buffer.byteLength(k) + 1 + Buffer.byteLength(v) + 1;
    if (bytes > MAX_ARG_STRLEN)
      throw new ExitError(EXIT.badEnv, `${k}: ${bytes} bytes; one environment string may not exceed ${MAX_ARG_STRLEN} bytes (the kernel's MAX_ARG_STRLEN)`);
    out[k] = v;
  }
  return out;
}
