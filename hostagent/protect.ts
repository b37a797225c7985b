// nspawn mounts a tmpfs on /run and /tmp, hiding what the image put there (postgres's /var/run/postgresql,
// sockets directories, lock directories...). As mbctl does at pull, the image's content is kept aside as
// /run.man8sprotected and /tmp.man8sprotected, which the init copies back on every start (init/protected.ts).
// Unlike mbctl this copies instead of moving, so it can run again (install --force, inject) and always
// reflects the image: a new copy is built under a temporary name and swapped in.
import { lstatSync, readdirSync, renameSync, rmSync } from "node:fs";
import { tempSibling } from "../common/atomic-file.ts";
import { copyInto, removeStaleTemps, type CopyStats } from "./copytree.ts";
import { ioError } from "./errors.ts";
import { resolveIn } from "./rootfs.ts";

export interface Protected {
  dir: string;
  /** where the content came from, inside the rootfs (after symlinks such as /run -> /var/run) */
  from: string | null;
  action: "copied" | "kept" | "none";
  stats?: CopyStats;
}

const PAIRS: ReadonlyArray<[string, string]> = [
  ["/run", "/run.man8sprotected"],
  ["/tmp", "/tmp.man8sprotected"],
];

export const PROTECTED_NAMES = PAIRS.map(([, p]) => p);

export function prepareProtected(rootfs: string): Protected[] {
  const out: Protected[] = [];
  for (const [src, prot] of PAIRS) {
    const dest = `${rootfs}${prot}`;
    removeStaleTemps(dest); // left by a killed install or inject
    // the path is resolved inside the rootfs: a link to /var/run follows the image's own /var/run
    const r = resolveIn(rootfs, src);
    const old = lstatOrNull(dest);
    if (!r.stat?.isDirectory() || isEmptyDir(r.host)) {
      // nothing to protect; a protected dir mbctl made by moving /run aside stays as it is
      out.push({ dir: prot, from: r.stat?.isDirectory() ? r.path : null, action: old ? "kept" : "none" });
      continue;
    }
    try {
      if (!old) {
        const stats = copyInto(r.host, dest);
        out.push({ dir: prot, from: r.path, action: "copied", stats });
        continue;
      }
      // replace whatever is there (an older copy, or a file/link the image planted): never followed
      const fresh = tempSibling(dest, "new");
      const stats = copyInto(r.host, fresh);
      const trash = tempSibling(dest, "old");
      renameSync(dest, trash);
      renameSync(fresh, dest);
      rmSync(trash, { recursive: true, force: true });
      out.push({ dir: prot, from: r.path, action: "copied", stats });
    } catch (e) {
      throw ioError(e, `preparing ${prot} in ${rootfs}`);
    }
  }
  return out;
}

function lstatOrNull(p: string) {
  try {
    return lstatSync(p);
  } catch {
    return null;
  }
}

function isEmptyDir(p: string): boolean {
  try {
    return readdirSync(p).length === 0;
  } catch {
    return true;
  }
}
