// Copies a file or a directory tree out of (or inside) a rootfs the way `cp -a` does: owners, modes,
// timestamps and symlinks kept. Symlinks are copied as links, never followed; files are opened with
// O_NOFOLLOW and checked to be regular after the open; sockets, FIFOs and devices are runtime objects and
// are skipped. The copy is built under a temporary sibling name and renamed into place, so the
// destination either does not exist or is complete. Bounded in entries and bytes (an image is untrusted).
import { applyMeta } from "../common/file-meta.ts";
import { tempSibling } from "../common/atomic-file.ts";
import {
  closeSync, constants, fstatSync, fsyncSync, lstatSync, mkdirSync, openSync, readSync,
  readdirSync, readlinkSync, renameSync, rmSync, symlinkSync, writeSync, type Stats,
} from "node:fs";
import { basename, dirname } from "node:path";
import { AgentError, ERR } from "./errors.ts";
import { fault } from "./fault.ts";

export const COPY_LIMITS = { entries: 200_000, bytes: 4 * 1024 ** 3 };

export interface CopyStats {
  files: number;
  dirs: number;
  links: number;
  bytes: number;
  skipped: number;
}

/** Remove what a killed copy to `p` left beside it (tempSibling names); returns what was removed. */
export function removeStaleTemps(p: string): string[] {
  const base = basename(p);
  const re = /^\.(.*)\.(tmp|new|old)-[0-9a-f]{12}$/;
  const out: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dirname(p));
  } catch {
    return out;
  }
  for (const n of names) {
    const m = re.exec(n);
    if (!m || m[1] !== base) continue;
    rmSync(`${dirname(p)}/${n}`, { recursive: true, force: true });
    out.push(`${dirname(p)}/${n}`);
  }
  return out;
}

/** Copy src (a file or directory, not followed if a link) to dest, which must not exist. */
export function copyInto(src: string, dest: string, limits = COPY_LIMITS): CopyStats {
  const stats: CopyStats = { files: 0, dirs: 0, links: 0, bytes: 0, skipped: 0 };
  const tmp = tempSibling(dest, "tmp");
  try {
    copyEntry(src, tmp, lstatSync(src), stats, limits);
    fault("copy-before-rename");
    renameSync(tmp, dest);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return stats;
}

function count(stats: CopyStats, limits: typeof COPY_LIMITS, src: string): void {
  if (stats.files + stats.dirs + stats.links + stats.skipped > limits.entries) {
    throw new AgentError(ERR.TOO_LARGE, `${src}: more than ${limits.entries} entries to copy`);
  }
  if (stats.bytes > limits.bytes) throw new AgentError(ERR.TOO_LARGE, `${src}: more than ${limits.bytes} bytes to copy`);
}

function copyEntry(src: string, dest: string, st: Stats, stats: CopyStats, limits: typeof COPY_LIMITS): void {
  if (st.isDirectory()) {
    mkdirSync(dest, { mode: 0o700 });
    stats.dirs++;
    count(stats, limits, src);
    for (const n of readdirSync(src)) {
      const s = `${src}/${n}`;
      copyEntry(s, `${dest}/${n}`, lstatSync(s), stats, limits);
    }
  } else if (st.isSymbolicLink()) {
    symlinkSync(readlinkSync(src), dest);
    stats.links++;
  } else if (st.isFile()) {
    copyFile(src, dest, stats, limits);
    stats.files++;
  } else {
    stats.skipped++;
    return;
  }
  count(stats, limits, src);
  applyMeta(dest, st);
}

function copyFile(src: string, dest: string, stats: CopyStats, limits: typeof COPY_LIMITS): void {
  const from = openSync(src, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  let to = -1;
  try {
    // the entry may have been swapped since lstat: only a regular file is read (never a FIFO or device)
    if (!fstatSync(from).isFile()) throw new AgentError(ERR.BAD_PATH, `${src} changed type during the copy`);
    to = openSync(dest, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const n = readSync(from, buf, 0, buf.length, null);
      if (n <= 0) break;
      stats.bytes += n;
      count(stats, limits, src);
      let off = 0;
      while (off < n) off += writeSync(to, buf, off, n - off);
    }
    fsyncSync(to);
  } finally {
    closeSync(from);
    if (to >= 0) closeSync(to);
  }
}

