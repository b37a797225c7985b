// The env file (/man8env.env) as DESIGN §3.1 defines it: literal values, no quoting, no expansion.
// The original loader eval'd each line, which expanded $… and ran `…`; we deliberately do not.
import { readFileSync } from "node:fs";
import { ExitError, EXIT } from "../common/log.ts";

export interface EnvFile {
  vars: Map<string, string>;
  /** keys defined more than once (the later value wins), for the log */
  duplicates: string[];
}

const KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function parseEnv(text: string, file: string): EnvFile {
  const vars = new Map<string, string>();
  const duplicates: string[] = [];
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  lines.forEach((raw, i) => {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    const trimmed = line.trimStart();
    if (trimmed === "" || trimmed.trimEnd() === "" || trimmed.startsWith("#")) return;
    const eq = trimmed.indexOf("=");
    const where = `${file}:${i + 1}`;
    if (eq < 0) throw new ExitError(EXIT.badEnv, `${where}: expected KEY=VALUE, found no '=' in ${quote(line)}`);
    const key = trimmed.slice(0, eq);
    if (!KEY.test(key)) throw new ExitError(EXIT.badEnv, `${where}: invalid key ${quote(key)} (keys match [A-Za-z_][A-Za-z0-9_]*)`);
    if (vars.has(key)) duplicates.push(key);
    vars.set(key, trimmed.slice(eq + 1));
  });
  return { vars, duplicates };
}

export function loadEnvFile(file: string): EnvFile | null {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (e) {
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
