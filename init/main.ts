// The in-container init: phases of DESIGN §3.1, each logged with its duration. Signal intake was
// installed by main.ts before this module loaded.
import { existsSync } from "node:fs";
import { ExitError, EXIT, isExitError, log, setLogPrefix } from "../common/log.ts";
import { ENOENT, execve, libc, sigactionStruct } from "../common/libc.ts";
import { SIGPIPE, SIGTERM, signalName } from "../common/signals.ts";
import { DEFAULT_STOP_TIMEOUT_S, MAX_STOP_TIMEOUT_S, stopSignal, stopTimeout, userSpec, wantsNetwork, wantsProbes } from "../common/settings.ts";
import { IN_CONTAINER_ENV, IN_CONTAINER_REPORT_SOCKET, IN_CONTAINER_STATUS } from "../common/paths.ts";
import { VERSION } from "../common/version.ts";
import { resolveApp, resolveExecInit } from "./app.ts";
import { appEnvironment, duplicateSummary, loadEnvFile } from "./env.ts";
import { copyTree, PROTECTED_DIRS } from "./protected.ts";
import { becomeSubreaper, reap } from "./reaper.ts";
import { onSignal, signalsHandled } from "./signals.ts";
import { newRecord, type Phase, StatusFile } from "./status.ts";
import { Supervisor } from "./supervisor.ts";
import { appUserFromEnv } from "../common/user.ts";
import { checkProbeEnv } from "../probes/settings.ts";
import { HealthOnFailure, healthAction, restartDelayMs } from "./health-action.ts";
import { sleepLong } from "../common/timer.ts";
import { probeWrapper } from "./launch.ts";
import { load } from "../lazy.ts";
import type { HealthHandle, ReadyHandle } from "../probes/index.ts";

const SWEEP_MS = 1000;

const HELP = `usage: man8s init [-- CMD ARGS...]

Runs as a container's init (PID 1 or PID 2 under systemd-nspawn): loads the env file, restores the
protected dirs, brings the network up, starts the app, forwards signals, reaps zombies and stops
everything cleanly. With -- CMD ARGS the command replaces the env file's MAN8S_APPLICATION_ARGV/ARGS.
Started as init, man8s-init or 00-init.sh, the binary is this command.

environment: MAN8S_ENV_FILE (default /man8env.env), MAN8S_STATUS_FILE (default /run/man8s/status.json),
and from the env file MAN8S_APPLICATION_ARGV, MAN8S_APPLICATION_ARGS, MAN8S_STOP_SIGNAL,
MAN8S_STOP_TIMEOUT, MAN8S_SIGNAL_GROUP, MAN8S_NETWORK. See docs/init.md.
exit codes: 64 usage, 65 bad env file, 67 MAN8S_APPLICATION_USER unknown to the rootfs, 69 network, 70 internal, 75 dependency timeout,
126/127 app not executable/not found, otherwise the app's code (128+n for signal n, 137 if killed after the stop timeout).
`;

export async function runInit(args: string[]): Promise<number> {
  setLogPrefix("man8s-init");
  let override: string[] | null = null;
  if (args[0] === "--") override = args.slice(1);
  else if (args.length) return await initFlags(args);
  const pid1 = process.pid === 1;
  const mode = pid1 ? "pid1" : libc.getppid() === 1 ? "pid2" : "subreaper";
  if (!pid1 && !becomeSubreaper()) log("warning: cannot become a child subreaper; orphans will not be reaped here");

  // report to the host agent when it bound its per-container socket in (best effort, never blocks)
  const reportSocket = process.env.MAN8S_REPORT_SOCKET || IN_CONTAINER_REPORT_SOCKET;
  const rc = existsSync(reportSocket) ? await load("report") : null;
  const reporter = rc ? new rc.Reporter(reportSocket) : null;
  const status = new StatusFile(
    process.env.MAN8S_STATUS_FILE || IN_CONTAINER_STATUS,
    newRecord(mode),
    rc && reporter ? (r) => reporter.send(rc.reportFromStatus(r)) : undefined,
  );
  // the first write waits for a phase that takes time (network, dependencies) or the app's start: off
  // the fast path; the agent, though, is told at once that a new run began
  if (reporter) status.write();
  const sup = new Supervisor({ stopSignal: SIGTERM, stopTimeoutMs: DEFAULT_STOP_TIMEOUT_S * 1000, pid1, status });
  onSignal((s) => sup.handleSignal(s));
  const sweep = setInterval(reap, SWEEP_MS);

  // performance.now() counts from the runtime's time origin (the Bun runtime spends ~3 ms before it)
  status.record.phases.runtime = Math.round(performance.now() * 100) / 100;
  log(`man8s ${VERSION} starting as ${mode} (pid ${process.pid}, ${status.record.phases.runtime} ms into the runtime); ${signalsHandled().length} signals handled (every one but KILL, STOP, PIPE, PWR, 33)`);
  try {
    return await phases(override, sup, status, async () => reporter?.flush());
  } catch (e) {
    const err = isExitError(e) ? e : new ExitError(EXIT.internal, `internal error: ${(e as Error).stack ?? e}`);
    log(err.message);
    return sup.abort(err.code, err.message).code;
  } finally {
    clearInterval(sweep);
    await reporter?.flush();
  }
}

/** --help, --version or bad usage: never the start-up path, so only here the parser loads (see lazy.ts). */
async function initFlags(args: string[]): Promise<number> {
  const cli = await load("cli");
  try {
    const { values: v, positionals } = cli.parseCli(args, { version: { type: "boolean" } });
    if (v.help || positionals[0] === "help") {
      process.stdout.write(HELP);
      return 0;
    }
    if (v.version) {
      process.stdout.write(`man8s ${VERSION}\n`);
      return 0;
    }
    throw new cli.UsageError(`unexpected argument '${positionals[0]}' (use -- CMD ARGS... to give the command)`);
  } catch (e) {
    if (cli.isUsageError(e)) return cli.usageExit("init", e.message);
    throw e;
  }
}

async function phases(override: string[] | null, sup: Supervisor, status: StatusFile, flush: () => Promise<void>): Promise<number> {
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

  // env: the file's keys over the environment nspawn gave us; all but the init's own control variables
  // go to the app (appEnvironment)
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  let fileHasHome = false;
  await phase("env", () => {
    const file = process.env.MAN8S_ENV_FILE || IN_CONTAINER_ENV;
    const parsed = loadEnvFile(file);
    if (!parsed) {
      log(`${file}: not present, using the environment only`);
      return;
    }
    for (const line of duplicateSummary(file, parsed.duplicates)) log(line);
    for (const [k, v] of parsed.vars) env[k] = v;
    fileHasHome = parsed.vars.has("HOME");
    log(`${file}: ${parsed.vars.size} variables`);
  });
  delete env.MAN8S_ENV_FILE;
  appEnvironment(env); // an environment the kernel would refuse fails now (65), before anything starts
  const settings = stopSettings(env);
  sup.configureStop(settings.signal, settings.timeoutMs);
  const onFailure = healthAction(env); // a bad value exits 65 before anything starts
  // MAN8S_APPLICATION_USER's syntax (exit 65) unless an image init is exec'd; names are looked up later (67)
  if (override || !env.MAN8S_EXEC_INIT) userSpec(env);
  const execInit = override ? null : resolveExecInit(env);
  const app = execInit ? null : resolveApp(override, env);
  // the image's User (exit 67 before anything starts when the rootfs does not know it); HOME from passwd
  // unless the image's env sets it (nspawn's own HOME=/root does not count), as Docker does
  const user = execInit ? null : appUserFromEnv(env, process.env.MAN8S_ETC_DIR || "/etc");
  if (user && !fileHasHome) env.HOME = user.home;
  const wrap = probeWrapper(user, env);

  await phase("protected-dirs", () => {
    for (const [src, dest] of PROTECTED_DIRS) {
      if (!existsSync(src)) continue;
      const s = copyTree(src, dest);
      log(`${src} -> ${dest}: ${s.files} files, ${s.dirs} dirs, ${s.links} links${s.skipped.length ? `, skipped ${s.skipped.join(" ")}` : ""}`);
    }
  });

  // a start-up phase that waits gives up when a stop is requested: the container then exits 0
  const stopped = new Promise<"stop">((resolve) => sup.onStop(() => resolve("stop")));
  // probe variables are checked before anything starts, by the light parsers; the probe engine (~1.5 ms to
  // load) comes before the app only for MAN8S_WAIT_FOR, else right after the app's spawn, off the start-up path
  const useProbes = wantsProbes(env);
  if (useProbes) checkProbeEnv(env, log);
  let probes = useProbes && env.MAN8S_WAIT_FOR?.trim() ? await load("probes") : null;

  let network: { stop: () => Promise<void> } | null = null;
  if (wantsNetwork(env) && !sup.stopping) {
    await phase("network", async () => {
      status.write();
      const up = (await load("network")).bringUp(env, {
        log,
        // after an exec nothing renews the lease: the address must not expire with it
        ...(execInit ? { keepAddress: true } : {}),
        onChange: (r) => {
          rec.network = r;
          status.write();
        },
      });
      const r = await Promise.race([up, stopped]);
      if (r === "stop") {
        up.catch(() => undefined);
        return;
      }
      network = r;
      rec.network = r.result;
      if (r.result.iface) env.MAN8S_HOST_IFACE = r.result.iface;
    });
  }

  const waiter = probes;
  if (waiter && env.MAN8S_WAIT_FOR?.trim() && !sup.stopping) {
    await phase("dependencies", async () => {
      status.write(); // the wait can last MAN8S_WAIT_TIMEOUT (or forever): the record shows it meanwhile
      const abort = new AbortController();
      sup.onStop(() => abort.abort(new Error("stop requested")));
      try {
        await waiter.waitFor(env, { log, signal: abort.signal, spawnEnv: appEnvironment(env), ...(wrap ? { wrap } : {}) });
      } catch (e) {
        if (!sup.stopping) throw e;
      }
    });
  }

  if (execInit && !sup.stopping) return execImageInit(execInit, appEnvironment(env), status, flush);

  let health: HealthHandle | null = null;
  let ready: ReadyHandle | null = null;
  let guard: HealthOnFailure | null = null;
  /** the health record, with what MAN8S_HEALTH_ON_FAILURE did when it is set */
  const healthRec = <T extends object>(h: T) => (guard && guard.action !== "none" ? { ...h, onFailure: guard.record } : h);
  if (app && !sup.stopping) {
    rec.phase = "app";
    const shown = argvForRecord(app.argv);
    log(`starting ${JSON.stringify(shown)}${shown.length < app.argv.length ? ` (first ${shown.length} of ${app.argv.length} words)` : ""} (${app.source}${app.group ? ", signals to its process group" : ""}${user ? `, as ${JSON.stringify(user.spec)} = ${user.uid}:${user.gid} groups ${user.groups.join(",")}` : ""}); stop signal ${signalName(settings.signal)}`);
    const appEnv = appEnvironment(env);
    const started = sup.spawn(app.argv, appEnv, app.group, user);
    if ("failed" in started) return sup.abort(started.failed, `cannot execute ${app.argv[0]}`).code;
    rec.app = {
      argv: shown, ...(shown.length < app.argv.length ? { argc: app.argv.length } : {}), pid: started.pid, startedAt: new Date().toISOString(), group: app.group,
      startedAfterMs: Math.round(performance.now() * 100) / 100,
    };
    rec.phase = "running";
    if (useProbes) probes ??= await load("probes");
    if (!probes && env.NOTIFY_SOCKET && env.MAN8S_READY?.trim() !== "none") {
      // no readiness probe: ready once the app has started (sd_notify alone, not the probe engine)
      const t = performance.now();
      const status = `app started (pid ${started.pid})`;
      const notify = (await load("notify")).sdNotify(["READY=1", `STATUS=${status}`], { env });
      rec.ready = { via: "start", status, afterMs: Math.round((performance.now() - t) * 100) / 100, at: Date.now(), attempts: 1, notify };
      if (!notify.sent) log(`READY=1 not sent: ${notify.error}`);
    }
    if (probes) {
      const p = probes;
      // the supervisor carries out the action: its state machine owns every signal sent to the app
      guard = new HealthOnFailure(onFailure, {
        log,
        stop: () => sup.health("stop"),
        kill: () => sup.health("kill"),
        endApp: () => sup.health("restart"),
      });
      const startHealth = () =>
        p.startHealth(env, {
          log, startedAt: performance.now(), spawnEnv: appEnv, cwd: process.cwd(), ...(wrap ? { wrap } : {}),
          onChange: (h, prev) => {
            log(`health: ${prev} -> ${h.status}`);
            guard?.onStatus(h.status); // first, so the record written now already carries the action
            rec.health = healthRec(h);
            status.write();
          },
          onResult: (h) => {
            rec.health = healthRec(h);
            status.write();
          },
        });
      health = startHealth();
      if (onFailure === "restart") {
        const g = guard;
        const stopWait = new AbortController();
        sup.onStop(() => stopWait.abort());
        // the supervisor calls this only for the app the action ended (its state "restarting"): an app that
        // exited by itself ends the container as always
        sup.respawn = async () => {
          await health?.stop();
          const delay = restartDelayMs((g.record.restarts ?? 0) + 1);
          log(`health: restarting the app in ${delay / 1000} s (restart ${(g.record.restarts ?? 0) + 1})`);
          await sleepLong(delay, stopWait.signal);
          if (sup.stopping) return false;
          const again = sup.spawn(app.argv, appEnv, app.group, user);
          if ("failed" in again) return false;
          g.restarted(delay);
          rec.app = { ...rec.app!, pid: again.pid, startedAt: new Date().toISOString(), startedAfterMs: Math.round(performance.now() * 100) / 100 };
          rec.phase = "running";
          health = startHealth();
          if (health) rec.health = healthRec(health.state());
          status.write();
          return true;
        };
      }
      if (health) rec.health = healthRec(health.state());
      ready = probes.startReady(env, {
        log, health, spawnEnv: appEnv, ...(wrap ? { wrap } : {}),
        onReady: (info) => {
          rec.ready = info;
          status.write();
        },
      });
    }
    status.write();
  }

  // probes stop with a stop request or the app's exit, before the drain (their processes are ours)
  let probesStopped: Promise<void> | null = null;
  const stopProbes = () =>
    (probesStopped ??= (async () => {
      await ready?.stop();
      await health?.stop();
    })());
  sup.onStop(() => void stopProbes());
  const result = await sup.waitAndDrain(stopProbes);
  await (network as { stop: () => Promise<void> } | null)?.stop();
  if (health) {
    // the monitor has stopped: as Docker does then, the status is "unhealthy" (never "starting" for a
    // container that is gone); lastStatus keeps what the checks had said until then
    const h = health.state();
    rec.health = healthRec({ ...h, status: "unhealthy", lastStatus: h.status });
  }
  return sup.finish(result).code;
}

/**
 * Replace ourselves with the image's own init (s6-overlay, systemd...), which must be PID 1: the
 * network is up, the status record and the agent say so; from here on that init owns the container.
 */
async function execImageInit(argv: string[], env: Record<string, string>, status: StatusFile, flush: () => Promise<void>): Promise<number> {
  const path = argv[0]!.includes("/") ? argv[0]! : Bun.which(argv[0]!, { PATH: env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin" });
  if (!path) {
    log(`cannot execute ${argv[0]}: not found in PATH`);
    return EXIT.notFound;
  }
  if (process.pid !== 1) log(`warning: MAN8S_EXEC_INIT with the init as pid ${process.pid}; the image's init may insist on PID 1 (ProcessTwo=no)`);
  const rec = status.record;
  rec.phase = "exec";
  rec.app = { argv, pid: process.pid, startedAt: new Date().toISOString(), group: false, startedAfterMs: Math.round(performance.now() * 100) / 100 };
  status.write();
  await flush();
  // an image init other than systemd never notifies nspawn: with MAN8S_READY=start it counts as ready now
  if (env.MAN8S_READY?.trim() === "start" && env.NOTIFY_SOCKET) {
    const n = (await load("notify")).sdNotify(["READY=1", `STATUS=exec ${argv[0]}`], { env });
    if (!n.sent) log(`READY=1 not sent: ${n.error}`);
  }
  log(`exec ${JSON.stringify(argv)}: the image's init takes over as pid ${process.pid}`);
  libc.sigaction(SIGPIPE, sigactionStruct(0n, 0), null); // SIGPIPE back to SIG_DFL: Bun ignores it, exec would keep that
  const err = execve(path, argv, env);
  log(`cannot execute ${path}: ${err === ENOENT ? "not found" : `errno ${err}`}`);
  return err === ENOENT ? EXIT.notFound : EXIT.notExecutable;
}

/** The argv as the log and the record show it: the first words, up to ~8 KiB (a record is rewritten often). */
function argvForRecord(argv: string[], budget = 8192): string[] {
  const out: string[] = [];
  for (const a of argv) {
    budget -= a.length + 3;
    if (budget < 0 && out.length) break;
    out.push(a.length > 4096 ? `${a.slice(0, 4096)}…` : a);
  }
  return out;
}

function stopSettings(env: Record<string, string>): { signal: number; timeoutMs: number } {
  const signal = stopSignal(env);
  const timeout = stopTimeout(env);
  if (timeout.capped) log(`MAN8S_STOP_TIMEOUT ${env.MAN8S_STOP_TIMEOUT} s capped at ${MAX_STOP_TIMEOUT_S} s (nspawn's stub gives up at 90 s)`);
  return { signal, timeoutMs: timeout.ms };
}
