// The production path for the real-app tests: a lab network namespace with a bridge and dnsmasq (as
// test/netctl/lab.ts, names m8r*), and machines started exactly as systemd-nspawn@.service starts them:
//   systemd-nspawn --quiet --keep-unit --boot --link-journal=try-guest --network-veth -U --settings=override
//                  --machine=NAME            (+ --register=no: no systemd here)
// nspawn finds NAME's image and NAME.nspawn by name, as under systemd. So the host's directories stay
// untouched, each machine runs in a private mount namespace where /run/machines/NAME is the unpacked
// rootfs and /run/systemd/nspawn/NAME.nspawn is the agent's link (both on tmpfs mounts only that
// namespace sees; nspawn searches both places). Everything started is tracked by pid and ended by pid.
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import { labDir } from "../scratch.ts";
import { stopProcess } from "../wait.ts";

export const NSPAWN_SERVICE_FLAGS = ["--quiet", "--keep-unit", "--boot", "--link-journal=try-guest", "--network-veth", "-U", "--settings=override"];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false | null> | T | undefined | false | null, timeoutMs: number, stepMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

export function sh(argv: string[], opts: { env?: Record<string, string>; ok?: boolean } = {}): { code: number; out: string; err: string } {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe", env: opts.env ? { ...process.env, ...opts.env } : undefined });
  const res = { code: r.exitCode ?? -1, out: r.stdout.toString(), err: r.stderr.toString() };
  if (opts.ok !== false && res.code !== 0) throw new Error(`${argv.join(" ")} → ${res.code}: ${res.err || res.out}`);
  return res;
}

type Proc = ReturnType<typeof Bun.spawn>;

export class AppLab {
  readonly ns: string;
  readonly bridge: string;
  readonly v4: string;
  readonly dir: string;
  private procs: Proc[] = [];
  machines: Machine[] = [];

  constructor(tag: string, net: number) {
    this.ns = `m8r${tag}h`;
    this.bridge = `m8r${tag}br`;
    this.v4 = `10.${net}.0`;
    this.dir = labDir(`m8r-${tag}`);
  }

  inNs(argv: string[]): string[] {
    return ["nsenter", `--net=/run/netns/${this.ns}`, "--", ...argv];
  }

  async start(): Promise<this> {
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    if (existsSync(`/run/netns/${this.ns}`)) sh(["ip", "netns", "del", this.ns]);
    sh(["ip", "netns", "add", this.ns]);
    const n = (a: string[]) => sh(this.inNs(a));
    n(["ip", "link", "set", "lo", "up"]);
    n(["ip", "link", "add", this.bridge, "type", "bridge"]);
    n(["ip", "link", "set", this.bridge, "up"]);
    n(["ip", "addr", "add", `${this.v4}.1/24`, "dev", this.bridge]);
    const log = `${this.dir}/dnsmasq.log`;
    const dnsmasq = this.spawn(this.inNs([
      "dnsmasq", "--no-daemon", "--user=root", "--group=root", "--conf-file=/dev/null", `--pid-file=${this.dir}/dnsmasq.pid`,
      `--interface=${this.bridge}`, "--bind-interfaces", `--dhcp-range=${this.v4}.100,${this.v4}.200,infinite`, "--no-resolv",
      "--no-hosts", "--domain=apps.test", `--dhcp-leasefile=${this.dir}/dnsmasq.leases`, "--log-dhcp", `--log-facility=${log}`, "--no-ping",
    ]));
    await waitFor("dnsmasq", () => {
      if (dnsmasq.exitCode !== null) throw new Error("dnsmasq exited");
      return existsSync(log) && readFileSync(log, "utf8").includes("DHCP, IP range");
    }, 5000);
    // the private mount namespaces of the machines put tmpfs mounts on these; nspawn makes the first itself
    mkdirSync("/run/systemd/nspawn", { recursive: true });
    mkdirSync("/run/machines", { recursive: true });
    return this;
  }

  spawn(argv: string[], opts: { env?: Record<string, string>; stdout?: "pipe" | "ignore" } = {}): Proc {
    const p = Bun.spawn(argv, { stdin: "ignore", stdout: opts.stdout ?? "ignore", stderr: opts.stdout ?? "ignore", env: { ...process.env, ...opts.env } });
    this.procs.push(p);
    return p;
  }

  async cleanup(): Promise<void> {
    for (const m of this.machines) await m.stop().catch(() => {});
    for (const p of this.procs.reverse()) await stopProcess(p);
    Bun.spawnSync(["ip", "netns", "del", this.ns]);
    if (!process.env.M8R_KEEP) rmSync(this.dir, { recursive: true, force: true });
  }
}

const MOUNT_AND_EXEC = `set -e
mount -t tmpfs -o mode=0755,size=1m m8r /run/systemd/nspawn
mount -t tmpfs -o mode=0700,size=1m m8r /run/machines
ln -s "$M8R_SETTINGS" "/run/systemd/nspawn/$M8R_NAME.nspawn"
mkdir "/run/machines/$M8R_NAME"
mount --bind "$M8R_ROOTFS" "/run/machines/$M8R_NAME"
shift
exec "$@"`;

export class Machine {
  private out = "";
  readonly startedAt = performance.now();
  exitedAt = 0;
  readonly done: Promise<number>;

  constructor(
    readonly lab: AppLab,
    readonly name: string,
    readonly proc: Proc,
  ) {
    const dec = new TextDecoder();
    const pump = async (s: ReadableStream<Uint8Array>) => {
      for await (const chunk of s) this.out += dec.decode(chunk, { stream: true });
    };
    const streams = Promise.all([pump(proc.stdout as ReadableStream<Uint8Array>), pump(proc.stderr as ReadableStream<Uint8Array>)]);
    this.done = proc.exited.then(async (code) => {
      this.exitedAt = performance.now();
      await streams;
      return code;
    });
  }

  /**
   * Starts NAME with the unit's flags. settings: the agent's <root>/etc/systemd/nspawn/NAME.nspawn link;
   * notifySocket: nspawn's own NOTIFY_SOCKET (what systemd gives a Type=notify unit).
   */
  static start(lab: AppLab, name: string, rootfs: string, settings: string, notifySocket?: string): Machine {
    const argv = lab.inNs([
      "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", MOUNT_AND_EXEC, "sh", "--",
      "systemd-nspawn", ...NSPAWN_SERVICE_FLAGS, `--machine=${name}`, "--register=no",
    ]);
    const env: Record<string, string> = { M8R_NAME: name, M8R_ROOTFS: rootfs, M8R_SETTINGS: settings, SYSTEMD_LOG_LEVEL: "warning" };
    if (notifySocket) env.NOTIFY_SOCKET = notifySocket;
    const m = new Machine(lab, name, lab.spawn(argv, { env, stdout: "pipe" }));
    lab.machines.push(m);
    return m;
  }

  /** everything the machine printed (nspawn's console: the init's and the app's output) */
  get log(): string {
    return this.out;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** A process inside the machine (its PID 1, nspawn's only child), for nsenter. */
  leader(): number | undefined {
    try {
      const kids = readFileSync(`/proc/${this.proc.pid}/task/${this.proc.pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
      return kids.length > 0 ? Number(kids[kids.length - 1]) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Runs argv in the machine's namespaces (all of them with `all`, else only the network's). */
  exec(argv: string[], opts: { all?: boolean; uid?: number; gid?: number; ok?: boolean } = {}): { code: number; out: string; err: string } {
    const pid = this.leader();
    if (!pid) throw new Error(`${this.name}: not running\n${this.log}`);
    const ns = opts.all ? ["-a"] : ["-n"];
    const ids = opts.uid === undefined ? [] : ["-S", String(opts.uid), "-G", String(opts.gid ?? opts.uid)];
    return sh(["nsenter", "-t", String(pid), ...ns, ...ids, "--", ...argv], { ok: opts.ok });
  }

  /**
   * Credentials, as the container sees them, of its processes named comm: host ids read from /proc,
   * shifted back through the process's uid_map/gid_map (PrivateUsers=pick).
   */
  credsOf(comm: string): { pid: number; uid: number; gid: number; groups: number[] }[] {
    const leader = this.leader();
    if (!leader) return [];
    const pidns = readlinkSync(`/proc/${leader}/ns/pid`);
    const out: { pid: number; uid: number; gid: number; groups: number[] }[] = [];
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      try {
        if (readFileSync(`/proc/${d}/comm`, "utf8").trim() !== comm || readlinkSync(`/proc/${d}/ns/pid`) !== pidns) continue;
        const st = readFileSync(`/proc/${d}/status`, "utf8");
        const field = (k: string) => (new RegExp(`^${k}:\\s*(.*)$`, "m").exec(st)?.[1] ?? "").trim().split(/\s+/).filter(Boolean).map(Number);
        const shift = (map: string, id: number) => {
          for (const l of map.trim().split("\n")) {
            const [inside = 0, host = 0, n = 0] = l.trim().split(/\s+/).map(Number);
            if (id >= host && id < host + n) return id - host + inside;
          }
          return -1;
        };
        const um = readFileSync(`/proc/${d}/uid_map`, "utf8");
        const gm = readFileSync(`/proc/${d}/gid_map`, "utf8");
        out.push({ pid: Number(d), uid: shift(um, field("Uid")[0] ?? -1), gid: shift(gm, field("Gid")[0] ?? -1), groups: field("Groups").map((g) => shift(gm, g)) });
      } catch {
        // raced with exit
      }
    }
    return out;
  }

  /** the machine's IPv4 address on the lab bridge (from its host0) */
  address(): string | undefined {
    const r = this.exec(["ip", "-j", "-4", "addr", "show", "dev", "host0"], { ok: false });
    if (r.code !== 0) return undefined;
    const j = JSON.parse(r.out || "[]") as { addr_info?: { local: string }[] }[];
    return j[0]?.addr_info?.[0]?.local;
  }

  /** What systemd does to stop the unit: SIGTERM to nspawn, which sends the KillSignal to the container. */
  async stop(timeoutMs = 30_000): Promise<number> {
    if (this.running) {
      this.proc.kill("SIGTERM");
      const k = setTimeout(() => this.proc.kill("SIGKILL"), timeoutMs);
      await this.proc.exited;
      clearTimeout(k);
    }
    return this.done;
  }
}
