// MAN8S_HEALTH_ON_FAILURE: what the init does when the health check turns the app "unhealthy" (podman's
// --health-on-failure). The states are explicit: idle → acted; restart re-arms (acted → idle) once the new
// app runs, the others end the container. The supervisor carries the action out (its `health` input) and
// knows from its own state what it did to the exit code (init/supervisor-state.ts).
//   none     only report (default)
//   restart  the image's stop signal to the app (SIGKILL at the stop timeout); when it has exited, a new one
//            starts after a backoff that doubles from 1 s up to 30 s; each restart is counted in the record
//   stop     a clean stop, as a stop request: the image's stop signal, the stop timeout, the drain
//   kill     SIGKILL to the app (its group), the drain for the rest, and exit EXIT.unhealthy (79) so that the
//            unit's Restart= policy (or whoever watches the exit code) can tell "killed as unhealthy" apart
import type { HealthAction, HealthActionRecord } from "../common/health-on-failure.ts";
export type { HealthActionRecord } from "../common/health-on-failure.ts";
export { healthAction } from "../common/health-on-failure.ts";

export const RESTART_FIRST_DELAY_MS = 1000;
export const RESTART_MAX_DELAY_MS = 30_000;

/** the backoff before restart number n (1-based): 1 s, 2 s, 4 s ... at most 30 s */
export function restartDelayMs(n: number): number {
  return Math.min(RESTART_MAX_DELAY_MS, RESTART_FIRST_DELAY_MS * 2 ** Math.min(n - 1, 16));
}

export interface HealthActionHooks {
  stop(): void;
  kill(): void;
  /** restart: end the current app (the supervisor's respawn starts the next) */
  endApp(): void;
  log(msg: string): void;
}

/** Acts once, on the first transition to "unhealthy". */
export class HealthOnFailure {
  private state: "idle" | "acted" = "idle";
  readonly record: HealthActionRecord;

  constructor(
    readonly action: HealthAction,
    private readonly hooks: HealthActionHooks,
  ) {
    this.record = action === "restart" ? { action, at: null, restarts: 0 } : { action, at: null };
  }

  /** restart: a new app is running; the next unhealthy acts again */
  restarted(delayMs: number): void {
    this.record.restarts = (this.record.restarts ?? 0) + 1;
    this.record.lastDelayMs = delayMs;
    this.state = "idle";
  }

  onStatus(status: string): void {
    if (status !== "unhealthy" || this.action === "none" || this.state !== "idle") return;
    this.state = "acted";
    this.record.at = new Date().toISOString();
    const what = { restart: "restarting the app", stop: "stopping the container", kill: "killing the app" }[this.action];
    this.hooks.log(`health: unhealthy, MAN8S_HEALTH_ON_FAILURE=${this.action}: ${what}`);
    if (this.action === "stop") this.hooks.stop();
    else if (this.action === "kill") this.hooks.kill();
    else this.hooks.endApp();
  }
}
