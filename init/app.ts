// Which command the init runs, and how it is signalled (DESIGN §3.1 step 6).
import { existsSync } from "node:fs";
import { ExitError, EXIT } from "../common/log.ts";
import { argvJson } from "../common/settings.ts";
import { isShellForm } from "../common/shell-form.ts";
import { splitWords } from "../common/shellwords.ts";

export interface AppCommand {
  argv: string[];
  /** where it came from, for the log */
  source: string;
  /** signal the app's process group rather than its pid (shell-form commands leave children behind) */
  group: boolean;
}

export function resolveApp(override: string[] | null, env: Record<string, string | undefined>, shell = "/bin/sh"): AppCommand {
  const wantGroup = env.MAN8S_SIGNAL_GROUP === "1" || env.MAN8S_SIGNAL_GROUP === "true";
  if (override && override.length) return { argv: override, source: "command line", group: wantGroup || isShellForm(override) };

  const json = env.MAN8S_APPLICATION_ARGV;
  if (json !== undefined && json !== "") {
    const argv = argvJson("MAN8S_APPLICATION_ARGV", json);
    return { argv, source: "MAN8S_APPLICATION_ARGV", group: wantGroup || isShellForm(argv) };
  }

  const line = env.MAN8S_APPLICATION_ARGS;
  if (line !== undefined && line.trim() !== "") {
    const words = splitWords(line);
    if (existsSync(shell)) {
      // as mbctl's 00-init.sh did: the image's shell parses the line and execs the command
      const group = wantGroup || !words.ok || isShellForm(words.argv);
      return { argv: [shell, "-c", `exec ${line}`], source: `MAN8S_APPLICATION_ARGS via ${shell}`, group };
    }
    if (!words.ok)
      throw new ExitError(EXIT.badEnv, `MAN8S_APPLICATION_ARGS: ${words.reason}, and the image has no ${shell}`);
    if (words.argv.length === 0) throw new ExitError(EXIT.badEnv, "MAN8S_APPLICATION_ARGS: no command");
    return { argv: words.argv, source: "MAN8S_APPLICATION_ARGS (no /bin/sh: split by man8s)", group: wantGroup };
  }
  throw new ExitError(EXIT.usage, "no application to run: set MAN8S_APPLICATION_ARGV or MAN8S_APPLICATION_ARGS in the env file, or pass `-- CMD ARGS...`");
}

/**
 * MAN8S_EXEC_INIT (written by hostagent for s6-overlay, systemd, busybox init, runit, sysvinit images):
 * the image's own init, which must be PID 1. The man8s init prepares the container and then execs it.
 */
export function resolveExecInit(env: Record<string, string | undefined>): string[] | null {
  const json = env.MAN8S_EXEC_INIT;
  if (json === undefined || json === "") return null;
  return argvJson("MAN8S_EXEC_INIT", json);
}
