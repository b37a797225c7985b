// pull, oci-download, machines (list), remove: the machine lifecycle commands (docs/machines.md). Long ones
// stream progress as events {id, event: {type: "progress", step, message}} before their one reply; a
// client that goes away cancels the pull (its child is killed and the machine's paths are removed).
import { isFinal } from "../../common/report.ts";
import { containerAddress } from "../address.ts";
import { cgroupProcsFiles } from "../cgroup.ts";
import type { LayerProgress } from "../pull-progress.ts";
import { optBool, optEnum, optInt, optMap, optStr, optStrMap } from "../args.ts";
import { TEMPLATES } from "../template.ts";
import { type RenewHooks, renewMachine, rollbackMachine } from "../renew.ts";
import { AgentError, ERR } from "../errors.ts";
import { type Cancel, machineTag, parseSource, pruneStore, RECENT_MINUTES, type RegistryOptions, untag } from "../image-store.ts";
import { injectBind, injectCopy } from "../inject.ts";
import { isInstalled } from "../install.ts";
import { CONFIGS_DIR, MACHINES_DIR, checkAbsPath, checkName, envFile, nspawnFile, rootfsDir } from "../layout.ts";
import { download, machineExists, machineLock, pullMachine, readImageRecord, removeMachine } from "../machines.ts";
import { encodeFrame } from "../protocol.ts";
import type { CallContext } from "./index.ts";
import { installCmd } from "./image.ts";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
// the init's resolver of MAN8S_APPLICATION_USER, so exec runs as the app runs (a candidate for common/)
import { type AppUser, resolveUser } from "../../common/user.ts";
import { DEFAULT_STOP_TIMEOUT_S, stopTimeout as stopTimeoutSetting } from "../../common/settings.ts";
import { readRegular } from "../regular-file.ts";
import { existsIn, resolveIn } from "../rootfs.ts";

type Args = Record<string, unknown>;

function registryArgs(a: Args): RegistryOptions {
  const authfile = a.authfile === undefined || a.authfile === null ? undefined : checkAbsPath(a.authfile, "authfile");
  const certDir = a.certDir === undefined || a.certDir === null ? undefined : checkAbsPath(a.certDir, "certDir");
  return { tlsVerify: optBool(a, "tlsVerify"), authfile, certDir };
}

/** Progress events to the caller, and cancellation when the caller's connection closes. */
function streaming(ctx: CallContext): { progress: (step: string, message: string, layer?: LayerProgress) => void; cancel: Cancel } {
  const cancel: Cancel = { cancelled: false };
  ctx.conn.cleanups.push(() => {
    cancel.cancelled = true;
    cancel.onCancel?.();
  });
  const progress = (step: string, message: string, layer?: LayerProgress) => ctx.conn.send(encodeFrame({ id: ctx.id, event: { type: "progress", step, message, ...(layer ? { layer } : {}) } }));
  return { progress, cancel };
}

/** the install options a pull was given, kept for renew (so it renders with the same choices) */
const INSTALL_OPTIONS = ["template", "volumes", "env", "ready", "bundleMode", "bridge", "privateNetwork", "privateUsers", "stopTimeout", "yggPrefix", "yggdrasilAddress"];

export async function pullCmd(a: Args, ctx: CallContext) {
  const name = checkName(a.name);
  const source = parseSource(a.source);
  const registry = registryArgs(a);
  // the install arguments are checked now, before anything is fetched
  optMap(a, "volumes");
  optStrMap(a, "env");
  optStr(a, "ready", 2048);
  optEnum(a, "template", TEMPLATES);
  const { progress, cancel } = streaming(ctx);
  const bundleMode = a.bundleMode === "copy" ? "copy" : "bind";
  const server = ctx.server;
  try {
    const r = await pullMachine(server.opts.root, {
      name,
      source,
      registry,
      progress,
      cancel,
      after: a.start === true
        ? async () => {
            progress("start", `starting ${name}`);
            return server.runner.start(name);
          }
        : undefined,
      options: Object.fromEntries(INSTALL_OPTIONS.filter((k) => a[k] !== undefined && a[k] !== null).map((k) => [k, a[k]])),
      install: async (rootfs, configBlob, pulled) => {
        const bundle = server.opts.bundle;
        if (bundleMode === "bind") await injectBind(rootfs, bundle);
        else await injectCopy(rootfs, bundle);
        const env = { ...(optStrMap(a, "env") ?? {}), MAN8S_OCI_IMAGE_DIGEST: pulled.digest };
        return installCmd({ ...a, name, rootfs, configPath: configBlob, config: undefined, imageUrl: source.given, env, bundleMode, force: false }, ctx);
      },
    });
    return { name, started: r.started, source: source.given, digest: r.record.digest, rootfs: r.rootfs, layers: r.pulled.layers, reused: r.pulled.reused, fetchedBytes: r.pulled.fetchedBytes, seconds: r.seconds, install: r.installed };
  } catch (e) {
    // an install that got as far as the report socket: the machine is gone, so is its socket
    if (!isInstalled(server.opts.root, name) && !machineExists(server.opts.root, name)) server.closeReportSocket(name);
    throw e;
  }
}

export async function ociDownloadCmd(a: Args, ctx: CallContext) {
  const source = parseSource(a.source);
  const path = checkAbsPath(a.path, "path");
  const { progress, cancel } = streaming(ctx);
  return download(ctx.server.opts.root, source, path, registryArgs(a), progress, cancel);
}

export interface MachineInfo {
  name: string;
  source: string | null;
  digest: string | null;
  installed: boolean;
  phase: string;
  running: boolean;
  /** the nspawn process the agent supervises (null under systemd or when stopped) */
  pid: number | null;
  /** nspawn passed on the container's READY=1 in this run (agent-supervised machines) */
  ready: boolean;
  health?: string;
  exitCode?: number;
  address: string | null;
}

/** Every machine: a rootfs under man8machines or a config directory under man8machine_configs. */
export function listCmd(_a: Args, ctx: CallContext): { machines: MachineInfo[] } {
  const root = ctx.server.opts.root;
  const names = new Set<string>();
  for (const d of [MACHINES_DIR, CONFIGS_DIR]) {
    try {
      for (const n of readdirSync(join(root, d))) {
        try {
          names.add(checkName(n));
        } catch {
          // temp entries (.NAME.pull-..., nspawn's .#NAME.lck) and foreign names
        }
      }
    } catch {
      // none yet
    }
  }
  const out: MachineInfo[] = [];
  for (const name of [...names].sort()) {
    const img = readImageRecord(root, name);
    const s = ctx.server.state.get(name);
    const prefix = ctx.server.opts.yggPrefix;
    const info: MachineInfo = {
      name,
      source: img?.source ?? null,
      digest: img?.digest ?? null,
      installed: isInstalled(root, name),
      phase: s?.phase ?? "unknown",
      running: ctx.server.isRunning(name),
      pid: ctx.server.runner.pid(name),
      // READY=1 seen by the agent's own runner, or (a unit systemd runs) the init's report of this run
      ready: ctx.server.runner.readyAt(name) !== null || (s?.ready === true && !isFinal(s.phase) && ctx.server.isRunning(name)),
      address: prefix ? containerAddress(prefix, name) : null,
    };
    if (s?.health) info.health = s.health;
    if (s?.exit) info.exitCode = s.exit.code;
    out.push(info);
    if (out.length >= 4096) break; // one reply frame; more machines than that is not a host we serve
  }
  return { machines: out };
}

export async function removeCmd(a: Args, ctx: CallContext) {
  const name = checkName(a.name);
  const keepData = optBool(a, "keepData") ?? false;
  const root = ctx.server.opts.root;
  return machineLock.run(name, async () => {
    const parts = removeMachine(root, name, keepData, ctx.server.isRunning(name));
    ctx.server.closeReportSocket(name);
    await untag(root, machineTag(name)).catch(() => undefined);
    return { name, parts };
  });
}

/** MAN8S_STOP_TIMEOUT from the machine's env file, read as the init reads it (its own stop budget), in seconds. */
export function stopTimeout(root: string, name: string): number {
  try {
    const text = readFileSync(envFile(root, name), "utf8").slice(0, 1024 * 1024);
    const m = /^MAN8S_STOP_TIMEOUT=(.{0,64})$/m.exec(text);
    if (m) return stopTimeoutSetting({ MAN8S_STOP_TIMEOUT: m[1] }).ms / 1000;
  } catch {
    // not readable, or a value the init refuses (it then does not start): the default
  }
  return DEFAULT_STOP_TIMEOUT_S;
}

function checkStartable(root: string, name: string): void {
  if (!isInstalled(root, name) || !existsSync(rootfsDir(root, name))) throw new AgentError(ERR.NOT_FOUND, `no installed machine '${name}' (pull it first)`);
}

export async function startCmd(a: Args, ctx: CallContext) {
  const name = checkName(a.name);
  const root = ctx.server.opts.root;
  return machineLock.run(name, async () => {
    checkStartable(root, name);
    if (ctx.server.isRunning(name)) throw new AgentError(ERR.RUNNING, `machine '${name}' is already running`);
    ctx.server.openReportSocket(name);
    const r = await ctx.server.runner.start(name);
    return { name, ...r };
  });
}

export async function stopCmd(a: Args, ctx: CallContext) {
  const name = checkName(a.name);
  const root = ctx.server.opts.root;
  return machineLock.run(name, async () => {
    const r = await ctx.server.runner.stop(name, stopTimeout(root, name));
    return { name, ...r };
  });
}

export async function restartCmd(a: Args, ctx: CallContext) {
  const name = checkName(a.name);
  const root = ctx.server.opts.root;
  return machineLock.run(name, async () => {
    checkStartable(root, name);
    const stopped = ctx.server.runner.isRunning(name) ? await ctx.server.runner.stop(name, stopTimeout(root, name)) : null;
    ctx.server.openReportSocket(name);
    const started = await ctx.server.runner.start(name);
    return { name, stopped, ...started };
  });
}

/** at most this many env entries are handed to exec (an env file is the user's, but bounded) */
const MAX_EXEC_ENV = 1024;

/** The container's PID 1 (nspawn's child) for the agent-supervised machine, or systemd's unit's. */
function containerLeader(ctx: CallContext, name: string): number {
  let nspawn = ctx.server.runner.pid(name);
  if (nspawn === null && ctx.server.runner.useSystemd) {
    const r = Bun.spawnSync(["systemctl", "show", "-p", "MainPID", "--value", `systemd-nspawn@${name}.service`], { stdout: "pipe" });
    const n = Number(r.stdout.toString().trim());
    if (Number.isInteger(n) && n > 0) nspawn = n;
  }
  if (nspawn === null) throw new AgentError(ERR.NOT_RUNNING, `machine '${name}' is not running`);
  try {
    const kids = readFileSync(`/proc/${nspawn}/task/${nspawn}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
    const pid = Number(kids.at(-1));
    if (Number.isInteger(pid) && pid > 0) return pid;
  } catch {
    // exited meanwhile
  }
  throw new AgentError(ERR.NOT_RUNNING, `machine '${name}' has no container process (yet)`);
}

/** The image's passwd/group, resolved inside the rootfs and copied (never a host file through a link). */
function userIn(rootfs: string, spec: string): AppUser {
  const tmp = mkdtempSync(join(tmpdir(), "man8s-exec-"));
  try {
    for (const f of ["passwd", "group"]) {
      const r = resolveIn(rootfs, `/etc/${f}`);
      if (r.stat?.isFile()) writeFileSync(`${tmp}/${f}`, readRegular(r.host, 4 << 20));
      else writeFileSync(`${tmp}/${f}`, "");
    }
    return resolveUser(spec, tmp);
  } catch (e) {
    if (e instanceof AgentError) throw e;
    throw new AgentError(ERR.BAD_ARGS, `user '${spec.slice(0, 80)}': ${(e as Error).message.replaceAll(tmp, "/etc")}`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * What `exec` and `shell` need to enter a running machine: its PID 1, the image's user (or `user`), the
 * app's environment (the env file's keys but the init's own MAN8S_*, and the .nspawn's Environment=),
 * the WorkingDirectory, and whether the image has /bin/sh. The CLI runs nsenter itself (root, same host),
 * so the terminal and the exit code are its own.
 */
export function enterCmd(a: Args, ctx: CallContext) {
  const name = checkName(a.name);
  const root = ctx.server.opts.root;
  const rootfs = rootfsDir(root, name);
  const leader = containerLeader(ctx, name);
  // the init (its report's peer, alive in this run) sits in the WorkingDirectory: nsenter --wd takes the
  // target's cwd, resolved inside the container (a path given to nsenter would be opened on the host)
  const s = ctx.server.state.get(name);
  const pid = s?.initAlive === true && s.hostPid ? s.hostPid : leader;
  const env: Record<string, string> = {};
  let workingDir = "/";
  const nspawn = readRegular(nspawnFile(root, name), 1024 * 1024, true);
  for (const l of nspawn.split("\n")) {
    const m = /^Environment="?([A-Za-z_][A-Za-z0-9_]*)=(.*?)"?$/.exec(l.trim());
    if (m) env[m[1]!] = m[2]!;
    const w = /^WorkingDirectory=(\/.*)$/.exec(l.trim());
    if (w) workingDir = w[1]!;
  }
  let userSpec = "";
  for (const l of readRegular(envFile(root, name), 1024 * 1024, true).split("\n")) {
    const i = l.indexOf("=");
    if (l.startsWith("#") || i <= 0) continue;
    const k = l.slice(0, i).trim();
    const v = l.slice(i + 1);
    if (k === "MAN8S_APPLICATION_USER") userSpec = v.trim();
    if (k.startsWith("MAN8S_") || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) continue;
    if (Object.keys(env).length < MAX_EXEC_ENV) env[k] = v;
  }
  const asked = optStr(a, "user", 256);
  const spec = asked ?? userSpec;
  const user = spec ? userIn(rootfs, spec) : null;
  if (user) env.HOME = user.home;
  // without /bin/sh in the image, the bundle's static busybox (bound at /man8s-init) is the shell
  const bundleShell = existsSync(`/proc/${leader}/root/man8s-init/busybox`) ? "/man8s-init/busybox" : null;
  // the bundle's launcher takes the user with its supplementary groups (nsenter -S/-G sets none)
  const launcher = existsSync(`/proc/${leader}/root/man8s-init/init`) ? "/man8s-init/init" : null;
  // exec runs in the init's cgroups (every hierarchy), as the app does
  let cgroups: string[] = [];
  try {
    cgroups = cgroupProcsFiles(pid);
  } catch {
    throw new AgentError(ERR.NOT_RUNNING, `machine '${name}' has no container process (yet)`);
  }
  return { name, pid, leader, env, workingDir, user, hasShell: existsIn(rootfs, "/bin/sh") !== null, bundleShell, launcher, cgroups };
}

function renewHooks(a: Args, ctx: CallContext, name: string): RenewHooks {
  const { progress } = streaming(ctx);
  const server = ctx.server;
  const root = server.opts.root;
  return {
    server,
    progress,
    stopTimeout: () => stopTimeout(root, name),
    install: async (rootfs, configBlob, digest, record) => {
      const o = record.options ?? {};
      if (o.bundleMode === "copy") await injectCopy(rootfs, server.opts.bundle);
      else await injectBind(rootfs, server.opts.bundle);
      const env = { ...((o.env as Record<string, string> | undefined) ?? {}), MAN8S_OCI_IMAGE_DIGEST: digest };
      return installCmd({ ...o, name, rootfs, configPath: configBlob, imageUrl: record.source, env, force: true }, ctx);
    },
  };
}

export async function renewCmd(a: Args, ctx: CallContext) {
  const name = checkName(a.name);
  const to = optStr(a, "to", 2048);
  const timeout = optInt(a, "timeout", 1, 3600) ?? 60;
  return renewMachine(ctx.server.opts.root, name, to, registryArgs(a), timeout, renewHooks(a, ctx, name));
}

export async function rollbackCmd(a: Args, ctx: CallContext) {
  const name = checkName(a.name);
  return rollbackMachine(ctx.server.opts.root, name, renewHooks(a, ctx, name));
}

/** cache prune: blobs that no machine's image and no pull of the last recentMinutes (default 60) references go (a pull in progress holds the store lock). */
export async function pruneCmd(a: Args, ctx: CallContext) {
  const root = ctx.server.opts.root;
  const recent = optInt(a, "recentMinutes", 0, 525_600) ?? RECENT_MINUTES;
  return pruneStore(root, (tag) => {
    const m = /^machine\.(.+)$/.exec(tag);
    return m !== null && existsSync(rootfsDir(root, m[1]!));
  }, recent);
}
