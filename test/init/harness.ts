// Runs the real init in the three ways it runs in production: as a non-PID-1 subreaper, as PID 1 of a
// new pid namespace (unshare), and as PID 2 of a real systemd-nspawn container built from a
// busybox-static rootfs with the bundle bind-mounted read-only at /man8s-init.
import { $ } from "zx";
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";

$.verbose = false;
export { BIN, BUNDLE, ensureBuilt, ROOT };
import { BIN, BUNDLE, ensureBuilt, ROOT } from "../build.ts";
import { scratchDir } from "../scratch.ts";

const work = scratchDir("m8i");
export const WORK = work;

/** Static test helpers from test/fixtures, built with musl-gcc so they run in any rootfs. */
const fixtureBuilds = new Map<string, Promise<string>>();
/** `glibc: true` builds NAME-glibc with gcc -static (glibc reserves only signals 32 and 33, musl also 34). */
export function fixture(name: string, opts: { glibc?: boolean } = {}): Promise<string> {
  const key = opts.glibc ? `${name}-glibc` : name;
  let p = fixtureBuilds.get(key);
  if (!p) {
    const out = `${work}/bin/${key}`;
    p = (async () => {
      mkdirSync(`${work}/bin`, { recursive: true });
      await $`${opts.glibc ? "gcc" : "musl-gcc"} -static -Os -o ${out} ${ROOT}/test/fixtures/${name}.c`;
      // beside it, a script without the executable bit, for the exec-failure tests
      writeFileSync(`${work}/bin/not-executable`, "#!/bin/sh\necho never\n", { mode: 0o644 });
      return out;
    })();
    fixtureBuilds.set(key, p);
  }
  return p;
}

/** A busybox-static rootfs (plus our fixtures in /usr/local/bin); `withShell: false` leaves out /bin/sh. */
const rootfsBuilds = new Map<string, Promise<string>>();
export function busyboxRootfs(name: string, opts: { withShell?: boolean; busybox?: boolean } = {}): Promise<string> {
  let p = rootfsBuilds.get(name);
  if (!p) rootfsBuilds.set(name, (p = buildRootfs(`${work}/${name}`, opts)));
  return p;
}

async function buildRootfs(r: string, opts: { withShell?: boolean; busybox?: boolean }): Promise<string> {
  mkdirSync(`${r}/bin`, { recursive: true });
  mkdirSync(`${r}/usr/lib`, { recursive: true });
  mkdirSync(`${r}/usr/local/bin`, { recursive: true });
  mkdirSync(`${r}/etc`, { recursive: true });
  mkdirSync(`${r}/m8`, { recursive: true });
  // mount points must exist on a read-only root
  for (const d of ["man8s-init", "tmp", "run", "proc", "sys", "dev"]) mkdirSync(`${r}/${d}`, { recursive: true });
  writeFileSync(`${r}/usr/lib/os-release`, 'ID=m8i\nNAME="man8s test rootfs"\n');
  await $`ln -sf ../usr/lib/os-release ${r}/etc/os-release`;
  if (opts.busybox !== false) {
    await $`cp /bin/busybox ${r}/bin/busybox`;
    const applets = (await $`/bin/busybox --list`).stdout.split("\n").filter((a) => a && a !== "busybox");
    for (const a of applets) if (opts.withShell !== false || (a !== "sh" && a !== "ash")) await $`ln -sf busybox ${r}/bin/${a}`;
  }
  await $`cp -p ${await fixture("sigapp")} ${await fixture("sigapp", { glibc: true })} ${work}/bin/not-executable ${r}/usr/local/bin/`;
  return r;
}

export type Mode = "subreaper" | "pid1" | "nspawn";
export const MODES: Mode[] = ["subreaper", "pid1", "nspawn"];

export interface RunOptions {
  /** env file contents (written to a file the init reads as MAN8S_ENV_FILE / /man8env.env) */
  envFile?: string | Buffer;
  /** extra environment for the init */
  env?: Record<string, string>;
  rootfs?: string;
  readOnly?: boolean;
  /** use the bundle's launcher (default) or dist/man8s directly */
  launcher?: boolean;
  /** nspawn: bind the bundle read-only (default) or expect it copied into the rootfs already */
  inject?: "bind" | "copy";
  /** nspawn: extra arguments, placed before the command (e.g. --notify-ready=yes) */
  nspawnArgs?: string[];
  /** nspawn: run the init as the container's PID 1 (no --as-pid2) */
  asPid1?: boolean;
  /** environment of the outermost process only (nspawn, unshare or the init), never --setenv'd into a container */
  hostEnv?: Record<string, string>;
  /** nspawn: bind the run's directory at /run/man8s (default true); false leaves /run/man8s to the init */
  bindRunMan8s?: boolean;
  /** open fds (on /dev/null) the outermost process inherits as fds 3, 4, ... */
  inheritFds?: number;
}

export interface Running {
  mode: Mode;
  /** pid of the outermost process we started (init, unshare or nspawn) */
  outer: number;
  /** host pid of the init itself, once known */
  initPid(): Promise<number>;
  /** directory shared with the init: status.json lands in it; /m8 inside the container */
  dir: string;
  /** path of that directory as the app sees it */
  appDir: string;
  /** path of a fixture as the app sees it */
  bin(name: string): string;
  stdout(): string;
  stderr(): string;
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  exited: Promise<{ code: number | null; signal: string | null }>;
  status(): Record<string, any> | null;
  /** the container's stop: SIGTERM to nspawn (its --kill-signal=SIGRTMIN+3 reaches the stub), else SIGTERM to the init */
  stop(): Promise<void>;
  kill(sig: string | number): Promise<void>;
}

let seq = 0;

/** Start the init in `mode` with `cmd` as the app (`man8s init -- cmd`); cmd paths use `bin()` names. */
export async function runInit(mode: Mode, cmd: (r: { bin: (n: string) => string; dir: string }) => string[], opts: RunOptions = {}): Promise<Running> {
  await ensureBuilt();
  const id = `${process.pid}-${++seq}`;
  const dir = `${work}/run-${id}`;
  mkdirSync(dir, { recursive: true });
  const inContainer = mode === "nspawn";
  const appDir = inContainer ? "/m8" : dir;
  const fixtures = `${work}/bin`;
  await fixture("sigapp");
  const bin = (n: string) => (inContainer ? `/usr/local/bin/${n}` : `${fixtures}/${n}`);
  const args = cmd({ bin, dir: appDir });
  // SYSTEMD_NSPAWN_LOCK=0: concurrent containers share one read-mostly rootfs
  const env: Record<string, string> = { PATH: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", SYSTEMD_NSPAWN_LOCK: "0", ...opts.env, ...opts.hostEnv };
  if (opts.envFile !== undefined) writeFileSync(`${dir}/env`, opts.envFile);

  let argv: string[];
  const dashdash = args.length ? ["--"] : []; // no command: the env file's MAN8S_APPLICATION_ARGV/ARGS
  const init = opts.launcher === false ? [BIN, "init"] : [`${BUNDLE}/init`];
  if (mode === "subreaper") {
    argv = [...init, ...dashdash, ...args];
    env.MAN8S_STATUS_FILE = opts.env?.MAN8S_STATUS_FILE ?? `${dir}/status.json`;
    env.MAN8S_ENV_FILE = `${dir}/env`;
  } else if (mode === "pid1") {
    argv = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", ...init, ...dashdash, ...args];
    env.MAN8S_STATUS_FILE = `${dir}/status.json`;
    env.MAN8S_ENV_FILE = `${dir}/env`;
  } else {
    const rootfs = opts.rootfs ?? (await busyboxRootfs("rootfs-busybox"));
    argv = [
      "systemd-nspawn", "--register=no", "--keep-unit", "-q", "-M", `m8i${id}`.slice(0, 60), "-D", rootfs, ...(opts.asPid1 ? [] : ["--as-pid2"]),
      "--kill-signal=SIGRTMIN+3", "--console=pipe", "--resolv-conf=off", "--timezone=off", "--link-journal=no",
      ...(opts.inject === "copy" ? [] : [`--bind-ro=${BUNDLE}:/man8s-init`]), `--bind=${dir}:/m8`, ...(opts.bindRunMan8s === false ? [] : [`--bind=${dir}:/run/man8s`]),
      ...(opts.readOnly ? ["--read-only"] : []),
      ...(opts.envFile !== undefined ? [`--bind-ro=${dir}/env:/man8env.env`] : []),
      ...Object.entries(opts.env ?? {}).map(([k, v]) => `--setenv=${k}=${v}`),
      ...(opts.nspawnArgs ?? []),
      "/man8s-init/init", ...dashdash, ...args,
    ];
  }
  const extra: number[] = [];
  for (let i = 0; i < (opts.inheritFds ?? 0); i++) extra.push(openSync("/dev/null", "r"));
  const proc = Bun.spawn(argv, { env, stdio: ["ignore", "pipe", "pipe", ...extra] });
  for (const fd of extra) closeSync(fd);
  let out = "";
  let err = "";
  const pump = async (s: ReadableStream<Uint8Array>, add: (t: string) => void) => {
    const dec = new TextDecoder();
    for await (const c of s) add(dec.decode(c, { stream: true }));
  };
  const pumps = Promise.all([pump(proc.stdout, (t) => (out += t)), pump(proc.stderr, (t) => (err += t))]);
  const exited = proc.exited.then(async () => {
    await pumps;
    return { code: proc.exitCode, signal: proc.signalCode ? String(proc.signalCode) : null };
  });
  running.add(proc.pid);
  void exited.then(() => running.delete(proc.pid));

  const initPid = async (): Promise<number> => {
    // subreaper: the process we spawned; unshare -> init; nspawn -> (sd-stubinit) -> init, or nspawn -> init as PID 1
    const depth = mode === "subreaper" ? 0 : mode === "pid1" || opts.asPid1 ? 1 : 2;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      let pids = [proc.pid];
      for (let d = 0; d < depth && pids.length; d++) pids = pids.flatMap(childrenOf);
      // the pid exists from fork on; it is the init once it has exec'd the launcher (or what it execs)
      if (pids.length && isOurs(pids[0]!)) return pids[0]!;
      await Bun.sleep(1);
    }
    throw new Error(`init pid not found (${mode})\n${err}`);
  };

  const r: Running = {
    mode, outer: proc.pid, initPid, dir, appDir, bin,
    stdout: () => out,
    stderr: () => err,
    async waitFor(re, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      let done = false;
      void exited.then(() => (done = true));
      for (;;) {
        const finished = done;
        const m = (out + err).match(re);
        if (m) return m;
        if (finished || Date.now() > deadline) {
          const why = finished ? "exited" : "timed out";
          throw new Error(`${why} waiting for ${re}\n--- stdout\n${out}\n--- stderr\n${err}`);
        }
        await Bun.sleep(5);
      }
    },
    exited,
    status() {
      try {
        return JSON.parse(readFileSync(`${dir}/status.json`, "utf8"));
      } catch {
        return null;
      }
    },
    async stop() {
      if (mode === "nspawn") process.kill(proc.pid, "SIGTERM");
      else process.kill(await initPid(), "SIGTERM");
    },
    async kill(sig) {
      process.kill(await initPid(), sig as NodeJS.Signals);
    },
  };
  return r;
}

const running = new Set<number>();
/**
 * Kill whatever a failed test left running (by pid, never by name): each process we started and everything
 * under it, collected first, since a killed nspawn leaves its container running and a killed subreaper init
 * leaves the app (SIGKILL of a container's PID 1 ends its whole pid namespace).
 */
export function killLeftovers(): void {
  const tree = (pid: number): number[] => [pid, ...childrenOf(pid).flatMap(tree)];
  for (const pid of [...running].flatMap(tree)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  running.clear();
}

/**
 * The pid is ours once it has exec'd the launcher and run its first statement (signals blocked), or
 * once the init has handlers. Between fork and that point it is still unshare/nspawn/the test runner,
 * or a few microseconds of C start-up that no init can shield.
 */
function isOurs(pid: number): boolean {
  try {
    const exe = readlinkSync(`/proc/${pid}/exe`);
    if (!(exe.endsWith("/init") || exe.endsWith("/man8s") || exe.includes("ld-linux"))) return false;
    const st = readFileSync(`/proc/${pid}/status`, "utf8");
    return !/^SigBlk:\s+0+$/m.test(st) || !/^SigCgt:\s+0+$/m.test(st);
  } catch {
    return false;
  }
}

export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Parse sigapp's log: counts of each signal number received. */
export function signalCounts(text: string): Map<number, number> {
  const m = new Map<number, number>();
  for (const x of text.matchAll(/^sig (\d+) from/gm)) m.set(Number(x[1]), (m.get(Number(x[1])) ?? 0) + 1);
  return m;
}

/** Zombies whose parent is `pid` (from /proc). */
export function zombiesOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const st = readFileSync(`/proc/${name}/stat`, "latin1");
      const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
      if (f[0] === "Z" && Number(f[1]) === pid) out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}
