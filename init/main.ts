// The in-container init: phases of DESIGN §3.1, each logged with its duration. Signal intake was
// installed by main.ts before this module loaded.
import { existsSync } from "node:fs";
import { ExitError, EXIT, isExitError, log, setLogPrefix } from "../common/log.ts";
import { libc } from "../common/libc.ts";
import { parseSignal, signalName } from "../common/signals.ts";
import { VERSION } from "../common/version.ts";
import { resolveApp } from "./app.ts";
import { loadEnvFile } from "./env.ts";
import { copyTree, PROTECTED_DIRS } from "./protected.ts";
import { becomeSubreaper, reap } from "./reaper.ts";
import { onSignal, rtSignalsInstalled } from "./signals.ts";
import { newRecord, type Phase, StatusFile } from "./status.ts";
import { Supervisor } from "./supervisor.ts";

const DEFAULT_ENV_FILE = "/man8env.env";
const DEFAULT_STATUS_FILE = "/run/man8s/status.json";
const DEFAULT_STOP_TIMEOUT_S = 10;
/** nspawn's stub gives up after 90 s; stay well clear of it */
const MAX_STOP_TIMEOUT_S = 80;
const SWEEP_MS = 1000;

const HELP = `usage: man8s init [-- CMD ARGS...]

Runs as a container's init (PID 1 or PID 2 under systemd-nspawn): loads the env file, restores the
protected dirs, brings the network up, starts the app, forwards signals, reaps zombies and stops
everything cleanly. With -- CMD ARGS the command replaces the env file's MAN8S_APPLICATION_ARGV/ARGS.
Started as init, man8s-init or 00-init.sh, the binary is this command.

environment: MAN8S_ENV_FILE (default /man8env.env), MAN8S_STATUS_FILE (default /run/man8s/status.json),
and from the env file MAN8S_APPLICATION_ARGV, MAN8S_APPLICATION_ARGS, MAN8S_STOP_SIGNAL,
MAN8S_STOP_TIMEOUT, MAN8S_SIGNAL_GROUP, MAN8S_NETWORK. See README.md.
exit codes: 64 usage, 65 bad env file, 69 network, 70 internal, 75 dependency timeout,
126/127 app not executable/not found, otherwise the app's code (128+n for signal n, 137 if killed after the stop timeout).
`;

export async function runInit(args: string[]): Promise<number> {
  setLogPrefix("man8s-init");
  let override: string[] | null = null;
  if (args[0] === "--") override = args.slice(1);
  else if (args[0] === "--help" || args[0] === "-h" || args[0] === "help") {
    process.stdout.write(HELP);
    return 0;
  } else if (args[0] === "--version") {
    process.stdout.write(`man8s ${VERSION}\n`);
    return 0;
  } else if (args.length) {
    log(`unexpected argument '${args[0]}' (use -- CMD ARGS... to give the command)`);
    return EXIT.usage;
  }
  const pid1 = process.pid === 1;
  const mode = pid1 ? "pid1" : libc.getppid() === 1 ? "pid2" : "subreaper";
  if (!pid1 && !becomeSubreaper()) log("warning: cannot become a child subreaper; orphans will not be reaped here");

  const status = new StatusFile(process.env.MAN8S_STATUS_FILE || DEFAULT_STATUS_FILE, newRecord(mode));
  const sup = new Supervisor({ stopSignal: 15, stopTimeoutMs: DEFAULT_STOP_TIMEOUT_S * 1000, pid1, status });
  onSignal((s) => sup.handleSignal(s));
  const sweep = setInterval(reap, SWEEP_MS);

  // performance.now() counts from the process's start: the runtime's own start-up cost, for the record
  status.record.phases.runtime = Math.round(performance.now() * 100) / 100;
  log(`man8s ${VERSION} starting as ${mode} (pid ${process.pid}, ${status.record.phases.runtime} ms after exec); ${rtSignalsInstalled().length} RT signals handled`);
  try {
    return await phases(override, sup, status);
  } catch (e) {
    const err = isExitError(e) ? e : new ExitError(EXIT.internal, `internal error: ${(e as Error).stack ?? e}`);
    log(err.message);
    status.record.exit = {
      code: err.code, reason: err.message, app: null, killedAfterTimeout: false, drained: 0,
      orphansReaped: sup.orphansReaped(), at: new Date().toISOString(),
    };
    status.record.phase = "exited";
    status.write();
    return err.code;
  } finally {
    clearInterval(sweep);
  }
}

async function phases(override: string[] | null, sup: Supervisor, status: StatusFile): Promise<number> {
  const rec = status.record;
  const phase = async <T>(name: Phase, fn: () => T | Promise<T>): Promise<T> => {
    rec.phase = name;
    const t = performance.now();
    const out = await fn();
    const ms = Math.round((performance.now() - t) * 100) / 100;
    rec.phases[name] = ms;
    log(`[${name}] done in ${ms} ms`);
    return out;
  };

  // env: the file's keys over the environment nspawn gave us; all of them go to the app
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  await phase("env", () => {
    const file = process.env.MAN8S_ENV_FILE || DEFAULT_ENV_FILE;
    const parsed = loadEnvFile(file);
    if (!parsed) {
      log(`${file}: not present, using the environment only`);
      return;
    }
    for (const k of parsed.duplicates) log(`${file}: ${k} defined more than once; the last value wins`);
    for (const [k, v] of parsed.vars) env[k] = v;
    log(`${file}: ${parsed.vars.size} variables`);
  });
  delete env.MAN8S_ENV_FILE;
  const settings = stopSettings(env);
  sup.configureStop(settings.signal, settings.timeoutMs);
  const app = resolveApp(override, env);

  await phase("protected-dirs", () => {
    for (const [src, dest] of PROTECTED_DIRS) {
      if (!existsSync(src)) continue;
      const s = copyTree(src, dest);
      log(`${src} -> ${dest}: ${s.files} files, ${s.dirs} dirs, ${s.links} links${s.skipped.length ? `, skipped ${s.skipped.join(" ")}` : ""}`);
    }
  });

  if (!sup.stopping) {
    rec.phase = "app";
    log(`starting ${JSON.stringify(app.argv)} (${app.source}${app.group ? ", signals to its process group" : ""}); stop signal ${signalName(settings.signal)}`);
    const started = sup.spawn(app.argv, env, app.group);
    if ("failed" in started) {
      rec.exit = {
        code: started.failed, reason: `cannot execute ${app.argv[0]}`, app: null, killedAfterTimeout: false,
        drained: 0, orphansReaped: sup.orphansReaped(), at: new Date().toISOString(),
      };
      rec.phase = "exited";
      status.write();
      return started.failed;
    }
    rec.app = {
      argv: app.argv, pid: started.pid, startedAt: new Date().toISOString(), group: app.group,
      startedAfterMs: Math.round(performance.now() * 100) / 100,
    };
    rec.phase = "running";
    status.write();
  }

  const result = await sup.waitAndDrain();
  rec.phase = "exited";
  rec.exit = {
    code: result.code, reason: result.reason,
    app: result.app ? { code: result.app.signal ? null : result.app.code, signal: result.app.signal ? signalName(result.app.signal) : null } : null,
    killedAfterTimeout: result.code === 137 && result.app?.signal === 9, drained: result.drained,
    orphansReaped: sup.orphansReaped(), at: new Date().toISOString(),
  };
  status.write();
  log(`exit ${result.code}: ${result.reason}; ${result.drained} drained, ${sup.orphansReaped()} orphans reaped`);
  return result.code;
}

function stopSettings(env: Record<string, string>): { signal: number; timeoutMs: number } {
  let signal = 15;
  if (env.MAN8S_STOP_SIGNAL) {
    const n = parseSignal(env.MAN8S_STOP_SIGNAL);
    if (n === null || n === 19) throw new ExitError(EXIT.badEnv, `MAN8S_STOP_SIGNAL: '${env.MAN8S_STOP_SIGNAL}' is not a usable signal`);
    signal = n;
  }
  let timeoutS = DEFAULT_STOP_TIMEOUT_S;
  if (env.MAN8S_STOP_TIMEOUT) {
    const t = Number(env.MAN8S_STOP_TIMEOUT);
    if (!/^\d+(\.\d+)?$/.test(env.MAN8S_STOP_TIMEOUT.trim()) || !Number.isFinite(t))
      throw new ExitError(EXIT.badEnv, `MAN8S_STOP_TIMEOUT: '${env.MAN8S_STOP_TIMEOUT}' is not a number of seconds`);
    timeoutS = t;
    if (t > MAX_STOP_TIMEOUT_S) {
      log(`MAN8S_STOP_TIMEOUT ${t} s capped at ${MAX_STOP_TIMEOUT_S} s (nspawn's stub gives up at 90 s)`);
      timeoutS = MAX_STOP_TIMEOUT_S;
    }
  }
  return { signal, timeoutMs: timeoutS * 1000 };
}
