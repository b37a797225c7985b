// Writes a rendered container into mbctl's layout: <root>/var/lib/man8machine_configs/NAME/{man8env.env,
// container.nspawn, agent/} and the link <root>/etc/systemd/nspawn/NAME.nspawn. Every file goes through a
// temporary name and rename(2), so a reader sees the old file or the new one, never a part. If a later
// step fails, the files this call created are removed again.
import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, lstatSync, mkdirSync, openSync, readlinkSync, renameSync, rmSync, rmdirSync, symlinkSync, unlinkSync, writeSync } from "node:fs";
import { dirname, relative } from "node:path";
import { AgentError, ERR, ioError } from "./errors.ts";
import { configDir, envFile, nspawnFile, nspawnLink, reportDir } from "./layout.ts";
import type { Rendered } from "./render.ts";

export interface Installed {
  files: string[];
  link: string;
  linkTarget: string;
  reportDir: string;
  replaced: boolean;
}

function exists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

const tmpName = (p: string) => `${dirname(p)}/.${p.split("/").pop()}.tmp-${randomBytes(6).toString("hex")}`;

export function writeAtomic(path: string, content: string, mode: number): void {
  const tmp = tmpName(path);
  let fd = -1;
  try {
    fd = openSync(tmp, "wx", mode);
    const buf = Buffer.from(content, "utf8");
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
    closeSync(fd);
    fd = -1;
    renameSync(tmp, path);
  } catch (e) {
    if (fd >= 0) closeSync(fd);
    rmSync(tmp, { force: true });
    throw ioError(e, `writing ${path}`);
  }
}

function linkAtomic(path: string, target: string): void {
  const tmp = tmpName(path);
  try {
    symlinkSync(target, tmp);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw ioError(e, `linking ${path}`);
  }
}

export function installFiles(root: string, name: string, r: Rendered, force: boolean): Installed {
  const env = envFile(root, name);
  const nsp = nspawnFile(root, name);
  const link = nspawnLink(root, name);
  const targets = [env, nsp, link];
  const present = targets.filter(exists);
  if (present.length > 0 && !force) {
    throw new AgentError(ERR.EXISTS, `${name} is already installed (${present.join(", ")}); use force to replace it`);
  }
  if (exists(link) && !lstatSync(link).isSymbolicLink()) {
    throw new AgentError(ERR.EXISTS, `${link} is not a symlink: refusing to replace a hand-written settings file`);
  }
  // a relative link works both at / and under a test root
  const linkTarget = relative(dirname(link), nsp);
  const created: string[] = [];
  try {
    for (const d of [configDir(root, name), reportDir(root, name), dirname(link)]) {
      if (!exists(d)) {
        mkdirSync(d, { recursive: true, mode: 0o755 });
        created.push(d);
      }
    }
    for (const [p, text] of [[env, r.env], [nsp, r.nspawn]] as const) {
      const had = exists(p);
      writeAtomic(p, text, 0o644);
      if (!had) created.push(p);
    }
    const hadLink = exists(link);
    if (!hadLink || readlinkSync(link) !== linkTarget) linkAtomic(link, linkTarget);
    if (!hadLink) created.push(link);
  } catch (e) {
    for (const p of created.reverse()) {
      try {
        if (lstatSync(p).isDirectory()) rmdirSync(p);
        else unlinkSync(p);
      } catch {
        // best effort: a directory that is not empty stays
      }
    }
    throw ioError(e, `installing ${name}`);
  }
  return { files: [env, nsp], link, linkTarget, reportDir: reportDir(root, name), replaced: present.length > 0 };
}
