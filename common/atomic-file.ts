// Replacing a small state file so that a reader sees the old content or the new one, never half of it:
// write a temp file beside it, fsync, rename over. What goes wrong is cleaned up (no temp file is left
// behind, even on a full filesystem) and reported to the caller, never thrown.
import { closeSync, fchmodSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from "node:fs";

export interface ReplaceOptions {
  /** the file's mode, set explicitly (the umask does not apply) */
  mode?: number;
  /**
   * The newest content matters more than keeping the old one: when the filesystem has no room for a
   * second copy (ENOSPC, EDQUOT), remove the old file and write again. A reader may then briefly find
   * no file, but never a stale one once this returns true.
   */
  newestWins?: boolean;
}

/** Writes data to path atomically. Returns null on success, else the error (the old file is untouched, or gone with newestWins). */
export function replaceFile(path: string, data: string | Uint8Array, opts: ReplaceOptions = {}): NodeJS.ErrnoException | null {
  const tmp = `${path}.${process.pid}.tmp`;
  const bytes = typeof data === "string" ? Buffer.from(data) : data;
  const attempt = (): NodeJS.ErrnoException | null => {
    let fd = -1;
    try {
      fd = openSync(tmp, "w", opts.mode ?? 0o644);
      if (opts.mode !== undefined) fchmodSync(fd, opts.mode);
      for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
      fsyncSync(fd);
      closeSync(fd);
      fd = -1;
      renameSync(tmp, path);
      return null;
    } catch (e) {
      if (fd >= 0) {
        try {
          closeSync(fd);
        } catch {
          // already closed
        }
      }
      try {
        unlinkSync(tmp);
      } catch {
        // never created
      }
      return e as NodeJS.ErrnoException;
    }
  };
  const err = attempt();
  if (!err || !opts.newestWins || (err.code !== "ENOSPC" && err.code !== "EDQUOT")) return err;
  try {
    unlinkSync(path);
  } catch {
    return err; // nothing to make room with
  }
  return attempt();
}
