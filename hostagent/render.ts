// Renders a container's two files from a classification: the `.nspawn` settings (mbctl's keys and layout,
// docs/notes.md §11) and `man8env.env`, which the init reads as literal KEY=VALUE lines.
// Rendering is pure: nothing is written here, so a value that cannot be written fails before any file exists.
import { VERSION } from "../common/version.ts";
import type { Classification } from "./classify.ts";
import { AgentError, ERR } from "./errors.ts";
import type { ImageConfig } from "./image-config.ts";
import { IN_CONTAINER_BUNDLE, IN_CONTAINER_ENV, IN_CONTAINER_REPORT_DIR, IN_CONTAINER_REPORT_SOCKET, envFile, reportDir } from "./layout.ts";
import { shlexJoin } from "../common/shellwords.ts";
import { READY_WORDS } from "../probes/settings.ts";
import { parseProbeUrl, ProbeUrlError } from "../probes/url.ts";
import { checkSettings } from "./validate.ts";
import type { VolumePlan } from "./volumes.ts";

export interface RenderInput {
  name: string;
  root: string;
  cls: Classification;
  cfg: ImageConfig;
  yggdrasilAddress?: string;
  imageUrl?: string;
  /** extra env, written last: overrides the image's and ours */
  env?: Record<string, string>;
  stopTimeout: number;
  /** bridge for VirtualEthernet, or null for a private network with loopback only */
  bridge: string | null;
  privateUsers: boolean;
  /** bind the host bundle read-only (path) instead of expecting a copy in the rootfs */
  bindBundle?: string;
  /** MAN8S_READY chosen by the user (--ready); absent: the default of readyDefault() */
  ready?: string;
  /** MAN8S_HEALTH_ON_FAILURE (--health-on-failure); absent: not written (the init's default, none) */
  healthOnFailure?: string;
  /** volume binds (planVolumes); skip entries are ignored */
  volumes?: VolumePlan[];
}

export interface Rendered {
  nspawn: string;
  env: string;
  /** mbctl's template name that matches these settings */
  template: string;
}

/** Keys that go to the .nspawn Environment= lines, as mbctl does, not to the env file. */
const NSPAWN_ENV = new Set(["PATH", "TERM", "HOME", "LANG"]);
const KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function templateOf(cls: Classification): string {
  if (cls.processTwo) return "netns-noinit";
  return cls.kind === "systemd" ? "netns-systemd" : "netns-init";
}

/** --ready: a MAN8S_READY word or a probe URL, checked by the probes' own parser (docs/probes.md). */
export function checkReady(v: string): string {
  const t = v.trim();
  if ((READY_WORDS as readonly string[]).includes(t)) return t;
  const bad = (why: string) =>
    new AgentError(ERR.BAD_ARGS, `ready must be healthy, start, none or a probe URL (tcp://, http://, https://, icmp://, exec:), got '${t.slice(0, 80)}': ${why}`);
  if (t.length > 2048 || /[\n\r\0]/.test(t)) throw bad("too long or more than one line");
  try {
    parseProbeUrl(t);
  } catch (e) {
    if (e instanceof ProbeUrlError) throw bad(e.message);
    throw e;
  }
  return t;
}

/**
 * Readiness by default, so `systemctl start` returns when the app is really up: the image's Healthcheck
 * if it has one, else its first exposed TCP port on localhost, else "the app has started". An image that
 * runs systemd notifies nspawn itself (none); other PID-1 inits are reported ready when exec'd (start).
 */
export function readyDefault(cls: Classification, cfg: ImageConfig): { value: string; why: string } {
  if (cls.kind === "systemd") return { value: "none", why: "systemd sends READY=1 itself" };
  if (cls.execInit) return { value: "start", why: `${cls.kind} cannot notify: ready when it is exec'd` };
  const test = cfg.healthcheck?.Test;
  if (cfg.healthcheck && !(Array.isArray(test) && test[0] === "NONE")) return { value: "healthy", why: "config.Healthcheck" };
  for (const p of cfg.exposedPorts) {
    const m = /^(\d{1,5})(?:\/(tcp|udp|sctp))?$/i.exec(p);
    if (m && (m[2] ?? "tcp").toLowerCase() === "tcp" && Number(m[1]) > 0 && Number(m[1]) < 65536) {
      return { value: `tcp://127.0.0.1:${Number(m[1])}`, why: `config.ExposedPorts ${p}` };
    }
  }
  return { value: "start", why: "no Healthcheck and no exposed TCP port" };
}

export function renderFiles(inp: RenderInput): Rendered {
  const { cls, cfg, name } = inp;
  if (cls.argv.length === 0) throw new AgentError(ERR.BAD_CONFIG, "the image has neither Entrypoint nor Cmd: nothing to run");
  const env = new Map<string, string>();
  const set = (k: string, v: string) => env.set(k, v);
  const template = templateOf(cls);
  set("MAN8S_CONTAINER_NAME", name);
  set("MAN8S_CONTAINER_TEMPLATE", template);
  if (inp.yggdrasilAddress) set("MAN8S_YGGDRASIL_ADDRESS", inp.yggdrasilAddress);
  if (inp.imageUrl) set("MAN8S_OCI_IMAGE_URL", inp.imageUrl);
  set("MAN8S_AGENT_VERSION", VERSION);
  cls.argv.forEach((a, i) => {
    if (/[\n\r\0]/.test(a)) {
      throw new AgentError(ERR.BAD_ENV, `MAN8S_APPLICATION_ARGS: argument ${i} contains a newline, CR or NUL, which the env file cannot hold`);
    }
  });
  set("MAN8S_APPLICATION_ARGS", shlexJoin(cls.argv));
  set("MAN8S_APPLICATION_ARGV", JSON.stringify(cls.argv));
  if (cfg.user !== undefined && cfg.user !== "") {
    if (/[\n\r\0]/.test(cfg.user)) throw new AgentError(ERR.BAD_CONFIG, "config.User contains a newline, CR or NUL");
    set("MAN8S_APPLICATION_USER", cfg.user);
  }
  set("MAN8S_INIT_KIND", cls.kind);
  set("MAN8S_STOP_SIGNAL", cls.stopSignal);
  set("MAN8S_STOP_TIMEOUT", String(inp.stopTimeout));
  if (cls.signalGroup) set("MAN8S_SIGNAL_GROUP", "1");
  if (cls.execInit) set("MAN8S_EXEC_INIT", JSON.stringify(cls.execInit));
  if (cfg.healthcheck) set("MAN8S_HEALTHCHECK", JSON.stringify(cfg.healthcheck));
  set("MAN8S_READY", inp.ready !== undefined ? checkReady(inp.ready) : readyDefault(cls, cfg).value);
  if (inp.healthOnFailure !== undefined) set("MAN8S_HEALTH_ON_FAILURE", inp.healthOnFailure);
  set("MAN8S_REPORT_SOCKET", IN_CONTAINER_REPORT_SOCKET);
  // nspawn's settings parser keeps backslashes literally and has no escape for a quote inside quotes
  // (systemd 252, checked): a value with both quote kinds cannot be an Environment= line, so it goes to
  // the env file instead (the init exports those too)
  const inNspawn = (k: string, v: string) => NSPAWN_ENV.has(k) && !(v.includes('"') && v.includes("'"));
  for (const [k, v] of cfg.env) {
    if (inNspawn(k, v) || env.has(k)) continue;
    set(k, v);
  }
  for (const [k, v] of Object.entries(inp.env ?? {})) set(k, v);
  // the init's own validator: what the init would refuse (exit 65) is refused here, naming the field
  checkSettings(env, { requestEnv: inp.env, imageEnv: cfg.env, imageStopSignal: cfg.stopSignal });

  const lines = [`# man8s ${VERSION} hostagent: literal KEY=VALUE lines (no quotes removed, no expansion)`];
  for (const [k, v] of env) {
    if (!KEY_RE.test(k)) throw new AgentError(ERR.BAD_ENV, `env key '${k.slice(0, 80)}' is not [A-Za-z_][A-Za-z0-9_]*`);
    if (/[\n\r\0]/.test(v)) throw new AgentError(ERR.BAD_ENV, `env ${k}: the value contains a newline, CR or NUL, which the env file cannot hold`);
    lines.push(`${k}=${v}`);
  }

  // .nspawn: keys in mbctl's order; paths must survive nspawn's "src:dst:opts" syntax
  for (const [what, p] of [["root", inp.root], ["bundle", inp.bindBundle ?? ""]] as const) {
    if (/[:\s"\\]/.test(p)) throw new AgentError(ERR.BAD_PATH, `${what} path '${p}' contains ':', whitespace, '"' or '\\', which a Bind= line cannot carry`);
  }
  if (/[\n\r\0]/.test(cfg.workingDir) || !cfg.workingDir.startsWith("/")) {
    throw new AgentError(ERR.BAD_CONFIG, `WorkingDir '${cfg.workingDir.slice(0, 200)}' is not an absolute path on one line`);
  }
  if (inp.bridge !== null && !/^[A-Za-z0-9_.-]{1,15}$/.test(inp.bridge)) throw new AgentError(ERR.BAD_ARGS, `bridge '${inp.bridge}' is not an interface name`);
  const idmap = inp.privateUsers ? ":idmap" : "";
  const n: string[] = [`# man8s ${VERSION} hostagent: ${name}, image init ${cls.kind} (man8s init ${cls.mode})`, "[Exec]", "Boot=no"];
  n.push(`ProcessTwo=${cls.processTwo ? "yes" : "no"}`);
  n.push(`KillSignal=${cls.killSignal}`);
  n.push(`Parameters=${IN_CONTAINER_BUNDLE}/init`);
  // the unit becomes active when the init (or the image's systemd) sends READY=1: see MAN8S_READY
  n.push("NotifyReady=yes");
  n.push("ResolvConf=copy-stub", "Timezone=copy", "LinkJournal=no");
  if (inp.privateUsers) n.push("PrivateUsers=pick");
  for (const [k, v] of cfg.env) {
    if (!inNspawn(k, v)) continue;
    if (/[\n\r\0]/.test(v)) throw new AgentError(ERR.BAD_ENV, `env ${k}: the value contains a newline, CR or NUL`);
    n.push(v.includes('"') ? `Environment='${k}=${v}'` : `Environment="${k}=${v}"`);
  }
  n.push(`WorkingDirectory=${cfg.workingDir || "/"}`, "");
  n.push("[Network]");
  if (inp.bridge === null) n.push("Private=yes");
  else n.push("VirtualEthernet=yes", `Bridge=${inp.bridge}`);
  n.push("", "[Files]");
  if (inp.privateUsers) n.push("PrivateUsersOwnership=map");
  n.push(`BindReadOnly=${envFile(inp.root, name)}:${IN_CONTAINER_ENV}${idmap}`);
  if (inp.bindBundle) n.push(`BindReadOnly=${inp.bindBundle}:${IN_CONTAINER_BUNDLE}`);
  n.push(`BindReadOnly=${reportDir(inp.root, name)}:${IN_CONTAINER_REPORT_DIR}`);
  for (const v of inp.volumes ?? []) {
    if (v.mode === "skip" || !v.host) continue;
    if (/[:\s"\\]/.test(v.host)) throw new AgentError(ERR.BAD_PATH, `volume ${v.path}: host path '${v.host}' cannot be carried by a Bind= line`);
    n.push(`Bind=${v.host}:${v.path}${idmap}`);
  }
  return { nspawn: `${n.join("\n")}\n`, env: `${lines.join("\n")}\n`, template };
}
