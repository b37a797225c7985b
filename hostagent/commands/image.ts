// classify, render/plan, install, inject: the commands that read an image and write a container.
import { lstatSync } from "node:fs";
import { containerAddress } from "../address.ts";
import { optBool, optEnum, optInt, optMap, optStr, optStrMap } from "../args.ts";
import { classify, type Classification } from "../classify.ts";
import { AgentError, ERR } from "../errors.ts";
import { loadConfigFile, normaliseConfig, type ImageConfig } from "../image-config.ts";
import { injectBind, injectCopy } from "../inject.ts";
import { installFiles } from "../install.ts";
import { checkAbsPath, checkName } from "../layout.ts";
import { applyTemplate, TEMPLATES } from "../template.ts";
import { prepareProtected, type Protected } from "../protect.ts";
import { readyDefault, renderFiles, type Rendered } from "../render.ts";
import { HEALTH_ACTIONS } from "../../common/health-on-failure.ts";
import { DEFAULT_STOP_TIMEOUT_S, MAX_STOP_TIMEOUT_S } from "../../common/settings.ts";
import { parseVolumeArgs, planVolumes, seedVolumes, type VolumePlan, type VolumeResult } from "../volumes.ts";
import type { CallContext } from "./index.ts";

type Args = Record<string, unknown>;

function rootfsArg(a: Args): string {
  const rootfs = checkAbsPath(a.rootfs, "rootfs");
  let st;
  try {
    st = lstatSync(rootfs);
  } catch {
    throw new AgentError(ERR.NOT_FOUND, `rootfs ${rootfs} does not exist`);
  }
  if (!st.isDirectory()) throw new AgentError(ERR.BAD_PATH, `rootfs ${rootfs} is not a directory (symlinks are not followed)`);
  return rootfs;
}

/** The image config: inline as `config` (a map) or read from `configPath` (an absolute path). */
function configArg(a: Args): ImageConfig {
  const inline = optMap(a, "config");
  const path = a.configPath === undefined || a.configPath === null ? undefined : checkAbsPath(a.configPath, "configPath");
  if (inline && path) throw new AgentError(ERR.BAD_ARGS, "give config or configPath, not both");
  if (inline) return normaliseConfig(inline, "config");
  if (path) return loadConfigFile(path);
  throw new AgentError(ERR.BAD_ARGS, "config (a map) or configPath (an absolute path) is required");
}

export function classifyCmd(a: Args): Classification {
  return classify(rootfsArg(a), configArg(a));
}

interface Plan {
  name: string;
  rootfs: string;
  cls: Classification;
  rendered: Rendered;
  cfg: ImageConfig;
  volumes: VolumePlan[];
  ready: { value: string; why: string };
}

function plan(a: Args, ctx: CallContext): Plan {
  const name = checkName(a.name);
  const rootfs = rootfsArg(a);
  const cfg = configArg(a);
  const template = optEnum(a, "template", TEMPLATES);
  const cls = template ? applyTemplate(classify(rootfs, cfg), template) : classify(rootfs, cfg);
  let ygg = optStr(a, "yggdrasilAddress", 64);
  const prefix = optStr(a, "yggPrefix", 64) ?? ctx.server.opts.yggPrefix;
  if (!ygg && prefix) ygg = containerAddress(prefix, name);
  const bundleMode = optEnum(a, "bundleMode", ["bind", "copy"] as const) ?? "bind";
  const bundle = a.bundle === undefined || a.bundle === null ? ctx.server.opts.bundle : checkAbsPath(a.bundle, "bundle");
  const volumes = planVolumes(ctx.server.opts.root, name, cfg.volumes, parseVolumeArgs(optMap(a, "volumes")));
  const readyArg = optStr(a, "ready", 2048);
  const ready = readyArg !== undefined ? { value: readyArg.trim(), why: "ready (--ready)" } : readyDefault(cls, cfg);
  const rendered = renderFiles({
    name,
    root: ctx.server.opts.root,
    cls,
    cfg,
    yggdrasilAddress: ygg,
    imageUrl: optStr(a, "imageUrl"),
    env: optStrMap(a, "env"),
    stopTimeout: optInt(a, "stopTimeout", 1, MAX_STOP_TIMEOUT_S) ?? DEFAULT_STOP_TIMEOUT_S,
    bridge: optBool(a, "privateNetwork") ? null : (optStr(a, "bridge", 15) ?? "srvgrp0"),
    privateUsers: optBool(a, "privateUsers") ?? true,
    bindBundle: bundleMode === "bind" ? bundle : undefined,
    ready: readyArg,
    // the init's own list: it refuses anything else (65), so the agent refuses it first
    healthOnFailure: optEnum(a, "healthOnFailure", HEALTH_ACTIONS),
    volumes,
  });
  return { name, rootfs, cls, rendered, cfg, volumes, ready };
}

export function renderCmd(a: Args, ctx: CallContext) {
  const { name, cls, rendered, volumes, ready } = plan(a, ctx);
  return { name, classification: cls, template: rendered.template, nspawn: rendered.nspawn, env: rendered.env, volumes, ready };
}

export function installCmd(a: Args, ctx: CallContext) {
  const force = optBool(a, "force") ?? false;
  const p = plan(a, ctx);
  let volumes: VolumeResult[] = [];
  let prot: Protected[] = [];
  const inst = installFiles(ctx.server.opts.root, p.name, p.rendered, force, {
    rootfs: p.rootfs,
    // after the checks, before the switch: what the new files bind must exist when they become current
    prepare: () => {
      prot = prepareProtected(p.rootfs);
      const seeded = seedVolumes(p.rootfs, p.volumes);
      volumes = seeded.results;
      return seeded.undo; // a failed install removes only what it created: existing data is never touched
    },
  });
  const reportSocket = ctx.server.openReportSocket(p.name);
  return { name: p.name, kind: p.cls.kind, mode: p.cls.mode, template: p.rendered.template, user: p.cls.user ?? null, ready: p.ready, ...inst, volumes, protected: prot, reportSocket };
}

export async function injectCmd(a: Args, ctx: CallContext) {
  const rootfs = rootfsArg(a);
  const mode = optEnum(a, "mode", ["bind", "copy"] as const) ?? "copy";
  const bundle = a.bundle === undefined || a.bundle === null ? ctx.server.opts.bundle : checkAbsPath(a.bundle, "bundle");
  const r = mode === "bind" ? await injectBind(rootfs, bundle) : await injectCopy(rootfs, bundle);
  return { ...r, protected: prepareProtected(rootfs) };
}
