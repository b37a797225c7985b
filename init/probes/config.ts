// Early validation of every probe variable, for the init's env phase: shared with the agent, so it lives in
// common/probe-settings.ts.
export { checkProbeEnv } from "../../common/probe-settings.ts";
