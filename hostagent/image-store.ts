// The image store: one OCI layout (<root>/var/lib/man8s/images) that every pull copies into with
// `skopeo copy`. Blobs are content-addressed there, so a second image sharing base layers fetches only its
// new blobs, and a re-pull of the same digest fetches no layer (skopeo still reads the manifest and the
// small config). Unpacking is `umoci unpack` from the store into a directory the caller names.
//
// Every child (skopeo, umoci) runs under `setpriv --pdeathsig SIGKILL`: if the agent dies, its children
// die with it, so a restarted agent can clean up without a stray writer behind its back. The layout's
// index.json is written by skopeo and umoci; those writes are serialised by one store-wide lock.
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync, statfsSync } from "node:fs";
import { dirname, join } from "node:path";
import { AgentError, ERR } from "./errors.ts";
import { IMAGES_DIR, checkAbsPath } from "./layout.ts";
import { type LayerProgress, PullWatcher, manifestLayers } from "./pull-progress.ts";

export const imagesDir = (root: string) => join(root, IMAGES_DIR);

/** Bounds on what we read from the store and from children (an image and a registry are untrusted). */
const MAX_INDEX = 4 * 1024 * 1024;
const MAX_MANIFEST = 4 * 1024 * 1024;
const MAX_CHILD_OUTPUT = 256 * 1024;
const MAX_SOURCE = 2048;

export interface Source {
  /** what the user gave */
  given: string;
  /** the skopeo transport reference */
  ref: string;
  transport: "docker" | "oci" | "oci-archive";
}

// a registry reference as skopeo's docker transport takes it: [host[:port]/]path[:tag][@sha256:hex]
const DOCKER_REF = /^[a-z0-9][a-z0-9.-]*(?::[0-9]{1,5})?(?:\/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*(?:\/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)?(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$/;

/** SOURCE as mbctl takes it (a registry reference), or with an explicit transport. */
export function parseSource(v: unknown): Source {
  if (typeof v !== "string" || v.length === 0) throw new AgentError(ERR.BAD_ARGS, "source must be a non-empty string");
  if (v.length > MAX_SOURCE) throw new AgentError(ERR.BAD_ARGS, `source is longer than ${MAX_SOURCE} characters`);
  if (/[\s\x00-\x1f\x7f]/.test(v)) throw new AgentError(ERR.BAD_ARGS, "source contains whitespace or a control character");
  if (v.startsWith("oci:") || v.startsWith("oci-archive:")) {
    const transport = v.startsWith("oci:") ? "oci" : "oci-archive";
    const rest = v.slice(transport.length + 1);
    const path = rest.split(":")[0]!;
    checkAbsPath(path, `${transport} path`);
    return { given: v, ref: v, transport };
  }
  const bare = v.startsWith("docker://") ? v.slice("docker://".length) : v;
  if (!DOCKER_REF.test(bare)) throw new AgentError(ERR.BAD_ARGS, `'${v.slice(0, 200)}' is not an image reference (host/path:tag, REF@sha256:..., docker://REF, oci:DIR[:TAG], oci-archive:FILE)`);
  return { given: v, ref: `docker://${bare}`, transport: "docker" };
}

export interface RegistryOptions {
  tlsVerify?: boolean;
  authfile?: string;
  certDir?: string;
}

/** skopeo's source flags; only meaningful for the docker transport (skopeo rejects them elsewhere). */
function srcFlags(src: Source, o: RegistryOptions): string[] {
  const f: string[] = [];
  if (o.authfile) f.push("--authfile", o.authfile);
  if (src.transport !== "docker") return f;
  if (o.tlsVerify === false) f.push("--src-tls-verify=false");
  if (o.certDir) f.push("--src-cert-dir", o.certDir);
  return f;
}

/** A running child whose stdout/stderr lines are handed over as they come; kill() ends it. */
export interface Child {
  done: Promise<{ code: number; stderr: string }>;
  kill(): void;
}

export function spawnChild(argv: string[], onLine?: (line: string) => void): Child {
  const proc = Bun.spawn(["setpriv", "--pdeathsig", "SIGKILL", "--", ...argv], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const read = async (s: ReadableStream<Uint8Array>, keep: boolean): Promise<string> => {
    let text = "";
    let partial = "";
    const dec = new TextDecoder();
    for await (const chunk of s) {
      const t = dec.decode(chunk, { stream: true });
      if (keep && text.length < MAX_CHILD_OUTPUT) text += t.slice(0, MAX_CHILD_OUTPUT - text.length);
      if (!onLine) continue;
      partial += t;
      const lines = partial.split(/\r?\n|\r/);
      partial = lines.pop()!.slice(-4096);
      for (const l of lines) if (l.trim()) onLine(l.trim().slice(0, 1024));
    }
    if (onLine && partial.trim()) onLine(partial.trim());
    return text;
  };
  const out = read(proc.stdout as ReadableStream<Uint8Array>, false);
  const err = read(proc.stderr as ReadableStream<Uint8Array>, true);
  return {
    done: (async () => {
      const [, stderr, code] = await Promise.all([out, err, proc.exited]);
      return { code, stderr };
    })(),
    kill: () => {
      if (proc.exitCode === null) proc.kill("SIGKILL");
    },
  };
}

/** skopeo's fatal message (`level=fatal msg="..."`) as one line, without the log decoration. */
export function oneLine(stderr: string): string {
  const m = /level=fatal msg="((?:[^"\\]|\\.)*)"/.exec(stderr);
  const lines = stderr.trim().split("\n").filter(Boolean);
  // a tool that panics (umoci on a full disk) ends with a stack trace: name the system error, or the panic
  const errno = lines.find((l) => /no space left on device|disk quota exceeded|read-only file system|input\/output error|permission denied/i.test(l));
  const panic = lines.find((l) => l.startsWith("panic: "));
  const text = m ? m[1]!.replace(/\\"/g, '"').replace(/\\\\/g, "\\") : (errno ?? panic ?? lines.pop() ?? "failed");
  return text.replace(/[\x00-\x1f\x7f]+/g, " ").slice(0, 600);
}

/** Less than 1 MiB left for an unprivileged writer on the filesystem of dir. */
function diskFull(dir: string): boolean {
  try {
    const st = statfsSync(dir);
    return st.bavail * st.bsize < 1 << 20;
  } catch {
    return false;
  }
}

/** A promise chain per key: run() waits for the earlier holders of the same key. */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

/** The store's own lock: skopeo and umoci both rewrite index.json. */
export const storeLock = new KeyedLock();

export interface Cancel {
  /** set by the caller to learn of a cancellation; the pull kills its child */
  cancelled: boolean;
  onCancel?: () => void;
}

export interface Pulled {
  /** the tag in the store that names this pull */
  tag: string;
  /** the manifest digest (sha256:...) */
  digest: string;
  /** the OCI image config blob, inside the store */
  configBlob: string;
  /** layers the manifest lists, and those skopeo reported it did not have to fetch */
  layers: number;
  reused: number;
  /** bytes of the layers that were not in the store before */
  fetchedBytes: number;
}

/** The blobs a store holds (names under blobs/sha256), bounded: a store is ours, but never read unbounded. */
function storedBlobs(store: string): Set<string> {
  try {
    return new Set(readdirSync(join(store, "blobs", "sha256")).slice(0, 1_000_000));
  } catch {
    return new Set();
  }
}

const ARCH: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" };

/** `skopeo inspect --raw REF`: the manifest as JSON, null when it cannot be read (the copy then says why). */
async function inspectOnce(ref: string, src: Source, o: RegistryOptions, cancel: Cancel): Promise<unknown> {
  // inspect names the copy's --src-* flags without the prefix
  const flags = srcFlags(src, o).map((f) => f.replace(/^--src-/, "--"));
  const proc = Bun.spawn(["setpriv", "--pdeathsig", "SIGKILL", "--", "skopeo", "inspect", "--raw", ...flags, ref], { stdin: "ignore", stdout: "pipe", stderr: "ignore" });
  cancel.onCancel = () => proc.kill("SIGKILL");
  try {
    let text = "";
    for await (const chunk of proc.stdout as ReadableStream<Uint8Array>) {
      text += new TextDecoder().decode(chunk);
      if (text.length > MAX_MANIFEST) {
        proc.kill("SIGKILL");
        return null;
      }
    }
    if ((await proc.exited) !== 0) return null;
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  } finally {
    cancel.onCancel = undefined;
  }
}

/** The image manifest skopeo will copy: an index (multi-arch) is followed to this host's platform. */
async function inspectRaw(src: Source, o: RegistryOptions, cancel: Cancel): Promise<unknown> {
  const m = (await inspectOnce(src.ref, src, o, cancel)) as { manifests?: { digest?: unknown; platform?: { os?: unknown; architecture?: unknown } }[] } | null;
  if (!m || !Array.isArray(m.manifests) || src.transport !== "docker" || cancel.cancelled) return m;
  const want = ARCH[process.arch] ?? process.arch;
  const d = m.manifests.find((x) => x?.platform?.os === "linux" && x.platform.architecture === want)?.digest;
  if (typeof d !== "string" || !/^sha256:[0-9a-f]{64}$/.test(d)) return null;
  // the repository without its tag or digest, at the platform's manifest
  const repo = src.ref.replace(/@sha256:[0-9a-f]{64}$/, "").replace(/:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/, (t, i: number, all: string) => (all.lastIndexOf("/") < i ? "" : t));
  return inspectOnce(`${repo}@${d}`, src, o, cancel);
}

/**
 * Copies SOURCE into the store under `tag`. Progress lines (skopeo's own, one per blob) go to progress.
 * A registry's refusal is one line naming the reference (E_PULL).
 */
export async function pullToStore(root: string, src: Source, tag: string, o: RegistryOptions, progress: (l: string) => void, cancel: Cancel, onLayer?: (p: LayerProgress) => void): Promise<Pulled> {
  const store = imagesDir(root);
  mkdirSync(store, { recursive: true, mode: 0o700 });
  return storeLock.run("store", async () => {
    if (cancel.cancelled) throw new AgentError(ERR.CANCELLED, `pull of ${src.given} cancelled`);
    const digestFile = join(store, `.digest-${randomBytes(6).toString("hex")}`);
    const before = storedBlobs(store);
    // the layers and their sizes first, for per-layer progress (without them: skopeo's own lines)
    const layers = onLayer ? manifestLayers(await inspectRaw(src, o, cancel)) : null;
    if (cancel.cancelled) throw new AgentError(ERR.CANCELLED, `pull of ${src.given} cancelled`);
    const watcher = layers && onLayer ? new PullWatcher(store, layers, before, onLayer) : null;
    const child = spawnChild(["skopeo", "copy", ...srcFlags(src, o), "--digestfile", digestFile, src.ref, `oci:${store}:${tag}`], (l) => {
      if (/level=fatal/.test(l)) return; // the fatal message becomes the error, once
      if (watcher && /^Copying blob /.test(l)) watcher.line(l);
      else progress(l);
    });
    cancel.onCancel = () => child.kill();
    watcher?.start();
    try {
      const r = await child.done;
      watcher?.stop(r.code === 0 && !cancel.cancelled);
      if (cancel.cancelled) throw new AgentError(ERR.CANCELLED, `pull of ${src.given} cancelled`);
      if (r.code !== 0) throw new AgentError(ERR.PULL, `pulling ${src.given}: ${oneLine(r.stderr)}`);
      const digest = readFileSync(digestFile, "utf8").trim();
      if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw new AgentError(ERR.PULL, `pulling ${src.given}: skopeo wrote no manifest digest`);
      const manifest = readBlobJson(store, digest, MAX_MANIFEST) as { config?: { digest?: unknown }; layers?: { digest?: unknown; size?: unknown }[] };
      const cfg = manifest.config?.digest;
      if (typeof cfg !== "string" || !/^sha256:[0-9a-f]{64}$/.test(cfg)) throw new AgentError(ERR.PULL, `pulling ${src.given}: the manifest names no config blob`);
      const layers = Array.isArray(manifest.layers) ? manifest.layers : [];
      let reused = 0;
      let fetchedBytes = 0;
      for (const l of layers) {
        if (typeof l?.digest === "string" && before.has(l.digest.slice("sha256:".length))) reused++;
        else if (typeof l?.size === "number") fetchedBytes += l.size;
      }
      await markRecent(root, tag, digest, progress);
      return { tag, digest, configBlob: blobPath(store, cfg), layers: layers.length, reused, fetchedBytes };
    } finally {
      watcher?.stop(false);
      cancel.onCancel = undefined;
      rmSync(digestFile, { force: true });
    }
  });
}

export const blobPath = (store: string, digest: string) => join(store, "blobs", "sha256", digest.slice("sha256:".length));

function readBlobJson(store: string, digest: string, max: number): unknown {
  const p = blobPath(store, digest);
  if (statSync(p).size > max) throw new AgentError(ERR.TOO_LARGE, `blob ${digest} is larger than ${max} bytes`);
  return JSON.parse(readFileSync(p, "utf8"));
}

/** The digest a tag names in the store, or null. */
export function tagDigest(root: string, tag: string): string | null {
  const p = join(imagesDir(root), "index.json");
  try {
    if (statSync(p).size > MAX_INDEX) return null;
    const idx = JSON.parse(readFileSync(p, "utf8")) as { manifests?: { digest?: string; annotations?: Record<string, string> }[] };
    const m = idx.manifests?.find((x) => x.annotations?.["org.opencontainers.image.ref.name"] === tag);
    return typeof m?.digest === "string" ? m.digest : null;
  } catch {
    return null;
  }
}

/** `umoci unpack` of a stored tag into bundle (which must not exist): bundle/rootfs + bundle/config.json. */
export async function unpack(root: string, tag: string, bundle: string, cancel: Cancel): Promise<void> {
  const child = spawnChild(["umoci", "unpack", "--image", `${imagesDir(root)}:${tag}`, bundle]);
  cancel.onCancel = () => child.kill();
  try {
    const r = await child.done;
    if (cancel.cancelled) throw new AgentError(ERR.CANCELLED, "cancelled during unpack");
    if (r.code !== 0) {
      // umoci may panic on a full disk instead of naming it: say what the filesystem says
      const why = diskFull(dirname(bundle)) ? `no space left on device (${dirname(bundle)})` : oneLine(r.stderr);
      throw new AgentError(ERR.UNPACK, `unpacking ${tag}: ${why}`);
    }
  } finally {
    cancel.onCancel = undefined;
  }
}

/** Remove a tag from the store's index (its blobs stay for later pulls until a prune). */
export async function untag(root: string, tag: string): Promise<void> {
  await storeLock.run("store", async () => {
    const r = await spawnChild(["umoci", "rm", "--image", `${imagesDir(root)}:${tag}`]).done;
    if (r.code !== 0 && tagDigest(root, tag) !== null) throw new AgentError(ERR.IO, `untagging ${tag}: ${oneLine(r.stderr)}`);
  });
}

/** The store tag of a machine's image: the machine name is already a valid OCI ref name. */
export const machineTag = (name: string) => `machine.${name}`;

/** Every ref name in the store's index. */
export function storeTags(root: string): string[] {
  const p = join(imagesDir(root), "index.json");
  try {
    if (statSync(p).size > MAX_INDEX) return [];
    const idx = JSON.parse(readFileSync(p, "utf8")) as { manifests?: { annotations?: Record<string, string> }[] };
    return (idx.manifests ?? []).map((m) => m.annotations?.["org.opencontainers.image.ref.name"]).filter((t): t is string => typeof t === "string");
  } catch {
    return [];
  }
}

/** `cache prune` keeps the blobs of pulls from the last RECENT_MINUTES (a removed machine re-pulled soon after
 * fetches nothing); each pull tags its manifest `recent.<epoch ms>.<digest prefix>` in the store. */
export const RECENT_MINUTES = 60;
/** at most this many recent tags: more pulls than that between two prunes are not marked */
const MAX_RECENT_TAGS = 256;
const RECENT = /^recent\.(\d{13})\.[0-9a-f]{12}$/;

async function markRecent(root: string, tag: string, digest: string, progress: (l: string) => void): Promise<void> {
  const store = imagesDir(root);
  const recent = storeTags(root).filter((t) => RECENT.test(t));
  const prefix = digest.slice(7, 19);
  if (recent.length >= MAX_RECENT_TAGS || recent.some((t) => t.endsWith(prefix) && Date.now() - Number(RECENT.exec(t)![1]) < 60_000)) return;
  const r = await spawnChild(["umoci", "tag", "--image", `${store}:${tag}`, `recent.${Date.now()}.${prefix}`]).done;
  if (r.code !== 0) progress(`not marked as a recent pull (cache prune may drop its blobs): ${oneLine(r.stderr)}`);
}

/** A `recent.` tag younger than `minutes`. */
function isRecent(tag: string, minutes: number, now: number): boolean {
  const m = RECENT.exec(tag);
  return m !== null && now - Number(m[1]) < minutes * 60_000;
}

/**
 * cache prune: drop the tags whose machine is gone (and download leftovers), then `umoci gc`: blobs no
 * remaining tag references are removed. `keep(tag)` says which tags still belong to a machine.
 */
export async function pruneStore(root: string, keep: (tag: string) => boolean, recentMinutes = RECENT_MINUTES): Promise<{ untagged: string[]; blobsBefore: number; blobsAfter: number; bytesFreed: number }> {
  const store = imagesDir(root);
  if (!statSync(store, { throwIfNoEntry: false })) return { untagged: [], blobsBefore: 0, blobsAfter: 0, bytesFreed: 0 };
  return storeLock.run("store", async () => {
    const size = () => {
      let n = 0;
      let bytes = 0;
      for (const b of storedBlobs(store)) {
        n++;
        bytes += statSync(join(store, "blobs", "sha256", b), { throwIfNoEntry: false })?.size ?? 0;
      }
      return { n, bytes };
    };
    const before = size();
    const untagged: string[] = [];
    const now = Date.now();
    for (const t of storeTags(root)) {
      if (keep(t) || isRecent(t, recentMinutes, now)) continue;
      const r = await spawnChild(["umoci", "rm", "--image", `${store}:${t}`]).done;
      if (r.code !== 0) throw new AgentError(ERR.IO, `untagging ${t}: ${oneLine(r.stderr)}`);
      untagged.push(t);
    }
    const gc = await spawnChild(["umoci", "gc", "--layout", store]).done;
    if (gc.code !== 0) throw new AgentError(ERR.IO, `umoci gc: ${oneLine(gc.stderr)}`);
    const after = size();
    return { untagged, blobsBefore: before.n, blobsAfter: after.n, bytesFreed: before.bytes - after.bytes };
  });
}
