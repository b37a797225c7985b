// Writes a rendered container into mbctl's layout, all or nothing across both files:
//
//   <root>/var/lib/man8machine_configs/NAME/
//     generations/gen-N/{man8env.env, container.nspawn, man8env.env.rendered, container.nspawn.rendered}
//     current -> generations/gen-N          the one switch: rename(2) of a new link over it
//     man8env.env -> current/man8env.env    fixed links: readers (nspawn, the Bind= line, editors) see
//     container.nspawn -> current/container.nspawn    both files of one generation, always
//   <root>/etc/systemd/nspawn/NAME.nspawn -> ../../../var/lib/man8machine_configs/NAME/container.nspawn
//
// A new generation is written and fsynced completely, then `current` is switched; only then is the old
// generation removed. A kill at any point leaves either the old pair or the new one, plus leftovers that
// recover() removes (it runs when the agent starts and before every install). A container is installed
// exactly when both files resolve to regular files (isInstalled), which `status` and `install` share.
// The *.rendered copies are the base of the three-way merge that keeps the user's edits (merge.ts).
import {
  closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readSync, readdirSync, readlinkSync,
  rmSync, rmdirSync, statSync, unlinkSync,
} from "node:fs";
import { replaceSymlink, syncDir, writeFileAtomic, type ReplaceOptions } from "../common/atomic-file.ts";
import { dirname, relative } from "node:path";
import { log } from "../common/log.ts";
import { AgentError, ERR, ioError } from "./errors.ts";
import { STORAGE_DIR, configDir, containerNames, envFile, nspawnFile, nspawnLink, reportDir } from "./layout.ts";
import { merge3, type Conflict } from "./merge.ts";
import type { Rendered } from "./render.ts";
import { removeStaleTemps } from "./copytree.ts";
import { fault } from "./fault.ts";
import { PROTECTED_NAMES } from "./protect.ts";
import { bindSources } from "./volumes.ts";

export interface Installed {
  files: string[];
  link: string;
  linkTarget: string;
  reportDir: string;
  replaced: boolean;
  /** the generation directory now current */
  generation: string;
  /** entries where the user's edit and the new rendering disagree: the user's value was kept */
  conflicts: Conflict[];
  /** entries kept from the user's edits (without conflict) */
  kept: { file: string; entry: string }[];
}

const ENV = "man8env.env";
const NSPAWN = "container.nspawn";
const RENDERED = ".rendered";
/** a settings file the agent reads back for the merge: larger is not ours (nor the user's edit of it) */
const MAX_READ = 1024 * 1024;

const gensDir = (root: string, name: string) => `${configDir(root, name)}/generations`;
const currentLink = (root: string, name: string) => `${configDir(root, name)}/current`;

function lstatOrNull(p: string) {
  try {
    return lstatSync(p);
  } catch {
    return null;
  }
}

/** common/atomic-file.ts's write, failing with the agent's error code (E_IO, E_NOT_FOUND). */
export function writeAtomic(path: string, content: string, mode: number, opts: Omit<ReplaceOptions, "mode"> = {}): void {
  try {
    writeFileAtomic(path, content, { ...opts, mode });
  } catch (e) {
    throw ioError(e, `writing ${path}`);
  }
}

function linkAtomic(path: string, target: string): void {
  try {
    replaceSymlink(path, target);
  } catch (e) {
    throw ioError(e, `linking ${path}`);
  }
}

/** A small regular file (following links), or null if absent. Never opens a FIFO or device. */
function readSmall(p: string): string | null {
  let st;
  try {
    st = statSync(p);
  } catch {
    return null;
  }
  if (!st.isFile()) throw new AgentError(ERR.BAD_PATH, `${p} is not a regular file`);
  const fd = openSync(p, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const fst = fstatSync(fd);
    if (!fst.isFile()) throw new AgentError(ERR.BAD_PATH, `${p} is not a regular file`);
    if (fst.size > MAX_READ) throw new AgentError(ERR.TOO_LARGE, `${p} is larger than ${MAX_READ} bytes`);
    const buf = Buffer.alloc(fst.size);
    let off = 0;
    while (off < buf.length) {
      const n = readSync(fd, buf, off, buf.length - off, off);
      if (n <= 0) break;
      off += n;
    }
    return buf.subarray(0, off).toString("utf8");
  } finally {
    closeSync(fd);
  }
}

/** Installed = both files resolve to regular files (through current/, or legacy plain files). */
export function isInstalled(root: string, name: string): boolean {
  for (const p of [envFile(root, name), nspawnFile(root, name)]) {
    try {
      if (!statSync(p).isFile()) return false;
    } catch {
      return false;
    }
  }
  return true;
}

/** What a kill -9 may leave: temp files, generations that never became (or no longer are) current,
 *  and, for a first install that never switched, the dangling links and the empty directories. */
export function recover(root: string, name: string): string[] {
  const removed: string[] = [];
  const dir = configDir(root, name);
  if (!lstatOrNull(dir)) return removed;
  const rm = (p: string) => {
    try {
      rmSync(p, { recursive: true, force: true });
      removed.push(p);
    } catch (e) {
      log(`recover ${name}: cannot remove ${p}: ${(e as Error).message}`);
    }
  };
  for (const n of readdirSync(dir)) if (/^\..*\.tmp-[0-9a-f]{12}$/.test(n)) rm(`${dir}/${n}`);
  const cur = lstatOrNull(currentLink(root, name))?.isSymbolicLink() ? readlinkSync(currentLink(root, name)) : null;
  const gens = gensDir(root, name);
  if (lstatOrNull(gens)?.isDirectory()) {
    for (const n of readdirSync(gens)) {
      const g = `${gens}/${n}`;
      // a volume seed in progress when the agent died: beside its target, named in the generation's binds
      try {
        for (const src of bindSources(readSmall(`${g}/${NSPAWN}${RENDERED}`) ?? "")) removed.push(...removeStaleTemps(src));
        const rootfs = installedFrom(g);
        if (rootfs) for (const p of PROTECTED_NAMES) removed.push(...removeStaleTemps(`${rootfs}${p}`));
      } catch {
        // an unreadable generation is removed below, or is current and was read by nspawn as is
      }
      if (`generations/${n}` !== cur) rm(g);
      else for (const f of readdirSync(g)) if (/^\..*\.tmp-[0-9a-f]{12}$/.test(f)) rm(`${g}/${f}`);
    }
  }
  if (isInstalled(root, name)) return removed;
  // never switched (or switched to nothing): nothing of this container is in use; undo the links
  for (const p of [currentLink(root, name), envFile(root, name), nspawnFile(root, name)]) {
    if (lstatOrNull(p)?.isSymbolicLink()) rm(p);
  }
  const link = nspawnLink(root, name);
  if (lstatOrNull(link)?.isSymbolicLink() && readlinkSync(link) === relative(dirname(link), nspawnFile(root, name))) rm(link);
  if (lstatOrNull(gens)?.isDirectory() && readdirSync(gens).length === 0) rm(gens);
  // the directories go only if nothing else (volumes, the agent's files) lives there
  try {
    rmdirSync(`${root}/${STORAGE_DIR}/${name}`);
  } catch {
    // absent or not empty: data is never removed here
  }
  try {
    rmdirSync(dir);
    removed.push(dir);
  } catch {
    // not empty: kept
  }
  return removed;
}

/** The rootfs a generation was installed from (install.json), if it is an absolute directory path. */
function installedFrom(gen: string): string | null {
  const text = readSmall(`${gen}/install.json`);
  if (text === null) return null;
  const v = (JSON.parse(text) as { rootfs?: unknown }).rootfs;
  return typeof v === "string" && v.startsWith("/") && !v.split("/").includes("..") && lstatOrNull(v)?.isDirectory() ? v : null;
}

/** Every container directory under the root, at agent start. */
export function recoverAll(root: string): void {
  for (const n of containerNames(root)) {
    const removed = recover(root, n);
    if (removed.length) log(`recovered ${n} after an interrupted install: removed ${removed.join(", ")}`);
  }
}


/**
 * Top-level files that are not our links (an install by an older agent, or an editor that replaced the
 * link with a file) are adopted first: their bytes go into a generation and a link replaces them. What a
 * reader sees does not change at any step.
 */
function adopt(root: string, name: string): void {
  const files = [envFile(root, name), nspawnFile(root, name)];
  const cur = currentLink(root, name);
  const plain = files.filter((p) => lstatOrNull(p)?.isFile());
  if (plain.length === 0) return;
  let target = lstatOrNull(cur)?.isSymbolicLink() ? `${configDir(root, name)}/${readlinkSync(cur)}` : null;
  if (!target) {
    // legacy pair: it becomes generation 0 as it is (no .rendered: nothing is known to be the user's)
    const g = `${gensDir(root, name)}/gen-0`;
    mkdirSync(g, { recursive: true, mode: 0o755 });
    for (const p of files) {
      const text = readSmall(p);
      if (text !== null) writeAtomic(`${g}/${p.split("/").pop()}`, text, 0o644);
    }
    syncDir(g);
    linkAtomic(cur, "generations/gen-0");
    target = g;
  }
  for (const p of plain) {
    const text = readSmall(p);
    if (text !== null) writeAtomic(`${target}/${p.split("/").pop()}`, text, 0o644);
    linkAtomic(p, `current/${p.split("/").pop()}`);
  }
  syncDir(configDir(root, name));
}

function nextGeneration(root: string, name: string): number {
  let max = 0;
  try {
    for (const n of readdirSync(gensDir(root, name))) {
      const m = /^gen-(\d+)$/.exec(n);
      if (m) max = Math.max(max, Number(m[1]));
    }
  } catch {
    // none yet
  }
  return max + 1;
}

export interface InstallHooks {
  /** recorded in the generation, so a restarted agent can clean what a killed /run copy left there */
  rootfs?: string;
  /** runs once the new generation is written, before the switch (volume seeding, /run copies);
   *  returns an undo for a failed install */
  prepare?: () => (() => void) | void;
}

export function installFiles(root: string, name: string, r: Rendered, force: boolean, hooks: InstallHooks = {}): Installed {
  const dir = configDir(root, name);
  const env = envFile(root, name);
  const nsp = nspawnFile(root, name);
  const link = nspawnLink(root, name);
  recover(root, name);
  const installed = isInstalled(root, name);
  if (installed && !force) throw new AgentError(ERR.EXISTS, `${name} is already installed (${dir}); use force to replace it`);
  const linkSt = lstatOrNull(link);
  if (linkSt && !linkSt.isSymbolicLink()) throw new AgentError(ERR.EXISTS, `${link} is not a symlink: refusing to replace a hand-written settings file`);
  // a relative link works both at / and under a test root
  const linkTarget = relative(dirname(link), nsp);
  const created: string[] = [];
  const hadDir = lstatOrNull(dir) !== null;
  let undo: (() => void) | void = undefined;
  let gen = "";
  try {
    if (!hadDir) created.push(mkdirSync(dir, { recursive: true, mode: 0o755 }) ?? dir); // the first one made
    adopt(root, name);
    const conflicts: Conflict[] = [];
    const kept: { file: string; entry: string }[] = [];
    const texts = new Map<string, string>();
    for (const [file, kind, text] of [[ENV, "env", r.env], [NSPAWN, "nspawn", r.nspawn]] as const) {
      const p = `${dir}/${file}`;
      const base = installed ? readSmall(`${dir}/current/${file}${RENDERED}`) : null;
      const m = merge3(p, kind, base, text, installed ? readSmall(p) : null);
      conflicts.push(...m.conflicts);
      kept.push(...m.kept.map((entry) => ({ file: p, entry })));
      texts.set(file, m.text);
    }
    const n = nextGeneration(root, name);
    gen = `${gensDir(root, name)}/gen-${n}`;
    mkdirSync(gen, { recursive: true, mode: 0o755 });
    writeAtomic(`${gen}/${ENV}`, texts.get(ENV)!, 0o644);
    writeAtomic(`${gen}/${NSPAWN}`, texts.get(NSPAWN)!, 0o644);
    writeAtomic(`${gen}/${ENV}${RENDERED}`, r.env, 0o444);
    writeAtomic(`${gen}/${NSPAWN}${RENDERED}`, r.nspawn, 0o444);
    if (hooks.rootfs) writeAtomic(`${gen}/install.json`, `${JSON.stringify({ rootfs: hooks.rootfs, at: new Date().toISOString() })}\n`, 0o444);
    syncDir(gen);
    syncDir(dirname(gen));
    fault("after-generation");
    // the volumes and /run copies the new files refer to; a killed seed is found through the generation
    undo = hooks.prepare?.();
    // the fixed links (already there after the first install); dangling until current exists
    for (const [p, t] of [[env, `current/${ENV}`], [nsp, `current/${NSPAWN}`]] as const) {
      if (!lstatOrNull(p)) {
        linkAtomic(p, t);
        created.push(p);
      }
    }
    if (!lstatOrNull(dirname(link))) created.push(mkdirSync(dirname(link), { recursive: true, mode: 0o755 }) ?? dirname(link));
    if (!linkSt || readlinkSync(link) !== linkTarget) {
      linkAtomic(link, linkTarget);
      if (!linkSt) created.push(link);
    }
    fault("after-links");
    const old = lstatOrNull(currentLink(root, name))?.isSymbolicLink() ? readlinkSync(currentLink(root, name)) : null;
    linkAtomic(currentLink(root, name), `generations/gen-${n}`); // the switch: from here on, no rollback
    try {
      syncDir(dir);
      fault("after-switch");
      if (old && old !== `generations/gen-${n}`) rmSync(`${dir}/${old}`, { recursive: true, force: true });
    } catch (e) {
      log(`install ${name}: installed, but cleaning up after the switch failed (the next start cleans up): ${(e as Error).message}`);
    }
    return { files: [env, nsp], link, linkTarget, reportDir: reportDir(root, name), replaced: installed, generation: gen, conflicts, kept };
  } catch (e) {
    if (gen) rmSync(gen, { recursive: true, force: true });
    try {
      undo?.();
    } catch (u) {
      log(`install ${name}: undo failed: ${(u as Error).message}`);
    }
    for (const p of created.reverse()) {
      try {
        if (lstatSync(p).isDirectory()) rmSync(p, { recursive: true, force: true });
        else unlinkSync(p);
      } catch {
        // best effort
      }
    }
    if (!installed) recover(root, name);
    throw ioError(e, `installing ${name}`);
  }
}
