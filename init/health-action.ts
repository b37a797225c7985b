// MAN8S_HEALTH_ON_FAILURE: what the init does when the health check turns the app "unhealthy" (podman's
// --health-on-failure). The states are explicit: idle → acted (once: both actions end the container).
//   none  only report (default)
//   stop  a clean stop, as a stop request: the image's stop signal, the stop timeout, the drain
//   kill  SIGKILL to the app (its group), the drain for the rest, and exit EXIT.unhealthy (79) so that the
//         unit's Restart= policy (or whoever watches the exit code) can tell "killed as unhealthy" apart
// `restart` (restart the app inside the container with backoff) is not implemented yet: refused as a bad value.
import type { HealthAction } from "../common/health-on-failure.ts";
export { healthAction } from "../common/health-on-failure.ts";

export interface HealthActionRecord {
  action: HealthAction;
  /** when the app turned unhealthy and the action was taken (ISO time); null while nothing happened */
  at: string | null;
}

export interface HealthActionHooks {
  stop(): void;
  kill(): void;
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
    this.record = { action, at: null };
  }

  /** the container ended because of this action (for the exit code and reason) */
  get acted(): boolean {
    return this.state === "acted";
  }

  onStatus(status: string): void {
    if (status !== "unhealthy" || this.action === "none" || this.state !== "idle") return;
    this.state = "acted";
    this.record.at = new Date().toISOString();
    this.hooks.log(`health: unhealthy, MAN8S_HEALTH_ON_FAILURE=${this.action}: ${this.action === "stop" ? "stopping the container" : "killing the app"}`);
    if (this.action === "stop") this.hooks.stop();
    else this.hooks.kill();
  }
}
