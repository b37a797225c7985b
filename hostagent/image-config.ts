// Reads the image's configuration from any of the shapes a host has at hand and normalises it:
//   OCI image config ({config: {Entrypoint, Cmd, ...}, history}) as `skopeo inspect --config` prints it,
//   `docker inspect` output ({Config: {...}}), or umoci's runtime bundle config.json ({ociVersion, process}).
// The runtime shape has no Entrypoint/Cmd split, no Healthcheck and keeps StopSignal only as an annotation.
import { readFileSync, statSync } from "node:fs";
import { AgentError, ERR, ioError } from "./errors.ts";
import { isPlainObject } from "./protocol.ts";

export interface ImageConfig {
  source: "image-config" | "docker-inspect" | "runtime-spec";
  entrypoint: string[];
  cmd: string[];
  env: [string, string][];
  workingDir: string;
  stopSignal?: string;
  healthcheck?: Record<string, unknown>;
  user?: string;
  shell?: string[];
  /** container paths the image declares as volumes (config.Volumes keys) */
  volumes: string[];
  /** config.ExposedPorts keys: "80/tcp", "53/udp", "8080" (tcp) */
  exposedPorts: string[];
  labels: Record<string, string>;
  history: string[];
}

const MAX_CONFIG = 4 * 1024 * 1024;
/** bounds on the map-shaped fields, so a hostile config cannot make render/install loop over millions */
export const MAX_VOLUMES = 64;
const MAX_PORTS = 1024;

export function loadConfigFile(path: string): ImageConfig {
  let text: string;
  try {
    if (statSync(path).size > MAX_CONFIG) throw new AgentError(ERR.BAD_CONFIG, `${path} is larger than ${MAX_CONFIG} bytes`);
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw ioError(e, `reading image config ${path}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new AgentError(ERR.BAD_CONFIG, `${path}: not JSON: ${(e as Error).message}`);
  }
  return normaliseConfig(json, path);
}

const bad = (where: string, msg: string) => new AgentError(ERR.BAD_CONFIG, `${where}: ${msg}`);

function strList(v: unknown, where: string, field: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) throw bad(where, `${field} must be a list of strings`);
  return v as string[];
}

function envPairs(v: unknown, where: string, field: string): [string, string][] {
  return strList(v, where, field).map((e) => {
    const i = e.indexOf("=");
    return i < 0 ? [e, ""] : [e.slice(0, i), e.slice(i + 1)];
  });
}

function optString(v: unknown, where: string, field: string): string | undefined {
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v !== "string") throw bad(where, `${field} must be a string`);
  return v;
}

export function normaliseConfig(json: unknown, where = "config"): ImageConfig {
  if (!isPlainObject(json)) throw bad(where, "must be a JSON object");
  if (isPlainObject(json.process) || typeof json.ociVersion === "string") {
    const p = json.process;
    if (!isPlainObject(p)) throw bad(where, "runtime config without a process object");
    const ann = isPlainObject(json.annotations) ? json.annotations : {};
    const labels: Record<string, string> = {};
    for (const [k, v] of Object.entries(ann)) if (typeof v === "string") labels[k] = v;
    return {
      source: "runtime-spec",
      entrypoint: [],
      cmd: strList(p.args, where, "process.args"),
      env: envPairs(p.env, where, "process.env"),
      workingDir: optString(p.cwd, where, "process.cwd") ?? "/",
      stopSignal: optString(ann["org.opencontainers.image.stopSignal"], where, "annotations.org.opencontainers.image.stopSignal"),
      volumes: [],
      exposedPorts: [],
      labels,
      history: [],
    };
  }
  const inner = isPlainObject(json.config) ? json.config : isPlainObject(json.Config) ? json.Config : null;
  if (!inner) {
    if ("config" in json || "Config" in json) return emptyImage(json, where);
    throw bad(where, "neither an image config ({config: ...}) nor a runtime config ({process: ...})");
  }
  const hc = inner.Healthcheck;
  if (hc !== undefined && hc !== null && !isPlainObject(hc)) throw bad(where, "Healthcheck must be an object");
  const labels: Record<string, string> = {};
  if (isPlainObject(inner.Labels)) for (const [k, v] of Object.entries(inner.Labels)) if (typeof v === "string") labels[k] = v;
  const history: string[] = [];
  if (Array.isArray(json.history)) {
    for (const h of json.history) if (isPlainObject(h) && typeof h.created_by === "string") history.push(h.created_by);
  }
  const shell = strList(inner.Shell, where, "Shell");
  return {
    source: isPlainObject(json.Config) ? "docker-inspect" : "image-config",
    entrypoint: strList(inner.Entrypoint, where, "Entrypoint"),
    cmd: strList(inner.Cmd, where, "Cmd"),
    env: envPairs(inner.Env, where, "Env"),
    workingDir: optString(inner.WorkingDir, where, "WorkingDir") ?? "/",
    stopSignal: optString(inner.StopSignal, where, "StopSignal"),
    healthcheck: (hc as Record<string, unknown> | undefined) ?? undefined,
    user: optString(inner.User, where, "User"),
    shell: shell.length > 0 ? shell : undefined,
    volumes: mapKeys(inner.Volumes, where, "Volumes", MAX_VOLUMES),
    exposedPorts: mapKeys(inner.ExposedPorts, where, "ExposedPorts", MAX_PORTS),
    labels,
    history,
  };
}

/** The keys of a Docker "set" ({"/data": {}}), bounded in count. */
function mapKeys(v: unknown, where: string, field: string, max: number): string[] {
  if (v === undefined || v === null) return [];
  if (!isPlainObject(v)) throw bad(where, `${field} must be an object`);
  const keys = Object.keys(v);
  if (keys.length > max) throw bad(where, `${field} has ${keys.length} entries; at most ${max} are accepted`);
  return keys;
}

/** An image config whose config is null (scratch images with nothing set). */
function emptyImage(_json: Record<string, unknown>, _where: string): ImageConfig {
  return { source: "image-config", entrypoint: [], cmd: [], env: [], workingDir: "/", volumes: [], exposedPorts: [], labels: {}, history: [] };
}
