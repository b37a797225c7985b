// Puts the man8s-init bundle into a rootfs: either a verified copy at <rootfs>/man8s-init (made under a
// temporary name, compared file by file with its source, then renamed into place), or, preferred, a
// read-only bind of one host copy, for which only the mount point is made.
import { closeSync, fchmodSync, fstatSync, fsyncSync, readdirSync, write } from "node:fs";
import { lstat, mkdir, readdir, readlink, rm } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import {
  AT_REMOVEDIR, fdPath, mkdirAt, O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_PATH, O_RDONLY, O_WRONLY,
  openBeneath, openDirPath, readlinkAt, RENAME_EXCHANGE, RENAME_NOREPLACE, renameAt, symlinkAt, unlinkAt,
} from "../common/libc-fs.ts";
import { ErrnoError } from "../common/libc.ts";
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

// The copy is made below a directory fd of the rootfs, never by path: a process of a running container
// that uses this rootfs may rename and replace anything in it while we write (issue 9 item 9). Each
// directory we create is opened (openat2, no symlinks, beneath its parent) and every entry is created
// relative to that fd with O_EXCL/mkdirat/symlinkat, which never follow an existing symlink, so a swap
// can at worst move our files around inside the rootfs; it cannot send a write (or a removal) outside.
const MAX_TRASH_ENTRIES = 100_000;
const MAX_TRASH_DEPTH = 64;
const CHUNK = 1024 * 1024;
const RACE_ERRNOS = new Set(["ELOOP", "ENOTDIR", "EEXIST", "EXDEV", "ENOENT"]);

export async function injectCopy(rootfs: string, bundle: string): Promise<{ mode: "copy"; path: string; files: BundleFile[]; verified: true }> {
  await checkRootfs(rootfs);
  await checkBundle(bundle);
  const src = await manifest(bundle);
  const destName = IN_CONTAINER_BUNDLE.replace(/^\//, "");
  const dest = `${rootfs}/${destName}`;
  const tmpName = `.man8s-init.tmp-${randomBytes(6).toString("hex")}`;
  let rootFd = -1;
  const fds = new Map<string, number>();
  try {
    rootFd = openDirPath(rootfs);
    mkdirAt(rootFd, tmpName, 0o700);
    const top = openBeneath(rootFd, tmpName, O_RDONLY | O_DIRECTORY);
    fds.set("", top);
    const ours = fstatSync(top);
    for (const f of src) {
      const slash = f.path.lastIndexOf("/");
      const parent = fds.get(slash < 0 ? "" : f.path.slice(0, slash));
      const name = f.path.slice(slash + 1);
      if (parent === undefined) throw new AgentError(ERR.INTERNAL, `bundle entry ${f.path} before its directory`);
      if (f.type === "dir") {
        mkdirAt(parent, name, 0o700);
        const fd = openBeneath(parent, name, O_RDONLY | O_DIRECTORY);
        fds.set(f.path, fd);
        fchmodSync(fd, f.mode);
      } else if (f.type === "symlink") {
        symlinkAt(f.target!, parent, name);
      } else {
        await copyInto(`${bundle}/${f.path}`, parent, name, f.mode);
      }
    }
    fchmodSync(top, 0o755);
    const got = await manifestAt(top);
    const diff = compare(src, got);
    if (diff) throw new AgentError(ERR.VERIFY_FAILED, `copy of ${bundle} differs: ${diff}`);
    // into place: rename if nothing is there, else exchange atomically with whatever is (an old copy, or
    // anything planted by the image) and remove that, below the rootfs fd
    if (!sameEntry(rootFd, tmpName, ours)) throw new AgentError(ERR.VERIFY_FAILED, `${rootfs}/${tmpName} was replaced during the copy`);
    try {
      renameAt(rootFd, tmpName, rootFd, destName, RENAME_NOREPLACE);
    } catch (e) {
      if ((e as ErrnoError).code !== "EEXIST") throw e;
      renameAt(rootFd, tmpName, rootFd, destName, RENAME_EXCHANGE);
    }
    if (!sameEntry(rootFd, destName, ours)) throw new AgentError(ERR.VERIFY_FAILED, `${dest} was replaced while it was put in place`);
    return { mode: "copy", path: dest, files: got, verified: true };
  } catch (e) {
    // a symlink or another entry where we just created ours: someone is changing the rootfs under us
    if (e instanceof ErrnoError && RACE_ERRNOS.has(e.code))
      throw new AgentError(ERR.VERIFY_FAILED, `injecting ${bundle} into ${rootfs}: the rootfs changed during the copy (${e.message})`);
    throw ioError(e, `injecting ${bundle} into ${rootfs}`);
  } finally {
    for (const fd of fds.values()) closeSync(fd);
    // our temporary copy on failure, or what the exchange put at the temporary name on success
    if (rootFd >= 0) {
      try {
        removeAt(rootFd, tmpName, 0, { left: MAX_TRASH_ENTRIES });
      } catch {
        // best effort: a leftover inside the rootfs, never anything outside it
      }
      closeSync(rootFd);
    }
  }
}

/** A regular file created below `dir` (never through an existing entry), its content, mode, fsync. */
async function copyInto(from: string, dir: number, name: string, mode: number): Promise<void> {
  const fd = openBeneath(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  try {
    // streamed in chunks so a 100 MB binary does not stall other clients of the daemon
    for await (const chunk of Bun.file(from).stream()) {
      for (let off = 0; off < chunk.length; ) off += await writeAsync(fd, chunk, off, Math.min(CHUNK, chunk.length - off));
    }
    fchmodSync(fd, mode);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function writeAsync(fd: number, buf: Uint8Array, off: number, len: number): Promise<number> {
  return new Promise((res, rej) => write(fd, buf, off, len, null, (err, n) => (err ? rej(err) : res(n))));
}

/** The entry `name` below `dir` is the directory we created (same device and inode). */
function sameEntry(dir: number, name: string, st: { dev: number; ino: number }): boolean {
  let fd = -1;
  try {
    fd = openBeneath(dir, name, O_PATH | O_NOFOLLOW);
    const now = fstatSync(fd);
    return now.dev === st.dev && now.ino === st.ino;
  } catch {
    return false;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/** manifest() of a directory we hold open: every lookup below its fd, symlinks read, not followed. */
async function manifestAt(top: number): Promise<BundleFile[]> {
  const out: BundleFile[] = [];
  async function walk(dir: number, rel: string): Promise<void> {
    for (const n of readdirSync(fdPath(dir)).sort()) {
      const r = rel ? `${rel}/${n}` : n;
      const fd = openBeneath(dir, n, O_PATH | O_NOFOLLOW);
      try {
        const st = fstatSync(fd);
        const mode = st.mode & 0o7777;
        if (st.isSymbolicLink()) out.push({ path: r, type: "symlink", mode, size: 0, target: readlinkAt(dir, n) });
        else if (st.isDirectory()) {
          out.push({ path: r, type: "dir", mode, size: 0 });
          const sub = openBeneath(dir, n, O_RDONLY | O_DIRECTORY);
          try {
            await walk(sub, r);
          } finally {
            closeSync(sub);
          }
        } else if (st.isFile()) {
          const rd = openBeneath(dir, n, O_RDONLY | O_NOFOLLOW);
          try {
            const h = new Bun.CryptoHasher("sha256");
            for await (const chunk of Bun.file(rd).stream()) h.update(chunk);
            out.push({ path: r, type: "file", mode, size: st.size, sha256: h.digest("hex") });
          } finally {
            closeSync(rd);
          }
        } else throw new AgentError(ERR.VERIFY_FAILED, `${r} is neither file, directory nor symlink`);
      } finally {
        closeSync(fd);
      }
    }
  }
  await walk(top, "");
  return out;
}

/** rm -r of `name` below `dir`, by fds only; bounded in depth and entries (the container may keep adding). */
function removeAt(dir: number, name: string, depth: number, budget: { left: number }): void {
  if (--budget.left < 0 || depth > MAX_TRASH_DEPTH) throw new AgentError(ERR.IO, `${name}: too many entries to remove`);
  try {
    unlinkAt(dir, name);
    return;
  } catch (e) {
    const code = (e as ErrnoError).code;
    if (code === "ENOENT") return;
    if (code !== "EISDIR" && code !== "EPERM") throw e;
  }
  const sub = openBeneath(dir, name, O_RDONLY | O_DIRECTORY);
  try {
    for (const n of readdirSync(fdPath(sub))) removeAt(sub, n, depth + 1, budget);
  } finally {
    closeSync(sub);
  }
  unlinkAt(dir, name, AT_REMOVEDIR);
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
