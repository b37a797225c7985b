// MAN8S_APPLICATION_USER: the image's `User`, resolved as Docker resolves it, against the container's
// own /etc/passwd and /etc/group (the init runs inside the rootfs; MAN8S_ETC_DIR in the init's own
// environment points elsewhere, for running it as a subreaper on a host). docs/user.md.
//
//   name | uid            passwd entry → uid, primary gid, HOME; supplementary groups = the /etc/group
//                         entries that list the name
//   name:group | uid:gid  the group (name looked up in /etc/group, or a number) replaces the primary gid;
//                         no supplementary groups (as Docker)
// A numeric uid or gid need not exist in the files (gid 0 and HOME=/ then, as Docker). A name that is
// not there is an error: exit 67, nothing started.
import { openSync, readSync, closeSync, fstatSync } from "node:fs";
import { EXIT, ExitError } from "./log.ts";

export interface AppUser {
  /** the setting, verbatim */
  spec: string;
  uid: number;
  gid: number;
  /** supplementary groups, primary gid first */
  groups: number[];
  /** passwd's home directory, "/" without an entry */
  home: string;
  name: string | null;
}

/** Bounds on untrusted files from the image. */
const MAX_FILE_BYTES = 4 << 20;
const MAX_GROUPS = 65536; // NGROUPS_MAX
const MAX_ID = 4294967294; // (uid_t)-1 means "unchanged" to the kernel

const VAR = "MAN8S_APPLICATION_USER";

function fail(msg: string): never {
  throw new ExitError(EXIT.badUser, `${VAR}: ${msg}; the app is not started`);
}

function readBounded(path: string): string | null {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return null;
  }
  try {
    if (!fstatSync(fd).isFile()) fail(`${path} is not a regular file`);
    const buf = Buffer.alloc(MAX_FILE_BYTES + 1);
    let n = 0;
    for (let r; n < buf.length && (r = readSync(fd, buf, n, buf.length - n, null)) > 0; ) n += r;
    if (n > MAX_FILE_BYTES) fail(`${path} is larger than ${MAX_FILE_BYTES} bytes`);
    return buf.subarray(0, n).toString("utf8");
  } finally {
    closeSync(fd);
  }
}

function numeric(s: string): number | null {
  if (!/^\d{1,10}$/.test(s)) return null;
  const n = Number(s);
  return n <= MAX_ID ? n : null;
}

interface Entry {
  fields: string[];
}

function entries(text: string | null, minFields: number): Entry[] {
  if (!text) return [];
  const out: Entry[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#") || line.startsWith("+") || line.startsWith("-")) continue;
    const fields = line.split(":");
    if (fields.length >= minFields) out.push({ fields });
  }
  return out;
}

/** Resolve `spec` against `${etcDir}/passwd` and `${etcDir}/group`; throws ExitError 67 naming the variable and file. */
export function resolveUser(spec: string, etcDir = "/etc"): AppUser {
  const passwdPath = `${etcDir}/passwd`, groupPath = `${etcDir}/group`;
  const colon = spec.indexOf(":");
  const userPart = colon < 0 ? spec : spec.slice(0, colon);
  const groupPart = colon < 0 ? null : spec.slice(colon + 1);
  if (userPart === "") fail(`'${spec}' has no user part`);
  if (groupPart === "") fail(`'${spec}' has an empty group part`);

  const passwd = entries(readBounded(passwdPath), 7);
  const uidNum = numeric(userPart);
  // a name matches field 0; a number matches the uid field (first entry wins, as getpwuid)
  const pw = passwd.find((e) => (uidNum === null ? e.fields[0] === userPart : numeric(e.fields[2]!) === uidNum));
  if (!pw && uidNum === null) fail(`user '${userPart}' not found in ${passwdPath}`);
  const uid = pw ? numeric(pw.fields[2]!) : uidNum;
  if (uid === null) fail(`${passwdPath}: the entry of '${userPart}' has an invalid uid`);
  let gid = pw ? numeric(pw.fields[3]!) : 0;
  if (gid === null) fail(`${passwdPath}: the entry of '${userPart}' has an invalid gid`);
  const name = pw ? pw.fields[0]! : null;
  const home = pw && pw.fields[5] ? pw.fields[5] : "/";

  const groupText = groupPart !== null || name ? readBounded(groupPath) : null;
  const groupEntries = entries(groupText, 4);
  const groups: number[] = [];
  if (groupPart !== null) {
    const g = numeric(groupPart);
    if (g !== null) gid = g;
    else {
      const e = groupEntries.find((x) => x.fields[0] === groupPart);
      if (!e) fail(`group '${groupPart}' not found in ${groupPath}`);
      const n = numeric(e.fields[2]!);
      if (n === null) fail(`${groupPath}: the entry of '${groupPart}' has an invalid gid`);
      gid = n;
    }
    groups.push(gid);
  } else {
    groups.push(gid);
    if (name) {
      for (const e of groupEntries) {
        if (!e.fields[3]!.split(",").includes(name)) continue;
        const n = numeric(e.fields[2]!);
        if (n !== null && !groups.includes(n)) groups.push(n);
        if (groups.length > MAX_GROUPS) fail(`'${name}' is in more than ${MAX_GROUPS} groups in ${groupPath}`);
      }
    }
  }
  return { spec, uid, gid, groups, home, name };
}

/** The user the app runs as, from the env (null: the init's own user). */
export function appUserFromEnv(env: Record<string, string | undefined>, etcDir: string): AppUser | null {
  const spec = env[VAR]?.trim();
  if (!spec) return null;
  return resolveUser(spec, etcDir);
}
