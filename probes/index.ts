// What the init uses of the probes, as one lazily loaded entry point (see lazy.ts).
export { checkProbeEnv } from "./settings.ts";
export { startHealth, type HealthHandle, type HealthState } from "./healthcheck.ts";
export { startReady, type ReadyHandle, type ReadyInfo } from "./ready.ts";
export { waitFor } from "./waitfor.ts";
