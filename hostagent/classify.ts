// Which init does an image run, and how must nspawn and our init treat it (DESIGN §5)? Rules are tried in
// a fixed order and the first match wins; every decision records its evidence (file, config field).
// All file access goes through rootfs.ts, so symlinks resolve inside the image, never on the host.
import { basename } from "node:path";
import { shellForm, SHELLS } from "../common/shell-form.ts";
import { parseSignal, signalName } from "../common/signals.ts";
import type { ImageConfig } from "./image-config.ts";
import { DOCKER_PATH, existsIn, readHead, whichIn, type Resolved } from "./rootfs.ts";

export type InitKind =
  | "none" // the image has no command at all
  | "app" // a plain program: no init of its own
  | "script-exec" // an entrypoint script whose last command is exec
  | "shell-form" // ["/bin/sh", "-c", "..."]
  | "script-noexec" // a script that keeps running (no exec, or & / wait)
  | "tini"
  | "dumb-init"
  | "catatonit"
  | "pid1"
  | "s6-overlay-v3"
  | "s6-overlay-v2"
  | "systemd"
  | "busybox-init"
  | "runit"
  | "sysvinit";

/** pid2: our init supervises the app; pid2-group: and stops its whole process group/tree;
 *  pid1-exec: our init is PID 1, sets up the network, then execs the image's init. */
export type InitMode = "pid2" | "pid2-group" | "pid1-exec";

export interface Evidence {
  /** what was decided or noticed */
  decision: string;
  /** where: "config.Entrypoint", "file /usr/bin/tini", ... */
  source: string;
  detail: string;
  weak?: boolean;
}

export interface Classification {
  kind: InitKind;
  mode: InitMode;
  processTwo: boolean;
  killSignal: string;
  stopSignal: string;
  /** Entrypoint ++ Cmd: what the app (or the image's init) is started with, exactly */
  argv: string[];
  shellForm: boolean;
  /** our init delivers stop and forwarded signals to the app's process group */
  signalGroup: boolean;
  /** pid1-exec only: what our init execs after the network is up */
  execInit?: string[];
  /** a nested init kept in front of the app, with the flags it was given */
  nestedInit?: { kind: string; path: string; flags: string[]; child: string[] };
  /** the image's User, verbatim (MAN8S_APPLICATION_USER); absent: the app runs as root */
  user?: string;
  /** argv[0] as found in the rootfs */
  executable?: { argv0: string; path: string; links: string[]; type: "elf" | "script" | "other" };
  evidence: Evidence[];
  warnings: string[];
}

const ROW: Record<InitKind, { mode: InitMode; processTwo: boolean; killSignal: string }> = {
  none: { mode: "pid2", processTwo: true, killSignal: "SIGRTMIN+3" },
  app: { mode: "pid2", processTwo: true, killSignal: "SIGRTMIN+3" },
  "script-exec": { mode: "pid2", processTwo: true, killSignal: "SIGRTMIN+3" },
  "shell-form": { mode: "pid2-group", processTwo: true, killSignal: "SIGRTMIN+3" },
  "script-noexec": { mode: "pid2-group", processTwo: true, killSignal: "SIGRTMIN+3" },
  tini: { mode: "pid2", processTwo: true, killSignal: "SIGRTMIN+3" },
  "dumb-init": { mode: "pid2", processTwo: true, killSignal: "SIGRTMIN+3" },
  catatonit: { mode: "pid2", processTwo: true, killSignal: "SIGRTMIN+3" },
  pid1: { mode: "pid2", processTwo: true, killSignal: "SIGRTMIN+3" },
  "s6-overlay-v3": { mode: "pid1-exec", processTwo: false, killSignal: "SIGTERM" },
  "s6-overlay-v2": { mode: "pid1-exec", processTwo: false, killSignal: "SIGTERM" },
  systemd: { mode: "pid1-exec", processTwo: false, killSignal: "SIGRTMIN+3" },
  "busybox-init": { mode: "pid1-exec", processTwo: false, killSignal: "SIGUSR2" },
  runit: { mode: "pid1-exec", processTwo: false, killSignal: "SIGCONT" },
  sysvinit: { mode: "pid1-exec", processTwo: false, killSignal: "SIGRTMIN+4" },
};

const STRINGS_SCAN = 16 * 1024 * 1024;
const SCRIPT_SCAN = 256 * 1024;
const PRIV_DROPPERS = new Set(["gosu", "su-exec", "setpriv", "chpst", "s6-setuidgid", "runuser", "setuidgid", "tini-static"]);

interface Probe {
  argv0: string;
  found: Resolved | null;
  tried: string[];
  head: Uint8Array;
  type: "elf" | "script" | "other";
  /** lazily read file body for strings scans */
  body(): Uint8Array;
}

interface Ctx {
  rootfs: string;
  cfg: ImageConfig;
  pathVar: string;
  ev: Evidence[];
  warnings: string[];
}

export function classify(rootfs: string, cfg: ImageConfig): Classification {
  const envPath = cfg.env.find(([k]) => k === "PATH")?.[1];
  const ctx: Ctx = { rootfs, cfg, pathVar: envPath ?? DOCKER_PATH, ev: [], warnings: [] };
  const argv = [...cfg.entrypoint, ...cfg.cmd];
  ctx.ev.push({
    decision: `argv = Entrypoint ++ Cmd = ${JSON.stringify(argv)}`,
    source: cfg.source === "runtime-spec" ? "config process.args" : "config.Entrypoint, config.Cmd",
    detail: `${cfg.entrypoint.length} entrypoint and ${cfg.cmd.length} cmd words`,
  });
  if (!envPath) ctx.ev.push({ decision: "PATH is Docker's default", source: "config.Env", detail: DOCKER_PATH, weak: true });
  weakHints(ctx);

  const stop = stopSignalOf(ctx);
  const r = classifyArgv(ctx, argv, 0);
  const row = ROW[r.kind];
  const out: Classification = {
    kind: r.kind,
    mode: row.mode,
    processTwo: row.processTwo,
    killSignal: row.killSignal,
    stopSignal: stop,
    argv,
    shellForm: r.shellForm ?? false,
    signalGroup: row.mode === "pid2-group",
    evidence: ctx.ev,
    warnings: ctx.warnings,
  };
  if (row.mode === "pid1-exec") out.execInit = argv;
  const user = userOf(ctx, row.mode === "pid1-exec");
  if (user !== undefined) out.user = user;
  if (r.nested) out.nestedInit = r.nested;
  if (r.exe) out.executable = r.exe;
  ctx.ev.push({
    decision: `${r.kind}: ProcessTwo=${row.processTwo ? "yes" : "no"}, KillSignal=${row.killSignal}, man8s init ${row.mode}`,
    source: "DESIGN §5 table",
    detail: r.why,
  });
  return out;
}

interface Result {
  kind: InitKind;
  why: string;
  shellForm?: boolean;
  nested?: Classification["nestedInit"];
  exe?: Classification["executable"];
}

function classifyArgv(ctx: Ctx, argv: string[], depth: number): Result {
  if (argv.length === 0) {
    ctx.warnings.push("the image has neither Entrypoint nor Cmd: there is nothing to run");
    return { kind: "none", why: "no Entrypoint and no Cmd" };
  }
  // shell form: Docker writes ["/bin/sh", "-c", "cmd"] (or Config.Shell + cmd); the rule is the init's too
  const sf = shellForm(argv, ctx.cfg.shell);
  if (sf) {
    const script = sf.script;
    const words = script.trim().split(/\s+/);
    const first = words[0] === "exec" ? words[1] : words[0];
    ctx.ev.push({ decision: "shell-form command", source: "config argv[0..1]", detail: `${argv.slice(0, sf.index).join(" ")} '${script.slice(0, 200)}'` });
    // a PID-1 init behind sh -c still needs PID 1 (podman strips sh -c the same way)
    if (first && depth === 0) {
      const inner = probe(ctx, first);
      const p1 = pid1Init(ctx, inner, [first, ...words.slice(words[0] === "exec" ? 2 : 1)]);
      if (p1) return { ...p1, shellForm: true };
    }
    return { kind: "shell-form", why: "sh -c does not forward signals: stop the whole group", shellForm: true };
  }

  const p = probe(ctx, argv[0]!);
  const exe = p.found ? { argv0: argv[0]!, path: p.found.path, links: p.found.links, type: p.type } : undefined;
  if (!p.found) {
    ctx.warnings.push(`argv[0] '${argv[0]}' was not found in the rootfs (tried ${p.tried.join(", ")})`);
    ctx.ev.push({ decision: "argv[0] not found", source: "rootfs", detail: p.tried.join(", ") });
    return { kind: "app", why: "unknown executable: treated as a plain app" };
  }
  ctx.ev.push({
    decision: `argv[0] resolves to ${p.found.path}`,
    source: `file ${p.found.path}`,
    detail: `${p.type}${p.found.links.length ? `, via ${p.found.links.join(", ")}` : ""}`,
  });

  const p1 = pid1Init(ctx, p, argv);
  if (p1) return { ...p1, exe };
  const nested = nestedInit(ctx, p, argv);
  if (nested) return { ...nested, exe };

  if (p.type === "script") {
    const sc = scriptExec(ctx, p, argv, depth);
    if (sc) return { ...sc, exe };
  }
  return { kind: "app", why: "a plain program", exe };
}

function probe(ctx: Ctx, argv0: string): Probe {
  const w = whichIn(ctx.rootfs, argv0, ctx.pathVar, ctx.cfg.workingDir);
  let head: Uint8Array = new Uint8Array(0);
  let cached: Uint8Array | null = null;
  if (w.found?.stat?.isFile()) {
    try {
      head = readHead(w.found.host, 4096);
    } catch {
      head = new Uint8Array(0);
    }
  }
  const type = head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46 ? "elf" : head[0] === 0x23 && head[1] === 0x21 ? "script" : "other";
  return {
    argv0,
    found: w.found,
    tried: w.tried,
    head,
    type,
    body: () => {
      if (cached) return cached;
      try {
        cached = w.found ? readHead(w.found.host, type === "script" ? SCRIPT_SCAN : STRINGS_SCAN) : new Uint8Array(0);
      } catch {
        cached = new Uint8Array(0);
      }
      return cached;
    },
  };
}

function has(body: Uint8Array, s: string): boolean {
  return Buffer.from(body.buffer, body.byteOffset, body.byteLength).indexOf(s) >= 0;
}

/** Inits that need PID 1: systemd, s6-overlay, busybox init, runit, sysvinit. */
function pid1Init(ctx: Ctx, p: Probe, argv: string[]): Result | null {
  if (!p.found) return null;
  const real = p.found.path;
  const base = basename(real);
  const argv0 = argv[0]!;
  const initPaths = ["/sbin/init", "/usr/sbin/init", "/usr/local/sbin/init"];
  if (base === "systemd" || ((initPaths.includes(argv0) || initPaths.includes(real)) && p.type === "elf" && has(p.body(), "systemd_features"))) {
    ctx.ev.push({ decision: "systemd", source: `file ${real}`, detail: base === "systemd" ? "realpath basename is systemd" : "init binary carries systemd's feature string" });
    return { kind: "systemd", why: "systemd needs PID 1; our init sets up the network and execs it" };
  }
  if (p.type === "script") {
    const text = new TextDecoder().decode(p.body());
    if (text.includes("s6-overlay-suexec")) {
      ctx.ev.push({ decision: "s6-overlay v3", source: `file ${real}`, detail: "script calls s6-overlay-suexec (which refuses to run unless PID 1)" });
      for (const sup of ["/package/admin", "/command/s6-overlay-suexec", "/etc/s6-overlay/s6-rc.d"]) {
        const r = existsIn(ctx.rootfs, sup);
        if (r) ctx.ev.push({ decision: "s6-overlay layout present", source: `file ${sup}`, detail: r.stat?.isDirectory() ? "directory" : "file", weak: true });
      }
      return { kind: "s6-overlay-v3", why: "s6-overlay v3 exits 100 unless PID 1; KillSignal SIGTERM (s6-svscan ignores SIGRTMIN+3)" };
    }
    if (/^#!\s*\S*execlineb/.test(text) && text.includes("/etc/s6/init/init-stage")) {
      ctx.ev.push({ decision: "s6-overlay v2", source: `file ${real}`, detail: "execlineb script running /etc/s6/init/init-stage1" });
      return { kind: "s6-overlay-v2", why: "s6-overlay v2's stage 3 kills every process (kill -1): it must be PID 1" };
    }
  }
  if (p.type === "elf" && has(p.body(), "BusyBox v")) {
    const applet = basename(argv0) === "busybox" || base === basename(argv0) ? argv[1] : basename(argv0);
    if (applet === "init" || applet === "linuxrc") {
      ctx.ev.push({ decision: "busybox init", source: `file ${real}`, detail: `busybox binary run as applet '${applet}'` });
      if (existsIn(ctx.rootfs, "/etc/inittab")) ctx.ev.push({ decision: "inittab present", source: "file /etc/inittab", detail: "busybox init reads it", weak: true });
      return { kind: "busybox-init", why: "busybox init: poweroff on SIGUSR2" };
    }
  }
  if (base === "runit" || base === "runit-init") {
    ctx.ev.push({ decision: "runit", source: `file ${real}`, detail: `basename ${base}` });
    const stopit = existsIn(ctx.rootfs, "/etc/runit/stopit");
    if (!stopit || ((stopit.stat?.mode ?? 0) & 0o111) === 0) ctx.warnings.push("runit stops on SIGCONT only when /etc/runit/stopit is executable; it is not");
    return { kind: "runit", why: "runit as PID 1: SIGCONT plus /etc/runit/stopit means shutdown" };
  }
  if (p.type === "elf" && basename(argv0) === "init" && existsIn(ctx.rootfs, "/etc/inittab")) {
    ctx.ev.push({ decision: "sysvinit", source: `file ${real}`, detail: "an ELF init with /etc/inittab" });
    return { kind: "sysvinit", why: "sysvinit (>= 3.10) powers off on SIGRTMIN+4" };
  }
  return null;
}

/** tini, dumb-init, catatonit, pid1: kept with their flags, our init in front as PID 2. */
function nestedInit(ctx: Ctx, p: Probe, argv: string[]): Result | null {
  if (!p.found || p.type !== "elf") return null;
  const real = p.found.path;
  const base = basename(real);
  const body = p.body();
  let kind: "tini" | "dumb-init" | "catatonit" | "pid1" | null = null;
  let detail = "";
  // catatonit first: it also prints "tini version ..." to please docker info
  if (has(body, "CATATONIT_DEBUG") || base === "catatonit") {
    kind = "catatonit";
    detail = has(body, "CATATONIT_DEBUG") ? "binary contains CATATONIT_DEBUG" : `basename ${base}`;
  } else if (has(body, "TINI_SUBREAPER") || ["tini", "tini-static", "docker-init"].includes(base)) {
    kind = "tini";
    detail = has(body, "TINI_SUBREAPER") ? "binary contains TINI_SUBREAPER" : `basename ${base}`;
  } else if (has(body, "[dumb-init]") || has(body, "DUMB_INIT_SETSID") || base === "dumb-init") {
    kind = "dumb-init";
    detail = has(body, "[dumb-init]") ? "binary contains [dumb-init]" : `basename ${base}`;
  } else if (has(body, "pid1-rs:") || (base === "pid1" && has(body, "System.Process.PID1"))) {
    kind = "pid1";
    detail = "pid1 markers";
  }
  if (!kind) return null;
  const { flags, child } = splitInitFlags(kind, argv.slice(1));
  ctx.ev.push({ decision: kind, source: `file ${real}`, detail });
  if (flags.length) ctx.ev.push({ decision: `${kind} flags kept`, source: "config argv", detail: flags.join(" ") });
  return {
    kind,
    why: `${kind} stays as PID 3 with its flags; our init in front turns the stub's TERM+HUP into one stop signal and drains`,
    nested: { kind, path: real, flags, child },
  };
}

/** Options of each nested init that take a value (tini -e N -p SIG, dumb-init -r a:b). */
function splitInitFlags(kind: string, rest: string[]): { flags: string[]; child: string[] } {
  const withValue = kind === "tini" ? new Set(["-e", "-p"]) : kind === "dumb-init" ? new Set(["-r", "--rewrite"]) : new Set<string>();
  const flags: string[] = [];
  let i = 0;
  while (i < rest.length) {
    const a = rest[i]!;
    if (a === "--") {
      i++;
      break;
    }
    if (!a.startsWith("-")) break;
    flags.push(a);
    if (withValue.has(a) && i + 1 < rest.length) flags.push(rest[++i]!);
    i++;
  }
  return { flags, child: rest.slice(i) };
}

/** A shell script: find how it ends. exec "$@" hands over to the Cmd, which is classified once more. */
function scriptExec(ctx: Ctx, p: Probe, argv: string[], depth: number): Result | null {
  const text = new TextDecoder().decode(p.body());
  const shebang = text.slice(0, text.indexOf("\n") >>> 0).replace(/^#!\s*/, "").trim().split(/\s+/);
  const interp = basename(shebang[0] ?? "");
  const shellName = interp === "env" ? basename(shebang[1] ?? "") : interp;
  if (!SHELLS.has(shellName)) {
    ctx.ev.push({ decision: "interpreted program", source: `file ${p.found!.path}`, detail: `#! ${shebang.join(" ")}` });
    return null;
  }
  const lines = text.split("\n").map((l) => l.replace(/(^|\s)#.*$/, "").trim()).filter((l) => l.length > 0);
  const execs = lines.filter((l) => /^exec(\s|$)/.test(l));
  const background = lines.some((l) => /(^|[^&])&\s*$/.test(l) || /(^|[;&|]\s*)wait(\s|$)/.test(l));
  const src = `file ${p.found!.path}`;
  if (execs.length === 0 || background) {
    ctx.ev.push({
      decision: "script keeps running",
      source: src,
      detail: execs.length === 0 ? "no exec: the script stays the app's parent" : "background jobs (&) or wait",
    });
    return { kind: "script-noexec", why: "the script does not hand over its pid: stop the whole group" };
  }
  const last = execs[execs.length - 1]!;
  ctx.ev.push({ decision: "script ends in exec", source: src, detail: last.slice(0, 200) });
  // words after `exec`, without exec's own options (-a NAME, -c, -l)
  const words = last.split(/\s+/).slice(1);
  while (words[0] === "-c" || words[0] === "-l" || words[0] === "-a") words.splice(0, words[0] === "-a" ? 2 : 1);
  const target = words[0]?.replace(/^["']|["']$/g, "") ?? "";
  const handsOver = (w: string) => /^"?\$(@|\{@\}|\*)"?$/.test(w);
  let viaCmd = handsOver(target);
  let nextArgv: string[] | null = viaCmd ? argv.slice(1) : null;
  if (!viaCmd && PRIV_DROPPERS.has(basename(target)) && words.some(handsOver)) {
    viaCmd = true;
    nextArgv = argv.slice(1);
    ctx.ev.push({ decision: `privilege drop through ${basename(target)}`, source: src, detail: "then the Cmd" });
  }
  if (depth === 0 && viaCmd && nextArgv && nextArgv.length > 0) {
    ctx.ev.push({ decision: "classify the Cmd the script execs", source: src, detail: JSON.stringify(nextArgv) });
    const inner = classifyArgv(ctx, nextArgv, depth + 1);
    if (inner.kind !== "app") return { ...inner, why: `entrypoint script execs the Cmd: ${inner.why}` };
    return { kind: "script-exec", why: "the script execs the app: it ends up at our child's pid" };
  }
  if (depth === 0 && !viaCmd && target && !target.includes("$")) {
    // exec tini -- "$@" and friends: the exec'd program decides
    const q = probe(ctx, target);
    if (q.found) {
      const rest = words.slice(1).map((w) => w.replace(/^["']|["']$/g, ""));
      const r = pid1Init(ctx, q, [target, ...rest]) ?? nestedInit(ctx, q, [target, ...rest]);
      if (r) return { ...r, why: `entrypoint script execs ${target}: ${r.why}` };
    }
  }
  return { kind: "script-exec", why: "the script execs its last command: it ends up at our child's pid" };
}

const PASSWD_SCAN = 1024 * 1024;

/** The id database of the rootfs (never the host's): name -> id, from /etc/passwd or /etc/group. */
function idsIn(rootfs: string, file: string): Map<string, string> | null {
  const r = existsIn(rootfs, file);
  if (!r?.stat?.isFile()) return null;
  let text: string;
  try {
    text = new TextDecoder().decode(readHead(r.host, PASSWD_SCAN));
  } catch {
    return null;
  }
  const m = new Map<string, string>();
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length >= 3 && f[0] && !m.has(f[0])) m.set(f[0], f[2]!);
  }
  return m;
}

/** config.User as evidence, checked against the rootfs's passwd/group the way the init will resolve it. */
function userOf(ctx: Ctx, execInit: boolean): string | undefined {
  const u = ctx.cfg.user;
  if (u === undefined || u === "") {
    ctx.ev.push({ decision: "the app runs as root (no User)", source: "config.User", detail: "not set" });
    return undefined;
  }
  if (execInit) {
    ctx.ev.push({ decision: `User '${u}' is left to the image's own init`, source: "config.User", detail: "MAN8S_EXEC_INIT: the init does not switch users", weak: true });
    return u;
  }
  const [name, group] = u.split(":", 2) as [string, string | undefined];
  const parts: string[] = [];
  for (const [what, v, file] of [["user", name, "/etc/passwd"], ["group", group, "/etc/group"]] as const) {
    if (v === undefined) continue;
    if (/^\d+$/.test(v)) {
      parts.push(`${what} ${v} is numeric`);
      continue;
    }
    const db = idsIn(ctx.rootfs, file);
    const id = db?.get(v);
    if (id !== undefined) parts.push(`${what} ${v} is ${id} in ${file}`);
    else {
      parts.push(`${what} ${v} is not in ${file}`);
      ctx.warnings.push(`User '${u}': ${what} '${v}' is not in the rootfs's ${file}; the init will refuse to start the app (exit 67)`);
    }
  }
  ctx.ev.push({ decision: `the app runs as User '${u}' (MAN8S_APPLICATION_USER)`, source: "config.User", detail: parts.join("; ") });
  return u;
}

function stopSignalOf(ctx: Ctx): string {
  const raw = ctx.cfg.stopSignal;
  if (!raw) {
    ctx.ev.push({ decision: "StopSignal SIGTERM (default)", source: "config.StopSignal", detail: "not set" });
    return "SIGTERM";
  }
  const n = parseSignal(raw);
  if (n === null) {
    ctx.warnings.push(`StopSignal '${raw}' is not a signal; using SIGTERM`);
    ctx.ev.push({ decision: "StopSignal SIGTERM (invalid value ignored)", source: "config.StopSignal", detail: raw });
    return "SIGTERM";
  }
  const name = signalName(n);
  ctx.ev.push({ decision: `StopSignal ${name}`, source: ctx.cfg.source === "runtime-spec" ? "annotation org.opencontainers.image.stopSignal" : "config.StopSignal", detail: raw });
  return name;
}

/** Weak signals from the config: never decisive, listed so a human can see what else points where. */
function weakHints(ctx: Ctx): void {
  for (const [k, v] of ctx.cfg.env) {
    if (/^(S6_|TINI_|DUMB_INIT_|CATATONIT_)/.test(k) || (k === "container" && v === "docker")) {
      ctx.ev.push({ decision: `env ${k}`, source: "config.Env", detail: `${k}=${v.slice(0, 100)}`, weak: true });
    }
  }
  for (const h of ctx.cfg.history) {
    if (/tini|dumb-init|catatonit|s6-overlay|systemd|STOPSIGNAL/i.test(h)) {
      ctx.ev.push({ decision: "history mentions an init", source: "history[].created_by", detail: h.slice(0, 200), weak: true });
    }
  }
}
