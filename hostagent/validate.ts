// Render's check of the env it is about to write: the init's own validator (common/validate-env.ts) run on
// the final key/value map, each refusal answered as E_BAD_CONFIG naming where the bad value came from
// (the image config's field, the request argument, or the caller's env). Reference: docs/validation.md.
import { settingKey, stopSignalValue } from "../common/settings.ts";
import { validateEnv } from "../common/validate-env.ts";
import { AgentError, ERR } from "./errors.ts";

/** Where each setting the agent renders comes from, as the caller knows it. */
const ORIGIN: Record<string, string> = {
  MAN8S_STOP_SIGNAL: "StopSignal",
  MAN8S_STOP_TIMEOUT: "stopTimeout",
  MAN8S_HEALTHCHECK: "Healthcheck",
  MAN8S_YGGDRASIL_ADDRESS: "yggdrasilAddress (--ygg-address)",
  MAN8S_APPLICATION_ARGV: "Entrypoint/Cmd",
  MAN8S_EXEC_INIT: "Entrypoint/Cmd",
  MAN8S_APPLICATION_USER: "User",
  MAN8S_CONTAINER_NAME: "name",
};

export interface SettingSources {
  /** the request's env (written last, so it wins) */
  requestEnv?: Record<string, string>;
  /** the image config's Env */
  imageEnv?: readonly (readonly [string, string])[];
  /** the image config's StopSignal as written (classify falls back to SIGTERM on a bad one) */
  imageStopSignal?: string;
}

function origin(key: string, src: SettingSources): string {
  if (src.requestEnv && Object.hasOwn(src.requestEnv, key)) return `env ${key}`;
  const field = ORIGIN[key];
  if (field) return field;
  if (src.imageEnv?.some(([k]) => k === key)) return `Env ${key}`;
  return key;
}

/** Throws AgentError(E_BAD_CONFIG, "<field>: <the init's message>") for the first setting the init refuses. */
export function checkSettings(env: ReadonlyMap<string, string>, src: SettingSources = {}): void {
  try {
    // an image's StopSignal the init would refuse is an error even though classify fell back to SIGTERM,
    // unless the caller's env chooses the stop signal
    if (src.imageStopSignal && !Object.hasOwn(src.requestEnv ?? {}, "MAN8S_STOP_SIGNAL")) stopSignalValue(src.imageStopSignal, "MAN8S_STOP_SIGNAL");
    validateEnv(Object.fromEntries(env));
  } catch (e) {
    const key = settingKey(e);
    if (key === null) throw e;
    throw new AgentError(ERR.BAD_CONFIG, `${origin(key, src)}: ${(e as Error).message}`);
  }
}
