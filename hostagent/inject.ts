// Puts the man8s-init bundle into a rootfs: either a verified copy at <rootfs>/man8s-init (made under a
// temporary name, compared file by file with its source, then renamed into place), or, preferred, a
// read-only bind of one host copy, for which only the mount point is made.
import { chmod, copyFile, lstat, mkdir, readdir, readlink, rename, rm, symlink } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { AgentError, ERR, ioError } from "./errors.ts";
import { IN_CONTAINER_BUNDLE } from "./layout.ts";

export interface BundleFile {
  path: string;
  type: "file" | "dir" | "symlink";
  mode: number;
  size: number;
  sha256?: string;
  target?: string;
}

async function hashFile(p: string): Promise<string> {
  const h = new Bun.CryptoHasher("sha256");
  // streamed in chunks so a 100 MB binary does not stall other clients of the daemon
  for await (const chunk of Bun.file(p).stream()) h.update(chunk);
  return h.digest("hex");
}

/** Every entry under dir, sorted, with type, permission bits, size and content hash. */
export async function manifest(dir: string): Promise<BundleFile[]> {
  const out: BundleFile[] = [];
  async function walk(rel: string): Promise<void> {
    const names = (await readdir(rel ? `${dir}/${rel}` : dir)).sort();
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      const st = await lstat(`${dir}/${r}`);
      const mode = st.mode & 0o7777;
      if (st.isSymbolicLink()) out.push({ path: r, type: "symlink", mode, size: 0, target: await readlink(`${dir}/${r}`) });
      else if (st.isDirectory()) {
        out.push({ path: r, type: "dir", mode, size: 0 });
        await walk(r);
      } else if (st.isFile()) out.push({ path: r, type: "file", mode, size: st.size, sha256: await hashFile(`${dir}/${r}`) });
      else throw new AgentError(ERR.BAD_PATH, `bundle entry ${r} is neither file, directory nor symlink`);
    }
  }
  await walk("");
  return out;
}

export async function checkBundle(bundle: string): Promise<void> {
  let st;
  try {
    st = await lstat(`${bundle}/init`);
  } catch (e) {
    throw ioError(e, `bundle ${bundle} has no init`);
  }
  if (!st.isFile() || (st.mode & 0o111) === 0) throw new AgentError(ERR.BAD_PATH, `${bundle}/init is not an executable file`);
}

async function checkRootfs(rootfs: string): Promise<void> {
  let st;
  try {
    st = await lstat(rootfs);
  } catch (e) {
    throw ioError(e, `rootfs ${rootfs}`);
  }
  if (!st.isDirectory()) throw new AgentError(ERR.BAD_PATH, `rootfs ${rootfs} is not a directory (symlinks are not followed)`);
}

export function bindLine(bundle: string): string {
  return `BindReadOnly=${bundle}:${IN_CONTAINER_BUNDLE}`;
}

/** Bind mode: the mount point must exist in the rootfs (nspawn cannot create it in a read-only image). */
export async function injectBind(rootfs: string, bundle: string): Promise<{ mode: "bind"; bindLine: string; mountPoint: string }> {
  await checkRootfs(rootfs);
  await checkBundle(bundle);
  const mp = `${rootfs}${IN_CONTAINER_BUNDLE}`;
  try {
    const st = await lstat(mp).catch(() => null);
    if (st && !st.isDirectory()) await rm(mp, { force: true });
    if (!st || !st.isDirectory()) await mkdir(mp, { mode: 0o755 });
  } catch (e) {
    throw ioError(e, `making mount point ${mp}`);
  }
  return { mode: "bind", bindLine: bindLine(bundle), mountPoint: mp };
}

export async function injectCopy(rootfs: string, bundle: string): Promise<{ mode: "copy"; path: string; files: BundleFile[]; verified: true }> {
  await checkRootfs(rootfs);
  await checkBundle(bundle);
  const src = await manifest(bundle);
  const dest = `${rootfs}${IN_CONTAINER_BUNDLE}`;
  const tmp = `${rootfs}/.man8s-init.tmp-${randomBytes(6).toString("hex")}`;
  try {
    await mkdir(tmp, { mode: 0o755 });
    for (const f of src) {
      const to = `${tmp}/${f.path}`;
      if (f.type === "dir") await mkdir(to, { mode: f.mode });
      else if (f.type === "symlink") await symlink(f.target!, to);
      else await copyFile(`${bundle}/${f.path}`, to);
      if (f.type !== "symlink") await chmod(to, f.mode);
    }
    const got = await manifest(tmp);
    const diff = compare(src, got);
    if (diff) throw new AgentError(ERR.VERIFY_FAILED, `copy of ${bundle} differs: ${diff}`);
    // swap: a previous copy (or anything else at that name, e.g. a symlink planted by the image) goes away
    const old = await lstat(dest).catch(() => null);
    if (old) {
      const trash = `${rootfs}/.man8s-init.old-${randomBytes(6).toString("hex")}`;
      await rename(dest, trash);
      await rename(tmp, dest);
      await rm(trash, { recursive: true, force: true });
    } else {
      await rename(tmp, dest);
    }
    return { mode: "copy", path: dest, files: got, verified: true };
  } catch (e) {
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
    throw ioError(e, `injecting ${bundle} into ${rootfs}`);
  }
}

/** First difference between two manifests, or null. */
export function compare(a: BundleFile[], b: BundleFile[]): string | null {
  const mb = new Map(b.map((f) => [f.path, f]));
  for (const f of a) {
    const g = mb.get(f.path);
    if (!g) return `${f.path} missing`;
    for (const k of ["type", "mode", "size", "sha256", "target"] as const) {
      if (f[k] !== g[k]) return `${f.path}: ${k} ${String(f[k])} != ${String(g[k])}`;
    }
    mb.delete(f.path);
  }
  const extra = [...mb.keys()];
  return extra.length ? `unexpected ${extra.join(", ")}` : null;
}
