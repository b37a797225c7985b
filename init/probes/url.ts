// Probe URLs are settings the agent validates too: the parser lives in common/probe-url.ts.
export * from "../../common/probe-url.ts";
