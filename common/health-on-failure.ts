// MAN8S_HEALTH_ON_FAILURE's values: one list for the init (which acts on it, init/health-action.ts) and
// the agent (which renders it from --health-on-failure and refuses what the init would refuse).
import { EXIT, ExitError } from "./log.ts";

export const HEALTH_ACTIONS = ["none", "restart", "stop", "kill"] as const;
export type HealthAction = (typeof HEALTH_ACTIONS)[number];

/** The status record's `health.onFailure`: what the init did (init/health-action.ts). */
export interface HealthActionRecord {
  action: HealthAction;
  /** when the app last turned unhealthy and the action was taken (ISO time); null while nothing happened */
  at: string | null;
  /** restart: how many times the app was restarted, and the delay before the last restart */
  restarts?: number;
  lastDelayMs?: number;
}

/** The setting, validated: a bad value is a bad env (65) naming the variable, before the app starts. */
export function healthAction(env: Record<string, string | undefined>): HealthAction {
  const v = (env.MAN8S_HEALTH_ON_FAILURE ?? "").trim();
  if (v === "") return "none";
  if ((HEALTH_ACTIONS as readonly string[]).includes(v)) return v as HealthAction;
  throw new ExitError(EXIT.badEnv, `MAN8S_HEALTH_ON_FAILURE must be ${HEALTH_ACTIONS.join(", ")}, got '${v.slice(0, 40)}'`);
}

