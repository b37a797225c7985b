// Typed access to a request's args: every accessor throws E_BAD_ARGS naming the field, so commands
// never see a value of the wrong type.
import { AgentError, ERR } from "./errors.ts";
import { isPlainObject } from "./protocol.ts";

type Args = Record<string, unknown>;
const bad = (msg: string) => new AgentError(ERR.BAD_ARGS, msg);

export function optStr(a: Args, k: string, max = 4096): string | undefined {
  const v = a[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw bad(`${k} must be a string`);
  if (v.length > max) throw bad(`${k} is longer than ${max} characters`);
  return v;
}

export function optBool(a: Args, k: string): boolean | undefined {
  const v = a[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw bad(`${k} must be a boolean`);
  return v;
}

export function optInt(a: Args, k: string, min: number, max: number): number | undefined {
  const v = a[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) throw bad(`${k} must be an integer in ${min}..${max}`);
  return v;
}

export function optMap(a: Args, k: string): Record<string, unknown> | undefined {
  const v = a[k];
  if (v === undefined || v === null) return undefined;
  if (!isPlainObject(v)) throw bad(`${k} must be a map`);
  return v;
}

export function optStrMap(a: Args, k: string): Record<string, string> | undefined {
  const m = optMap(a, k);
  if (!m) return undefined;
  for (const [key, v] of Object.entries(m)) if (typeof v !== "string") throw bad(`${k}.${key} must be a string`);
  return m as Record<string, string>;
}

export function optEnum<T extends string>(a: Args, k: string, values: readonly T[]): T | undefined {
  const v = optStr(a, k, 64);
  if (v === undefined) return undefined;
  if (!(values as readonly string[]).includes(v)) throw bad(`${k} must be one of ${values.join(", ")}`);
  return v as T;
}
