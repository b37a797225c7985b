// renew: re-resolve a machine's image; if the digest changed, unpack the new rootfs beside the old one,
// re-render with the three-way merge (image changes applied, the user's edits kept), swap, and if the
// machine was running restart it and wait until it runs; if it does not in time, roll back to the
// previous rootfs and config by itself. One previous generation is kept (`.NAME.prev`, and the previous
// rendering in image.json's `previous`), which `rollback` restores by hand. Storage is never touched.
//
// "Comes up" = READY=1 (MAN8S_READY: probe, healthy or started) reaches the agent through nspawn.
import { randomBytes } from "node:crypto";
import { type LayerProgress, layerLine } from "./pull-progress.ts";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from "node:fs";
import { log } from "../common/log.ts";
import { fault } from "./fault.ts";
import { dirname, join } from "node:path";
import { sleepLong } from "../common/timer.ts";
import { AgentError, ERR } from "./errors.ts";
import { machineTag, parseSource, pullToStore, type RegistryOptions, unpack } from "./image-store.ts";
import { installFiles, writeAtomic } from "./install.ts";
import { RENEWS_DIR, checkName, configDir, imageRecord, rootfsDir } from "./layout.ts";
import { type ImageRecord, machineLock, readImageRecord } from "./machines.ts";
import type { Rendered } from "./render.ts";
import { isFinal } from "./state.ts";
import type { AgentServices } from "./services.ts";

export interface RenewHooks {
  server: AgentServices;
  progress: (step: string, message: string, layer?: LayerProgress) => void;
  /** inject + install the new rootfs with the recorded options (force: the three-way merge) */
  install: (rootfs: string, configBlob: string, digest: string, record: ImageRecord) => Promise<unknown>;
  stopTimeout: () => number;
}

// A renew in progress has a journal (the old image record and rendering) from before the swap until the
// machine is settled on one side; a journal found at agent start means the agent died half-way: the old
// rootfs and config are put back (the user's edits kept by the merge), as an automatic rollback would.
interface RenewJournal {
  old: ImageRecord;
  oldRendered: Rendered;
}
const journalPath = (root: string, name: string) => join(root, RENEWS_DIR, `${name}.json`);

function writeJournal(root: string, name: string, j: RenewJournal): void {
  mkdirSync(join(root, RENEWS_DIR), { recursive: true, mode: 0o700 });
  writeAtomic(journalPath(root, name), `${JSON.stringify(j)}\n`, 0o600, { durable: true }); // on disk before anything it undoes
}

/** At agent start: every renew the agent did not finish is rolled back (the machine is left stopped). */
export function recoverAllRenews(root: string): void {
  let files: string[] = [];
  try {
    files = readdirSync(join(root, RENEWS_DIR));
  } catch {
    return;
  }
  for (const f of files) {
    const m = /^(.+)\.json$/.exec(f);
    if (!m) continue;
    try {
      const name = checkName(m[1]);
      const j = JSON.parse(readFileSync(journalPath(root, name), "utf8")) as RenewJournal;
      const rootfs = rootfsDir(root, name);
      const prev = prevRootfs(root, name);
      if (existsSync(prev)) {
        if (existsSync(rootfs)) rmSync(rootfs, { recursive: true, force: true });
        renameSync(prev, rootfs);
      }
      installFiles(root, name, j.oldRendered, true, { rootfs });
      writeAtomic(imageRecord(root, name), `${JSON.stringify(j.old)}\n`, 0o644);
      for (const n of readdirSync(dirname(rootfs))) if (n.startsWith(`.${name}.pull-`) || n.startsWith(`.${name}.failed-`)) rmSync(join(dirname(rootfs), n), { recursive: true, force: true });
      rmSync(journalPath(root, name), { force: true });
      log(`renew of ${name} was interrupted: rolled back to ${j.old.digest}`);
    } catch (e) {
      log(`renew journal ${f}: cannot roll back: ${(e as Error).message}`);
    }
  }
}

const prevRootfs = (root: string, name: string) => join(dirname(rootfsDir(root, name)), `.${name}.prev`);

function readRendered(root: string, name: string): Rendered {
  const cur = join(configDir(root, name), "current");
  return {
    env: readFileSync(join(cur, "man8env.env.rendered"), "utf8"),
    nspawn: readFileSync(join(cur, "container.nspawn.rendered"), "utf8"),
    template: "",
  };
}

/**
 * Did the machine come up: READY=1 through nspawn (the init sends it when MAN8S_READY passes: a probe, a
 * healthy healthcheck, or the app's start) for this start. Under systemd, `systemctl start` of the
 * Type=notify unit has already waited for it; the unit must still be active.
 */
async function cameUp(h: RenewHooks, name: string, timeoutS: number, since: number): Promise<boolean> {
  if (h.server.runner.useSystemd) return h.server.runner.isRunning(name);
  const end = Date.now() + timeoutS * 1000;
  while (Date.now() < end) {
    const at = h.server.runner.readyAt(name);
    if (at !== null && at >= since) return true;
    const s = h.server.state.get(name);
    if (s && s.updatedAt !== null && s.updatedAt >= since && isFinal(s.phase)) return false;
    if (!h.server.runner.isRunning(name)) return false;
    await sleepLong(100);
  }
  return false;
}

export async function renewMachine(root: string, name: string, to: string | undefined, registry: RegistryOptions, timeoutS: number, h: RenewHooks) {
  return machineLock.run(name, async () => {
    const t0 = performance.now();
    const old = readImageRecord(root, name);
    if (!old) throw new AgentError(ERR.NOT_FOUND, `machine '${name}' has no image record (not pulled by man8s)`);
    let given = to ?? old.source;
    // a bare digest: the same repository at that digest
    if (to && /^sha256:[0-9a-f]{64}$/.test(to)) given = `${old.source.replace(/^docker:\/\//, "").replace(/@sha256:[0-9a-f]{64}$/, "").replace(/:[^/:]+$/, "")}@${to}`;
    const source = parseSource(given);
    h.progress("pull", `resolving ${source.given}`);
    const cancel = { cancelled: false };
    const pulled = await pullToStore(root, source, machineTag(name), registry, (l) => h.progress("pull", l), cancel, (p) => h.progress("layer", layerLine(p), p));
    if (pulled.digest === old.digest) {
      return { name, changed: false, digest: old.digest, seconds: (performance.now() - t0) / 1000 };
    }
    h.progress("unpack", `new digest ${pulled.digest}: unpacking beside the old rootfs`);
    const rootfs = rootfsDir(root, name);
    const bundle = join(dirname(rootfs), `.${name}.pull-${randomBytes(6).toString("hex")}`);
    const prev = prevRootfs(root, name);
    const oldRendered = readRendered(root, name);
    const wasRunning = h.server.isRunning(name);
    try {
      await unpack(root, pulled.tag, bundle, cancel);
    } catch (e) {
      rmSync(bundle, { recursive: true, force: true });
      throw e;
    }
    if (wasRunning) {
      h.progress("stop", `stopping ${name}`);
      await h.server.runner.stop(name, h.stopTimeout());
    }
    // swap: the old rootfs becomes the one previous generation
    rmSync(prev, { recursive: true, force: true });
    writeJournal(root, name, { old, oldRendered });
    renameSync(rootfs, prev);
    fault("renew-after-swap-out");
    renameSync(`${bundle}/rootfs`, rootfs);
    rmSync(bundle, { recursive: true, force: true });
    const record: ImageRecord = { ...old, source: source.given, ref: source.ref, digest: pulled.digest, pulledAt: new Date().toISOString() };
    let installed: unknown;
    try {
      h.progress("install", "re-rendering (three-way merge with your edits)");
      installed = await h.install(rootfs, pulled.configBlob, pulled.digest, record);
      fault("renew-after-install");
      writeAtomic(imageRecord(root, name), `${JSON.stringify({ ...record, previous: { digest: old.digest, source: old.source, rendered: oldRendered } })}\n`, 0o644);
    } catch (e) {
      await restore(root, name, old, oldRendered, h, wasRunning);
      throw e;
    }
    if (!wasRunning) {
      rmSync(journalPath(root, name), { force: true });
      return { name, changed: true, digest: pulled.digest, previous: old.digest, installed, rolledBack: false, seconds: (performance.now() - t0) / 1000 };
    }
    h.progress("start", `starting ${name} on ${pulled.digest}, waiting up to ${timeoutS} s for it to run`);
    const since = Date.now();
    let up = false;
    try {
      await h.server.runner.start(name);
      up = await cameUp(h, name, timeoutS, since);
    } catch (e) {
      h.progress("start", `start failed: ${(e as Error).message}`);
    }
    if (up) {
      rmSync(journalPath(root, name), { force: true });
      return { name, changed: true, digest: pulled.digest, previous: old.digest, installed, rolledBack: false, seconds: (performance.now() - t0) / 1000 };
    }
    h.progress("rollback", `${name} did not come up on ${pulled.digest} within ${timeoutS} s: rolling back to ${old.digest}`);
    if (h.server.runner.isRunning(name)) await h.server.runner.stop(name, h.stopTimeout()).catch(() => undefined);
    await restore(root, name, old, oldRendered, h, true);
    return { name, changed: false, digest: old.digest, failedDigest: pulled.digest, rolledBack: true, seconds: (performance.now() - t0) / 1000 };
  });
}

/** Back to the previous rootfs and rendering (the user's edits kept by the same merge), then start it. */
async function restore(root: string, name: string, old: ImageRecord, oldRendered: Rendered, h: RenewHooks, start: boolean): Promise<void> {
  const rootfs = rootfsDir(root, name);
  const prev = prevRootfs(root, name);
  if (!existsSync(prev)) throw new AgentError(ERR.NOT_FOUND, `no previous rootfs of '${name}' to roll back to`);
  const failed = join(dirname(rootfs), `.${name}.failed-${randomBytes(6).toString("hex")}`);
  renameSync(rootfs, failed);
  renameSync(prev, rootfs);
  rmSync(failed, { recursive: true, force: true });
  installFiles(root, name, oldRendered, true, { rootfs });
  writeAtomic(imageRecord(root, name), `${JSON.stringify(old)}\n`, 0o644);
  rmSync(journalPath(root, name), { force: true });
  if (start) {
    h.progress("rollback", `starting ${name} on ${old.digest}`);
    await h.server.runner.start(name);
  }
}

/** rollback by hand: the previous generation kept by the last renew. */
export async function rollbackMachine(root: string, name: string, h: RenewHooks) {
  return machineLock.run(name, async () => {
    const rec = readImageRecord(root, name) as (ImageRecord & { previous?: { digest: string; source: string; rendered: Rendered } }) | null;
    if (!rec?.previous) throw new AgentError(ERR.NOT_FOUND, `machine '${name}' has no previous generation to roll back to`);
    const wasRunning = h.server.isRunning(name);
    if (wasRunning) await h.server.runner.stop(name, h.stopTimeout());
    const old: ImageRecord = { ...rec, digest: rec.previous.digest, source: rec.previous.source };
    delete (old as { previous?: unknown }).previous;
    await restore(root, name, old, rec.previous.rendered, h, wasRunning);
    return { name, digest: old.digest, from: rec.digest };
  });
}
