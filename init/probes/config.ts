// Early validation of every probe variable, for the init's env phase (before network and dependencies), so a
// typo fails the container at once with a message naming the variable instead of after the app started.
//
//   checkProbeEnv(env): void     throws ExitError(65) naming the variable and the bad value
import { ExitError, EXIT } from "../../common/log.ts";
import { parseProbeUrl, splitProbeList, ProbeUrlError } from "./url.ts";
import { parseHealthcheck, HealthcheckError } from "./healthcheck.ts";
import { parseWaitTimeoutMs } from "./waitfor.ts";
import { readyIntervalMs } from "./ready.ts";

export function checkProbeEnv(env: Record<string, string | undefined>, warn: (msg: string) => void = () => {}): void {
  const wrap = (name: string, f: () => void) => {
    try {
      f();
    } catch (e) {
      if (e instanceof ExitError) throw e;
      if (e instanceof ProbeUrlError || e instanceof HealthcheckError) throw new ExitError(EXIT.badEnv, `${name}: ${e.message}`);
      throw e;
    }
  };
  wrap("MAN8S_WAIT_FOR", () => void splitProbeList(env.MAN8S_WAIT_FOR ?? "").map(parseProbeUrl));
  wrap("MAN8S_WAIT_TIMEOUT", () => void parseWaitTimeoutMs(env.MAN8S_WAIT_TIMEOUT));
  wrap("MAN8S_WAIT_PROBE_TIMEOUT", () => void parseWaitTimeoutMs(env.MAN8S_WAIT_PROBE_TIMEOUT, "MAN8S_WAIT_PROBE_TIMEOUT"));
  let hc = null;
  wrap("MAN8S_HEALTHCHECK", () => void (hc = parseHealthcheck(env.MAN8S_HEALTHCHECK, { warn })));
  const ready = env.MAN8S_READY?.trim() ?? "";
  if (!["", "healthy", "start", "none"].includes(ready)) wrap("MAN8S_READY", () => void parseProbeUrl(ready));
  if (ready === "healthy" && !hc) warn("MAN8S_READY=healthy without a MAN8S_HEALTHCHECK: the container will be ready as soon as the app starts");
  wrap("MAN8S_READY_INTERVAL", () => void readyIntervalMs(env));
}
