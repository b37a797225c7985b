// Copying a file's metadata as `cp -a` does: owner first (chown clears setuid bits), then mode, then
// times; a symlink gets its owner and times only. Shared by the init's protected-dir restore and the
// agent's copies into a rootfs.
import { chmodSync, lchownSync, lutimesSync, type Stats, utimesSync } from "node:fs";

export function applyMeta(path: string, st: Stats): void {
  lchownSync(path, st.uid, st.gid);
  if (st.isSymbolicLink()) {
    lutimesSync(path, st.atime, st.mtime);
    return;
  }
  chmodSync(path, st.mode & 0o7777); // after chown, which clears setuid bits
  utimesSync(path, st.atime, st.mtime);
}
