// Machines: from an image reference to an installed container and back (issue 13), in mbctl's layout:
//   rootfs   <root>/var/lib/man8machines/NAME      (+ link <root>/var/lib/machines/NAME -> it)
//   config   <root>/var/lib/man8machine_configs/NAME/...  (install.ts; + image.json: source and digest)
//   storage  <root>/var/lib/man8machine_storage/NAME/...  (volumes)
// A pull is all or nothing: before it makes any path it writes a journal <root>/var/lib/man8s/pulls/NAME.json;
// the journal goes only once the machine is complete. A journal found later (the agent was killed, the
// machine rebooted) means an unfinished pull: every path of that NAME is removed (storage only if the pull
// created it). Operations on one NAME are serialised (machineLock); the image store has its own lock.
import { randomBytes } from "node:crypto";
import { type LayerProgress, layerLine } from "./pull-progress.ts";
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { log } from "../common/log.ts";
import { AgentError, ERR, ioError } from "./errors.ts";
import { type Cancel, KeyedLock, machineTag, parseSource, pullToStore, type Pulled, type RegistryOptions, type Source, unpack, untag } from "./image-store.ts";
import { writeAtomic } from "./install.ts";
import { MACHINES_DIR, PULLS_DIR, checkName, configDir, imageRecord, machineLink, nspawnLink, rootfsDir, storageDir } from "./layout.ts";

/** One operation at a time per machine name (pull, remove, start, stop). */
export const machineLock = new KeyedLock();

export interface ImageRecord {
  source: string;
  ref: string;
  digest: string;
  pulledAt: string;
  /** the install options of the pull (volumes, env, ready, network...), re-used by renew */
  options?: Record<string, unknown>;
}

interface Journal {
  name: string;
  storageExisted: boolean;
  at: string;
}

const journalPath = (root: string, name: string) => join(root, PULLS_DIR, `${name}.json`);

function lexists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** The paths that make a machine, in the order remove reports them. */
export function machineParts(root: string, name: string): { part: string; path: string }[] {
  return [
    { part: "rootfs", path: rootfsDir(root, name) },
    { part: "previous rootfs", path: join(root, MACHINES_DIR, `.${name}.prev`) },
    { part: "machines link", path: machineLink(root, name) },
    { part: "nspawn link", path: nspawnLink(root, name) },
    { part: "config", path: configDir(root, name) },
    { part: "storage", path: storageDir(root, name) },
  ];
}

/** Whether NAME exists as a machine (any of its paths but storage, which --keep-data may leave). */
export function machineExists(root: string, name: string): string | null {
  for (const { part, path } of machineParts(root, name)) if (part !== "storage" && part !== "previous rootfs" && lexists(path)) return path;
  return null;
}

/** Undo an unfinished pull of NAME (its journal says so); returns what was removed. */
export function recoverPull(root: string, name: string): string[] {
  const jp = journalPath(root, name);
  let j: Journal;
  try {
    j = JSON.parse(readFileSync(jp, "utf8")) as Journal;
  } catch {
    if (lexists(jp)) rmSync(jp, { force: true });
    return [];
  }
  const removed: string[] = [];
  for (const { part, path } of machineParts(root, name)) {
    if (part === "storage" && j.storageExisted !== false) continue;
    if (lexists(path)) {
      rmSync(path, { recursive: true, force: true });
      removed.push(path);
    }
  }
  removed.push(...removeUnpackTemps(root, name));
  rmSync(jp, { force: true });
  return removed;
}

/** The bundle directories (.NAME.pull-XXXX) an unpack in progress works in. */
function removeUnpackTemps(root: string, name: string): string[] {
  const dir = join(root, MACHINES_DIR);
  const out: string[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return out;
  }
  for (const n of names) {
    if (n.startsWith(`.${name}.pull-`) && /^\.[^/]+\.pull-[0-9a-f]{12}$/.test(n)) {
      rmSync(join(dir, n), { recursive: true, force: true });
      out.push(join(dir, n));
    }
  }
  return out;
}

/** At agent start: every journal left by a killed pull. */
export function recoverAllPulls(root: string): void {
  let names: string[] = [];
  try {
    names = readdirSync(join(root, PULLS_DIR));
  } catch {
    return;
  }
  for (const f of names) {
    const m = /^(.+)\.json$/.exec(f);
    if (!m) continue;
    try {
      checkName(m[1]);
    } catch {
      continue;
    }
    const removed = recoverPull(root, m[1]!);
    log(`recovered ${m[1]} after an interrupted pull: removed ${removed.join(", ") || "nothing"}`);
  }
}

export function readImageRecord(root: string, name: string): ImageRecord | null {
  try {
    const p = imageRecord(root, name);
    if (lstatSync(p).size > 64 * 1024) return null;
    return JSON.parse(readFileSync(p, "utf8")) as ImageRecord;
  } catch {
    return null;
  }
}

export interface PullOptions {
  name: string;
  source: Source;
  registry: RegistryOptions;
  progress: (step: string, message: string, layer?: LayerProgress) => void;
  cancel: Cancel;
  /** installs the unpacked rootfs (classify, render, install, inject): the agent's install path */
  install: (rootfs: string, configBlob: string, pulled: Pulled) => Promise<unknown>;
  /** recorded in image.json for renew */
  options?: Record<string, unknown>;
  /** runs once the machine exists, still under its lock (pull --start) */
  after?: () => Promise<unknown>;
}

/** pull: store, unpack, install, link; all or nothing. */
export async function pullMachine(root: string, o: PullOptions): Promise<{ name: string; rootfs: string; pulled: Pulled; installed: unknown; record: ImageRecord; seconds: number; started: unknown }> {
  const { name } = o;
  return machineLock.run(name, async () => {
    const t0 = performance.now();
    recoverPull(root, name);
    const existing = machineExists(root, name);
    if (existing) throw new AgentError(ERR.EXISTS, `machine '${name}' already exists (${existing}); remove it first`);
    const jp = journalPath(root, name);
    mkdirSync(dirname(jp), { recursive: true, mode: 0o700 });
    writeAtomic(jp, `${JSON.stringify({ name, storageExisted: lexists(storageDir(root, name)), at: new Date().toISOString() } satisfies Journal)}\n`, 0o600, { durable: true }); // on disk before anything it undoes
    const rootfs = rootfsDir(root, name);
    let bundle = "";
    try {
      o.progress("pull", `pulling ${o.source.given}`);
      const pulled = await pullToStore(root, o.source, machineTag(name), o.registry, (l) => o.progress("pull", l), o.cancel, (p) => o.progress("layer", layerLine(p), p));
      o.progress("pull", `manifest ${pulled.digest} (${pulled.layers} layers, ${pulled.reused} already stored, ${pulled.fetchedBytes} bytes of new layers)`);
      mkdirSync(dirname(rootfs), { recursive: true, mode: 0o755 });
      bundle = join(dirname(rootfs), `.${name}.pull-${randomBytes(6).toString("hex")}`);
      o.progress("unpack", `unpacking into ${rootfs}`);
      await unpack(root, pulled.tag, bundle, o.cancel);
      renameSync(`${bundle}/rootfs`, rootfs);
      rmSync(bundle, { recursive: true, force: true });
      o.progress("install", "classifying, rendering and installing");
      const installed = await o.install(rootfs, pulled.configBlob, pulled);
      if (o.cancel.cancelled) throw new AgentError(ERR.CANCELLED, `pull of ${o.source.given} cancelled`);
      const link = machineLink(root, name);
      mkdirSync(dirname(link), { recursive: true, mode: 0o755 });
      symlinkSync(relative(dirname(link), rootfs), link);
      const record: ImageRecord = { source: o.source.given, ref: o.source.ref, digest: pulled.digest, pulledAt: new Date().toISOString(), ...(o.options ? { options: o.options } : {}) };
      writeAtomic(imageRecord(root, name), `${JSON.stringify(record)}\n`, 0o644);
      rmSync(jp, { force: true }); // from here on the machine exists
      const seconds = (performance.now() - t0) / 1000;
      // a failed start leaves the machine installed (it exists; `start` can be retried)
      const started = o.after ? await o.after() : null;
      return { name, rootfs, pulled, installed, record, seconds, started };
    } catch (e) {
      try {
        const removed = recoverPull(root, name);
        if (bundle) rmSync(bundle, { recursive: true, force: true });
        o.progress("undo", `removed ${removed.length ? removed.join(", ") : "nothing"}`);
      } catch (u) {
        log(`pull ${name}: undo failed: ${(u as Error).message}`);
      }
      throw ioError(e, `pulling ${name}`);
    }
  });
}

/** oci download: pull + unpack only, into PATH (which must not exist): PATH is the rootfs. */
export async function download(root: string, source: Source, path: string, registry: RegistryOptions, progress: (s: string, m: string, layer?: LayerProgress) => void, cancel: Cancel) {
  if (lexists(path)) throw new AgentError(ERR.EXISTS, `${path} already exists`);
  const tag = `download.${randomBytes(6).toString("hex")}`;
  const bundle = join(dirname(path), `.${path.split("/").pop()}.pull-${randomBytes(6).toString("hex")}`);
  try {
    const pulled = await pullToStore(root, source, tag, registry, (l) => progress("pull", l), cancel, (p) => progress("layer", layerLine(p), p));
    progress("unpack", `unpacking into ${path}`);
    await unpack(root, tag, bundle, cancel);
    renameSync(`${bundle}/rootfs`, path);
    renameSync(`${bundle}/config.json`, `${path}.config.json`);
    return { path, config: `${path}.config.json`, digest: pulled.digest, layers: pulled.layers, reused: pulled.reused, fetchedBytes: pulled.fetchedBytes };
  } finally {
    rmSync(bundle, { recursive: true, force: true });
    await untag(root, tag).catch((e) => log(`download: ${(e as Error).message}`));
  }
}

export { parseSource };

/** Whether a machine runs: nspawn's image lock (mbctl's test) or a leader the caller knows. */
export function lockedByNspawn(root: string, name: string): boolean {
  return existsSync(join(root, MACHINES_DIR, `.#${name}.lck`)) || existsSync(join(root, "var/lib/machines", `.#${name}.lck`));
}

/** remove: every part, each reported; storage kept with keepData. */
export function removeMachine(root: string, name: string, keepData: boolean, running: boolean): { part: string; path: string; action: "removed" | "absent" | "kept" }[] {
  if (running || lockedByNspawn(root, name)) throw new AgentError(ERR.RUNNING, `machine '${name}' is running: stop it first`);
  if (!machineExists(root, name) && !lexists(storageDir(root, name))) throw new AgentError(ERR.NOT_FOUND, `no machine '${name}'`);
  const out: { part: string; path: string; action: "removed" | "absent" | "kept" }[] = [];
  for (const { part, path } of machineParts(root, name)) {
    if (part === "storage" && keepData) {
      out.push({ part, path, action: lexists(path) ? "kept" : "absent" });
      continue;
    }
    // a link is removed as a link; a link elsewhere than ours is still only the link
    const isLink = lexists(path) && lstatSync(path).isSymbolicLink();
    if (!lexists(path)) out.push({ part, path, action: "absent" });
    else {
      if (isLink) rmSync(path, { force: true });
      else rmSync(path, { recursive: true, force: true });
      out.push({ part, path, action: "removed" });
    }
  }
  return out;
}

