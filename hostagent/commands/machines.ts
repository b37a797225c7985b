// pull, oci-download, machines (list), remove: the machine lifecycle commands (docs/machines.md). Long ones
// stream progress as events {id, event: {type: "progress", step, message}} before their one reply; a
// client that goes away cancels the pull (its child is killed and the machine's paths are removed).
import { containerAddress } from "../address.ts";
import { optBool, optMap, optStr, optStrMap } from "../args.ts";
import { AgentError, ERR } from "../errors.ts";
import { type Cancel, machineTag, parseSource, type RegistryOptions, untag } from "../image-store.ts";
import { injectBind, injectCopy } from "../inject.ts";
import { isInstalled } from "../install.ts";
import { CONFIGS_DIR, MACHINES_DIR, checkAbsPath, checkName, envFile, rootfsDir } from "../layout.ts";
import { download, machineExists, machineLock, pullMachine, readImageRecord, removeMachine } from "../machines.ts";
import { encodeFrame } from "../protocol.ts";
import type { CallContext } from "./index.ts";
import { installCmd } from "./image.ts";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

type Args = Record<string, unknown>;

function registryArgs(a: Args): RegistryOptions {
  const authfile = a.authfile === undefined || a.authfile === null ? undefined : checkAbsPath(a.authfile, "authfile");
  const certDir = a.certDir === undefined || a.certDir === null ? undefined : checkAbsPath(a.certDir, "certDir");
  return { tlsVerify: optBool(a, "tlsVerify"), authfile, certDir };
}

/** Progress events to the caller, and cancellation when the caller's connection closes. */
function streaming(ctx: CallContext): { progress: (step: string, message: string) => void; cancel: Cancel } {
  const cancel: Cancel = { cancelled: false };
  ctx.conn.cleanups.push(() => {
    cancel.cancelled = true;
    cancel.onCancel?.();
  });
  const progress = (step: string, message: string) => ctx.conn.send(encodeFrame({ id: ctx.id, event: { type: "progress", step, message } }));
  return { progress, cancel };
}

export async function pullCmd(a: Args, ctx: CallContext) {
  const name = checkName(a.name);
  const source = parseSource(a.source);
  const registry = registryArgs(a);
  // the install arguments are checked now, before anything is fetched
  optMap(a, "volumes");
  optStrMap(a, "env");
  optStr(a, "ready", 2048);
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
      install: async (rootfs, configBlob, pulled) => {
        const bundle = server.opts.bundle;
        if (bundleMode === "bind") await injectBind(rootfs, bundle);
        else await injectCopy(rootfs, bundle);
        const env = { ...(optStrMap(a, "env") ?? {}), MAN8S_OCI_IMAGE_DIGEST: pulled.digest };
        return installCmd({ ...a, name, rootfs, configPath: configBlob, config: undefined, imageUrl: source.given, env, bundleMode, force: false }, ctx);
      },
    });
    let started: unknown = null;
    if (a.start === true) {
      progress("start", `starting ${name}`);
      started = await server.runner.start(name);
    }
    return { name, started, source: source.given, digest: r.record.digest, rootfs: r.rootfs, layers: r.pulled.layers, reused: r.pulled.reused, fetchedBytes: r.pulled.fetchedBytes, seconds: r.seconds, install: r.installed };
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

/** MAN8S_STOP_TIMEOUT from the machine's env file (the init's own stop budget), default 10 s. */
function stopTimeout(root: string, name: string): number {
  try {
    const text = readFileSync(envFile(root, name), "utf8").slice(0, 1024 * 1024);
    const m = /^MAN8S_STOP_TIMEOUT=(\d{1,3})\s*$/m.exec(text);
    if (m) return Math.min(Number(m[1]), 300);
  } catch {
    // not readable: the default
  }
  return 10;
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
