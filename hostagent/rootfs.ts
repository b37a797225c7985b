// Path resolution inside an unpacked image, never on the host: an absolute symlink means the rootfs's own
// path, and '..' stops at the rootfs's root (as the kernel does in a chroot). Each step is recorded so the
// classifier can cite the chain as evidence.
import { closeSync, lstatSync, openSync, readSync, readlinkSync, type Stats } from "node:fs";

export interface Resolved {
  /** the path inside the rootfs after following every symlink */
  path: string;
  /** the host path of that file (rootfs + path) */
  host: string;
  /** each symlink followed, as "link -> target" */
  links: string[];
  stat: Stats | null;
}

const MAX_LINKS = 40;

export function resolveIn(rootfs: string, path: string): Resolved {
  const links: string[] = [];
  const todo = path.split("/").filter((s) => s.length > 0);
  const parts: string[] = [];
  let hops = 0;
  while (todo.length > 0) {
    const c = todo.shift()!;
    if (c === ".") continue;
    if (c === "..") {
      parts.pop();
      continue;
    }
    parts.push(c);
    const inPath = `/${parts.join("/")}`;
    let st: Stats;
    try {
      st = lstatSync(rootfs + inPath);
    } catch {
      return { path: `/${[...parts, ...todo].join("/")}`, host: rootfs + inPath, links, stat: null };
    }
    if (st.isSymbolicLink()) {
      if (++hops > MAX_LINKS) return { path: inPath, host: rootfs + inPath, links, stat: null };
      const target = readlinkSync(rootfs + inPath);
      links.push(`${inPath} -> ${target}`);
      parts.pop();
      if (target.startsWith("/")) parts.length = 0;
      todo.unshift(...target.split("/").filter((s) => s.length > 0));
      continue;
    }
    if (todo.length > 0 && !st.isDirectory()) {
      return { path: `/${[...parts, ...todo].join("/")}`, host: rootfs + inPath, links, stat: null };
    }
  }
  const p = `/${parts.join("/")}`;
  let stat: Stats | null = null;
  try {
    stat = lstatSync(rootfs + p);
  } catch {
    stat = null;
  }
  return { path: p, host: rootfs + (p === "/" ? "" : p), links, stat };
}

export const DOCKER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Find a command as the image would: names with '/' are paths (relative to WorkingDir), others go through PATH. */
export function whichIn(rootfs: string, cmd: string, pathVar: string, workingDir = "/"): { tried: string[]; found: Resolved | null; asGiven: string } {
  if (cmd.includes("/")) {
    const asGiven = cmd.startsWith("/") ? cmd : `${workingDir.replace(/\/$/, "")}/${cmd}`;
    const r = resolveIn(rootfs, asGiven);
    return { tried: [asGiven], found: r.stat?.isFile() ? r : null, asGiven };
  }
  const tried: string[] = [];
  for (const dir of pathVar.split(":")) {
    if (!dir.startsWith("/")) continue;
    const p = `${dir.replace(/\/$/, "")}/${cmd}`;
    tried.push(p);
    const r = resolveIn(rootfs, p);
    if (r.stat?.isFile() && (r.stat.mode & 0o111) !== 0) return { tried, found: r, asGiven: p };
  }
  return { tried, found: null, asGiven: cmd };
}

/** Read at most `max` bytes from the start of a file (host path). */
export function readHead(host: string, max: number): Uint8Array {
  const fd = openSync(host, "r");
  try {
    const buf = new Uint8Array(max);
    let off = 0;
    while (off < max) {
      const n = readSync(fd, buf, off, max - off, off);
      if (n <= 0) break;
      off += n;
    }
    return buf.subarray(0, off);
  } finally {
    closeSync(fd);
  }
}

export function existsIn(rootfs: string, path: string): Resolved | null {
  const r = resolveIn(rootfs, path);
  return r.stat ? r : null;
}
