// The one validator of a container's env settings: every check the init makes when it reads the env file,
// made in the same order with the same functions, without starting anything. The agent runs it on the
// env it renders (hostagent/validate.ts), so an install never hands the init a file it exits 65 on.
// The init itself keeps its lazy phases (settings.ts at start-up, probes/settings.ts with the probes,
// ygg-settings.ts with the network) and calls the very same parsers there. Reference: docs/validation.md.
import { checkProbeEnv } from "../probes/settings.ts";
import { argvJson, networkSettings, SettingError, stopSignal, stopTimeout, userSpec, wantsNetwork, wantsProbes, type Env } from "./settings.ts";
import { yggConfigFromEnv } from "./ygg-settings.ts";

/**
 * Throws the first SettingError the init would exit on (65, or 64 when there is nothing to run).
 * `warn` receives what the init would only log.
 */
export function validateEnv(env: Env, warn: (msg: string) => void = () => {}): void {
  // init/main.ts: stop settings, the user's syntax, then the image's own init or the app (init/app.ts)
  stopSignal(env);
  stopTimeout(env);
  const execInit = env.MAN8S_EXEC_INIT;
  if (!execInit) userSpec(env);
  if (execInit) argvJson("MAN8S_EXEC_INIT", execInit);
  else {
    const argv = env.MAN8S_APPLICATION_ARGV;
    if (argv !== undefined && argv !== "") argvJson("MAN8S_APPLICATION_ARGV", argv);
    else if ((env.MAN8S_APPLICATION_ARGS ?? "").trim() === "")
      throw new SettingError("MAN8S_APPLICATION_ARGV", "no application to run: MAN8S_APPLICATION_ARGV and MAN8S_APPLICATION_ARGS are empty", 64);
  }
  if (wantsProbes(env)) checkProbeEnv(env, warn);
  if (wantsNetwork(env)) {
    const net = networkSettings(env);
    if (net.mode !== "v4" && net.mode !== "none") yggConfigFromEnv(env);
  }
}
