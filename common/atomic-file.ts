// Replacing a file so that a reader sees the old content or the new one, never half of it: write a temp
// file beside it (same directory, so rename(2) stays on one filesystem), fsync, rename over it; with
// `durable`, fsync the directory too, so the rename itself survives a crash (journals, generations).
// The one writer of state files for every role. What goes wrong is cleaned up: no temp file is left
// behind, even on a full filesystem.
import { closeSync, constants, fchmodSync, fsyncSync, openSync, renameSync, rmSync, symlinkSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname } from "node:path";

/**
 * A fresh name beside `p`: `.NAME.TAG-<12 hex>`. Hidden, unique, and recognisable, so that what a killed
 * writer left can be found and removed (hostagent/copytree.ts removeStaleTemps).
 */
export function tempSibling(p: string, tag = "tmp"): string {
  const hex = Buffer.from(crypto.getRandomValues(new Uint8Array(6))).toString("hex");
  return `${dirname(p)}/.${basename(p)}.${tag}-${hex}`;
}

/** fsync(2) of a directory: makes the entries created or renamed in it durable. */
export function syncDir(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export interface ReplaceOptions {
  /** the file's mode, set explicitly (the umask does not apply); default 0644 less the umask */
  mode?: number;
  /**
   * The newest content matters more than keeping the old one: when the filesystem has no room for a
   * second copy (ENOSPC, EDQUOT), remove the old file and write again. A reader may then briefly find
   * no file, but never a stale one once this returns.
   */
  newestWins?: boolean;
  /** fsync the directory after the rename */
  durable?: boolean;
}

function writeOnce(path: string, bytes: Uint8Array, opts: ReplaceOptions): void {
  const tmp = tempSibling(path);
  let fd = -1;
  try {
    // O_EXCL: never write through something planted under the temp name
    fd = openSync(tmp, "wx", opts.mode ?? 0o644);
    if (opts.mode !== undefined) fchmodSync(fd, opts.mode);
    for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
    fsyncSync(fd);
    closeSync(fd);
    fd = -1;
    renameSync(tmp, path);
  } catch (e) {
    if (fd >= 0) closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** Writes data to path atomically; throws the fs error (the old file is untouched, or gone with newestWins). */
export function writeFileAtomic(path: string, data: string | Uint8Array, opts: ReplaceOptions = {}): void {
  const bytes = typeof data === "string" ? Buffer.from(data) : data;
  try {
    writeOnce(path, bytes, opts);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (!opts.newestWins || (code !== "ENOSPC" && code !== "EDQUOT")) throw e;
    try {
      unlinkSync(path);
    } catch {
      throw e; // nothing to make room with
    }
    writeOnce(path, bytes, opts);
  }
  if (opts.durable) syncDir(dirname(path));
}

/** writeFileAtomic for writers that report instead of throwing: null on success, else the error. */
export function replaceFile(path: string, data: string | Uint8Array, opts: ReplaceOptions = {}): NodeJS.ErrnoException | null {
  try {
    writeFileAtomic(path, data, opts);
    return null;
  } catch (e) {
    return e as NodeJS.ErrnoException;
  }
}

/** Points the symlink at path to target atomically (a new link under a temp name, renamed over). */
export function replaceSymlink(path: string, target: string): void {
  const tmp = tempSibling(path);
  try {
    symlinkSync(target, tmp);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
