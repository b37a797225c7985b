// Protected dirs: nspawn mounts tmpfs over /run and /tmp, hiding what the image put there, so mbctl
// moved them aside to /run.man8sprotected and /tmp.man8sprotected; we copy them back on every start
// (as `cp -a SRC/. DEST/`: modes, owners, symlinks and timestamps preserved).
import { applyMeta } from "../common/file-meta.ts";
import { copyFileSync, lstatSync, mkdirSync, readdirSync, readlinkSync, rmSync, symlinkSync } from "node:fs";

export interface CopyStats {
  files: number;
  dirs: number;
  links: number;
  skipped: string[];
}

export const PROTECTED_DIRS: ReadonlyArray<[string, string]> = [
  ["/run.man8sprotected", "/run"],
  ["/tmp.man8sprotected", "/tmp"],
];

export function copyTree(src: string, dest: string, stats: CopyStats = { files: 0, dirs: 0, links: 0, skipped: [] }): CopyStats {
  for (const name of readdirSync(src)) {
    const s = `${src}/${name}`;
    const d = `${dest}/${name}`;
    const st = lstatSync(s);
    if (st.isDirectory()) {
      if (!isDir(d)) {
        rmSync(d, { force: true });
        mkdirSync(d);
      }
      copyTree(s, d, stats);
      stats.dirs++;
    } else if (st.isSymbolicLink()) {
      rmSync(d, { force: true, recursive: true });
      symlinkSync(readlinkSync(s), d);
      stats.links++;
    } else if (st.isFile()) {
      if (isDir(d)) rmSync(d, { recursive: true });
      copyFileSync(s, d);
      stats.files++;
    } else {
      stats.skipped.push(s); // sockets, fifos and devices are runtime objects, not content
      continue;
    }
    applyMeta(d, st);
  }
  applyMeta(dest, lstatSync(src));
  return stats;
}


function isDir(p: string): boolean {
  try {
    return lstatSync(p).isDirectory();
  } catch {
    return false;
  }
}
