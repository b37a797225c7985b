// Where things live, mbctl-compatible (docs/notes.md §11), under a configurable root so tests
// can use a temporary directory as "/". All functions take already-validated names.
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { AgentError, ERR } from "./errors.ts";

export const CONFIGS_DIR = "var/lib/man8machine_configs";
export const STORAGE_DIR = "var/lib/man8machine_storage";
export const NSPAWN_DIR = "etc/systemd/nspawn";
/** rootfs of each machine (mbctl), and systemd's directory where a link to it makes `machinectl` find it */
export const MACHINES_DIR = "var/lib/man8machines";
export const SYSTEM_MACHINES_DIR = "var/lib/machines";
/** the content-addressed image store (one OCI layout) and the journals of pulls in progress */
export const IMAGES_DIR = "var/lib/man8s/images";
export const PULLS_DIR = "var/lib/man8s/pulls";
export const RENEWS_DIR = "var/lib/man8s/renews";
export const DEFAULT_SOCKET = "/run/man8s/agent.sock";

export { IN_CONTAINER_BUNDLE, IN_CONTAINER_ENV, IN_CONTAINER_REPORT_DIR, IN_CONTAINER_REPORT_SOCKET } from "../common/paths.ts";

export const configDir = (root: string, name: string) => join(root, CONFIGS_DIR, name);
export const envFile = (root: string, name: string) => join(configDir(root, name), "man8env.env");
export const nspawnFile = (root: string, name: string) => join(configDir(root, name), "container.nspawn");
export const nspawnLink = (root: string, name: string) => join(root, NSPAWN_DIR, `${name}.nspawn`);
/** host side of the per-container report directory (holds report.sock, created by the agent) */
export const rootfsDir = (root: string, name: string) => join(root, MACHINES_DIR, name);
export const machineLink = (root: string, name: string) => join(root, SYSTEM_MACHINES_DIR, name);
export const storageDir = (root: string, name: string) => join(root, STORAGE_DIR, name);
/** what the agent records of a machine's image (source, digest), beside its config */
export const imageRecord = (root: string, name: string) => join(configDir(root, name), "image.json");
export const reportDir = (root: string, name: string) => join(configDir(root, name), "agent");
/** the durable copy of the container's latest status record, written by the agent (outlives the container) */
export const statusFile = (root: string, name: string) => join(configDir(root, name), "status.json");
export const reportSocket = (root: string, name: string) => join(reportDir(root, name), "report.sock");

/** names in a container's config directory that belong to the agent (a `config` volume may not use them) */
export const RESERVED_IN_CONFIG_DIR = new Set(["man8env.env", "container.nspawn", "agent", "status.json", "current", "generations", "image.json"]);

// systemd machine names are host names: letters, digits, '-', '_', '.'; at most 64 characters.
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function checkName(v: unknown, field = "name"): string {
  if (typeof v !== "string") throw new AgentError(ERR.BAD_ARGS, `${field} must be a string`);
  if (!NAME_RE.test(v) || v.includes("..") || v.endsWith(".")) {
    throw new AgentError(ERR.BAD_NAME, `${field} '${v.slice(0, 80)}' is not a valid machine name ([A-Za-z0-9][A-Za-z0-9_.-]{0,63}, no '..')`);
  }
  return v;
}

/** An absolute, normalised host path: no relative paths, no '.'/'..' segments, no NUL. */
export function checkAbsPath(v: unknown, field: string): string {
  if (typeof v !== "string" || v.length === 0) throw new AgentError(ERR.BAD_ARGS, `${field} must be a non-empty string`);
  if (v.includes("\0")) throw new AgentError(ERR.BAD_PATH, `${field} contains a NUL byte`);
  if (!v.startsWith("/")) throw new AgentError(ERR.BAD_PATH, `${field} must be an absolute path, got '${v}'`);
  const segs = v.split("/");
  if (segs.some((s) => s === "." || s === "..")) throw new AgentError(ERR.BAD_PATH, `${field} must not contain '.' or '..' segments: '${v}'`);
  const norm = v.replace(/\/{2,}/g, "/");
  return norm.length > 1 && norm.endsWith("/") ? norm.slice(0, -1) : norm;
}

/** The names of the container directories under the root (entries that are not valid names are skipped). */
export function containerNames(root: string): string[] {
  let names: string[];
  try {
    names = readdirSync(join(root, CONFIGS_DIR));
  } catch {
    return [];
  }
  return names.filter((n) => {
    try {
      checkName(n);
      return true;
    } catch {
      return false;
    }
  });
}
