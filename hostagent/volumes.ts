// Volumes: every path the image declares in config.Volumes (and any path given with --volume) becomes a
// Bind= of a host directory or file, so data outlives the rootfs. Where it lives is mbctl's layout:
//   data   -> <root>/var/lib/man8machine_storage/NAME/<path>   (the default)
//   config -> <root>/var/lib/man8machine_configs/NAME/<path>
//   /host/path -> that path;  skip -> no bind (the data stays in the rootfs).
// At install a target that does not exist yet is seeded from the image's content at that path (owners,
// modes and links kept, so the image's user owns it inside the container under PrivateUsers=pick + :idmap);
// a target that exists is never touched: `install --force` keeps every byte of existing data.
import { existsSync, lstatSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { copyInto, removeStaleTemps } from "./copytree.ts";
import { AgentError, ERR, ioError } from "./errors.ts";
import { MAX_VOLUMES } from "./image-config.ts";
import { CONFIGS_DIR, RESERVED_IN_CONFIG_DIR, STORAGE_DIR, checkAbsPath } from "./layout.ts";
import { resolveIn } from "./rootfs.ts";

export type VolumeMode = "data" | "config" | "skip" | "host";

export interface VolumePlan {
  /** the path inside the container */
  path: string;
  mode: VolumeMode;
  /** host side of the bind; absent for skip */
  host?: string;
  /** declared by the image (config.Volumes) or only given with --volume */
  declared: boolean;
}

export interface VolumeResult extends VolumePlan {
  /** what install did with the host side: seeded from the image, made empty, or kept as it was */
  seeded?: "image" | "empty" | "kept";
}

/** In-container paths a volume may not cover: the kernel's, nspawn's and ours. */
const FORBIDDEN = ["/proc", "/sys", "/dev", "/man8s-init", "/man8env.env", "/run/man8s-agent", "/run/man8s", "/run/host", "/run/systemd"];
/** characters a Bind= line cannot carry (nspawn splits on ':' and whitespace, unquotes '"' and '\') */
const BIND_UNSAFE = /[:\s"\\\x00-\x1f\x7f]/;

/** A container path from the image or the user: absolute, normalised, one Bind= field, not ours. */
export function checkVolumePath(v: string, code: string, where: string): string {
  if (v.length > 1024) throw new AgentError(code, `${where}: volume path is longer than 1024 characters`);
  let p: string;
  try {
    p = checkAbsPath(v, where);
  } catch (e) {
    throw new AgentError(code, (e as Error).message);
  }
  if (p === "/") throw new AgentError(code, `${where}: a volume cannot be the container's root`);
  if (BIND_UNSAFE.test(p)) throw new AgentError(code, `${where}: '${p.slice(0, 200)}' contains ':', whitespace, a quote, a backslash or a control character, which a Bind= line cannot carry`);
  for (const f of FORBIDDEN) {
    if (p === f || p.startsWith(`${f}/`) || f.startsWith(`${p}/`)) throw new AgentError(code, `${where}: '${p}' would cover ${f}, which nspawn or man8s mount`);
  }
  return p;
}

/** `volumes` request arg: {"/path": "data"|"config"|"skip"|"/host/path"} */
export function parseVolumeArgs(a: Record<string, unknown> | undefined): Map<string, { mode: VolumeMode; host?: string }> {
  const out = new Map<string, { mode: VolumeMode; host?: string }>();
  if (!a) return out;
  const entries = Object.entries(a);
  if (entries.length > MAX_VOLUMES) throw new AgentError(ERR.BAD_ARGS, `volumes: at most ${MAX_VOLUMES} entries`);
  for (const [k, v] of entries) {
    const path = checkVolumePath(k, ERR.BAD_ARGS, `volumes '${k.slice(0, 200)}'`);
    if (typeof v !== "string") throw new AgentError(ERR.BAD_ARGS, `volumes.${path} must be data, config, skip or an absolute host path`);
    if (v === "data" || v === "config" || v === "skip") out.set(path, { mode: v });
    else if (v.startsWith("/")) {
      const host = checkAbsPath(v, `volumes.${path}`);
      if (host === "/" || BIND_UNSAFE.test(host)) throw new AgentError(ERR.BAD_PATH, `volumes.${path}: host path '${host.slice(0, 200)}' cannot be a Bind= source`);
      out.set(path, { mode: "host", host });
    } else throw new AgentError(ERR.BAD_ARGS, `volumes.${path} must be data, config, skip or an absolute host path, got '${v.slice(0, 80)}'`);
  }
  return out;
}

export function planVolumes(root: string, name: string, declared: string[], args: Map<string, { mode: VolumeMode; host?: string }>): VolumePlan[] {
  const plans = new Map<string, VolumePlan>();
  for (const d of declared) {
    const path = checkVolumePath(d, ERR.BAD_CONFIG, `config.Volumes '${d.slice(0, 200)}'`);
    plans.set(path, { path, mode: "data", declared: true });
  }
  for (const [path, v] of args) plans.set(path, { path, mode: v.mode, host: v.host, declared: plans.has(path) });
  const out: VolumePlan[] = [];
  for (const p of plans.values()) {
    if (p.mode === "data") p.host = join(root, STORAGE_DIR, name, p.path);
    else if (p.mode === "config") {
      const first = p.path.split("/")[1]!;
      if (RESERVED_IN_CONFIG_DIR.has(first) || first.startsWith(".")) {
        throw new AgentError(ERR.BAD_ARGS, `volume ${p.path} as config would land on the agent's own ${CONFIGS_DIR}/${name}/${first}; choose data or a host path`);
      }
      p.host = join(root, CONFIGS_DIR, name, p.path);
    }
    out.push(p);
  }
  // nested volumes bind in order, the outer first (nspawn mounts Bind= lines in file order)
  out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return out;
}

/**
 * Create every missing host side, seeded from the image. Existing targets are kept untouched. The copy
 * goes to a temporary sibling first and is renamed into place, so a failed or killed seed leaves no
 * half-filled target that a later install would then "keep".
 */
export function seedVolumes(rootfs: string, plans: VolumePlan[]): { results: VolumeResult[]; undo: () => void } {
  const out: VolumeResult[] = [];
  // what this call made (the first directory of each mkdir -p, and each seeded target): a failed install
  // removes exactly these, newest first; data that existed before is never in the list
  const made: string[] = [];
  const undo = () => {
    for (const p of made.splice(0).reverse()) rmSync(p, { recursive: true, force: true });
  };
  try {
    for (const p of plans) {
      if (p.mode === "skip" || !p.host) {
        out.push({ ...p });
        continue;
      }
      if (p.mode !== "host") checkNoLinks(p.host.slice(0, p.host.length - p.path.length), p.host);
      removeStaleTemps(p.host); // a seed a killed install left half-made
      if (existsSync(p.host) || isLink(p.host)) {
        out.push({ ...p, seeded: "kept" });
        continue;
      }
      // resolve inside the rootfs: a symlink in the image never leads to the host
      const src = resolveIn(rootfs, p.path);
      try {
        const first = mkdirSync(dirname(p.host), { recursive: true, mode: 0o755 });
        if (first) made.push(first);
        if (src.stat && (src.stat.isDirectory() || src.stat.isFile())) {
          copyInto(src.host, p.host);
          made.push(p.host);
          out.push({ ...p, seeded: "image" });
        } else {
          mkdirSync(p.host, { mode: 0o755 });
          made.push(p.host);
          out.push({ ...p, seeded: "empty" });
        }
      } catch (e) {
        throw ioError(e, `seeding volume ${p.path} at ${p.host}`);
      }
    }
  } catch (e) {
    undo();
    throw e;
  }
  return { results: out, undo };
}

/**
 * A data/config volume's host path must not pass through a symlink below the container's directory:
 * volumes are writable by the container, so a link there (data/sub -> /etc) was possibly made by it, and
 * following it would seed into, or bind, a host directory.
 */
function checkNoLinks(base: string, host: string): void {
  // base: the container's storage or config directory (the host path minus the volume's path)
  let cur = base;
  for (const part of host.slice(base.length).split("/").filter((x) => x.length > 0)) {
    cur = `${cur}/${part}`;
    let st;
    try {
      st = lstatSync(cur);
    } catch {
      return; // the rest does not exist yet: it is made here, as directories
    }
    if (st.isSymbolicLink()) throw new AgentError(ERR.BAD_PATH, `volume host path ${host} goes through the symlink ${cur}; refusing to follow it (a container may have made it)`);
  }
}

/** The host sides of the Bind= lines of a rendered .nspawn (for recovery after a killed install). */
export function bindSources(nspawn: string): string[] {
  const out: string[] = [];
  for (const line of nspawn.split("\n")) {
    const m = /^\s*Bind=-?([^:\s]+)/.exec(line);
    if (m && m[1]!.startsWith("/")) out.push(m[1]!);
  }
  return out;
}

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}
