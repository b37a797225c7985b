// Network lab for netctl tests and the bench: namespaces, a bridge with dnsmasq (DHCPv4 2-minute lease,
// RA for a ULA /64, DNS), optional real yggdrasil nodes (host node A, remote node B peered over a veth), and
// systemd-nspawn containers from a busybox-static rootfs with the man8s bundle bind-mounted at /man8s-init.
// Every netns and link is named with the lab's prefix (m8n* by default); everything started is tracked by pid
// and removed in cleanup(). `router: "radvd"` replaces dnsmasq's RAs with radvd's (dnsmasq keeps DHCP and DNS).
import { $ } from "bun";
import { appendFileSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";

export { BIN, BUNDLE, ensureBuilt, ROOT } from "../build.ts";
import { BUNDLE } from "../build.ts";
import { stopProcess, waitFor } from "../wait.ts";
import { labDir } from "../scratch.ts";

export const isRoot = process.getuid?.() === 0;
export const haveTools = isRoot && ["/usr/bin/systemd-nspawn", "/usr/sbin/dnsmasq", "/bin/busybox"].every((p) => existsSync(p));
export const haveYgg = (existsSync("/usr/sbin/yggdrasil") || existsSync("/usr/bin/yggdrasil")) && existsSync("/dev/net/tun");

export interface LabOpts {
  /** second octet of 10.X.0.0/24 and of fdX::/64; unique per lab */
  net: number;
  ygg?: boolean;
  lease?: string;
  dnsmasqExtra?: string[];
  /** name prefix of every netns, link and scratch dir (default m8n; keep prefix + tag + 3 chars <= 15) */
  prefix?: string;
  /** who sends RAs: dnsmasq (default) or radvd (rate-limited: MinDelayBetweenRAs 3 s, RFC 4861 §6.2.6) */
  router?: "dnsmasq" | "radvd";
}

interface Tracked {
  name: string;
  proc: ReturnType<typeof Bun.spawn>;
}

export { waitFor };

export class Container {
  constructor(
    readonly lab: Lab,
    readonly name: string,
    readonly proc: ReturnType<typeof Bun.spawn>,
    readonly logFile: string,
    readonly rootfs: string,
  ) {}
  log(): string {
    try {
      return readFileSync(this.logFile, "utf8");
    } catch {
      return "";
    }
  }
  /** host pid of the payload (found by its M8N_MACHINE marker in the environment) */
  payloadPid(): number | undefined {
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const env = readFileSync(`/proc/${d}/environ`, "latin1");
        if (env.includes(`M8N_MACHINE=${this.name}\0`)) return Number(d);
      } catch {
        // raced with exit
      }
    }
    return undefined;
  }
  get exited(): boolean {
    return this.proc.exitCode !== null || this.proc.signalCode !== null;
  }
  /** runs a host command inside the container's network namespace */
  async net(cmd: string[]): Promise<{ code: number; out: string; err: string }> {
    const pid = this.payloadPid();
    if (!pid) throw new Error(`container ${this.name}: payload not running\n${this.log()}`);
    const r = Bun.spawnSync(["nsenter", "-t", String(pid), "-n", "--", ...cmd], { stdout: "pipe", stderr: "pipe" });
    return { code: r.exitCode ?? -1, out: r.stdout.toString(), err: r.stderr.toString() };
  }
  async ipJson(args: string[]): Promise<any[]> {
    const r = await this.net(["ip", "-j", ...args]);
    if (r.code !== 0) throw new Error(`ip ${args.join(" ")}: ${r.err}`);
    return JSON.parse(r.out || "[]");
  }
  async ping(addr: string, extra: string[] = []): Promise<boolean> {
    // the host has no ping of its own; busybox's works from any namespace
    const r = await this.net(["/bin/busybox", "ping", "-c", "1", "-W", "2", ...extra, addr]);
    return r.code === 0;
  }
  async stop(): Promise<number | null> {
    if (!this.exited) {
      this.proc.kill("SIGTERM");
      const t = setTimeout(() => this.proc.kill("SIGKILL"), 15000);
      await this.proc.exited;
      clearTimeout(t);
    }
    return this.proc.exitCode;
  }
}

export class Lab {
  readonly dir: string;
  readonly hostNs: string;
  readonly remoteNs: string;
  readonly bridge: string;
  readonly v4: string;
  readonly ula: string;
  yggSubnet = "";
  yggA = "";
  yggB = "";
  readonly fake2xx = "2ff:ffff::1";
  readonly prefix: string;
  /** the interface name inside client namespaces made by addClientNs */
  readonly clientIf: string;
  private tracked: Tracked[] = [];
  private netns: string[] = [];
  containers: Container[] = [];
  private clients = 0;

  constructor(
    readonly tag: string,
    readonly o: LabOpts,
  ) {
    const p = (this.prefix = o.prefix ?? "m8n");
    this.clientIf = `${p}c0`;
    this.dir = labDir(`${p}-${tag}`);
    this.hostNs = `${p}${tag}h`;
    this.remoteNs = `${p}${tag}r`;
    this.bridge = `${p}${tag}br`;
    this.v4 = `10.${o.net}.0`;
    this.ula = `fd${o.net}::`;
  }

  inHost(cmd: string[]) {
    return ["nsenter", `--net=/run/netns/${this.hostNs}`, ...cmd];
  }

  async sh(cmd: string[], ns?: string): Promise<string> {
    const full = ns ? ["nsenter", `--net=/run/netns/${ns}`, ...cmd] : cmd;
    const r = Bun.spawnSync(full, { stdout: "pipe", stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`${full.join(" ")}: ${r.stderr.toString()}`);
    return r.stdout.toString();
  }

  private async addNs(name: string): Promise<void> {
    if (existsSync(`/run/netns/${name}`)) await this.sh(["ip", "netns", "del", name]);
    await this.sh(["ip", "netns", "add", name]);
    this.netns.push(name);
    await this.sh(["ip", "link", "set", "lo", "up"], name);
  }

  spawn(name: string, cmd: string[], logFile?: string): ReturnType<typeof Bun.spawn> {
    const out = logFile ? Bun.file(logFile) : "ignore";
    const proc = Bun.spawn(cmd, { stdin: "ignore", stdout: out, stderr: out });
    this.tracked.push({ name, proc });
    return proc;
  }

  async start(): Promise<this> {
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    await this.addNs(this.hostNs);
    const h = this.hostNs;
    await this.sh(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", "net.ipv4.ip_forward=1"], h);
    await this.sh(["ip", "link", "add", this.bridge, "type", "bridge"], h);
    // like a host's bridge that has had ports for a while: carrier (an idle veth as its first port) and a
    // valid link-local at once. Otherwise its link-local is still in DAD when the first container asks for an
    // RA, and RAs sent from a global source are ignored (RFC 4861 §6.1.2).
    await this.sh(["sysctl", "-qw", `net.ipv6.conf.${this.bridge}.accept_dad=0`], h);
    const anchor = `${this.prefix}${this.tag}an`;
    await this.sh(["ip", "link", "add", anchor, "type", "veth", "peer", "name", `${this.prefix}${this.tag}ap`], h);
    await this.sh(["ip", "link", "set", anchor, "master", this.bridge], h);
    for (const l of [anchor, `${this.prefix}${this.tag}ap`, this.bridge]) await this.sh(["ip", "link", "set", l, "up"], h);
    await this.sh(["ip", "addr", "add", `${this.v4}.1/24`, "dev", this.bridge], h);
    // nodad: a bridge without ports has no carrier, DAD would keep these tentative
    await this.sh(["ip", "-6", "addr", "add", `${this.ula}1/64`, "dev", this.bridge, "nodad"], h);
    await this.sh(["ip", "-6", "addr", "add", `${this.fake2xx}/128`, "dev", "lo"], h);
    if (this.o.ygg) await this.startYgg();
    else this.yggSubnet = `300:${this.o.net}:0:1::/64`;
    const pfx = this.yggSubnet.replace("::/64", "");
    await this.sh(["ip", "-6", "addr", "add", `${pfx}::1/64`, "dev", this.bridge, "nodad"], h);
    await this.startDnsmasq();
    if (this.o.router === "radvd") await this.startRadvd();
    return this;
  }

  get radvdLog(): string {
    try {
      return readFileSync(`${this.dir}/radvd.log`, "utf8");
    } catch {
      return "";
    }
  }

  /** radvd with its defaults for the RA rate (MinDelayBetweenRAs 3 s; initial RAs 16 s apart). */
  private async startRadvd(): Promise<void> {
    const conf = `${this.dir}/radvd.conf`;
    writeFileSync(conf, `interface ${this.bridge} {\n  AdvSendAdvert on;\n  MaxRtrAdvInterval 600;\n  prefix ${this.ula}/64 {\n    AdvOnLink on;\n    AdvAutonomous on;\n  };\n};\n`);
    const p = this.spawn("radvd", this.inHost(["radvd", "-n", "-C", conf, "-p", `${this.dir}/radvd.pid`, "-m", "logfile", "-l", `${this.dir}/radvd.log`, "-d", "5", "-u", "root"]));
    await waitFor("radvd to send its first RA", () => /sending RA|sent RA/i.test(this.radvdLog) || (p.exitCode !== null ? Promise.reject(new Error(`radvd exited: ${this.radvdLog}`)) : false), 10000, 50);
  }

  get dnsmasqLog(): string {
    try {
      return readFileSync(`${this.dir}/dnsmasq.log`, "utf8");
    } catch {
      return "";
    }
  }

  private dnsmasq: ReturnType<typeof Bun.spawn> | undefined;

  async startDnsmasq(extra: string[] = this.o.dnsmasqExtra ?? [], range = `${this.v4}.100,${this.v4}.200`): Promise<void> {
    const args = [
      "dnsmasq", "--no-daemon", "--user=root", "--group=root", "--conf-file=/dev/null", `--pid-file=${this.dir}/dnsmasq.pid`,
      `--interface=${this.bridge}`, "--bind-interfaces", `--dhcp-range=${range},${this.o.lease ?? "2m"}`,
      ...(this.o.router === "radvd" ? [] : ["--enable-ra", `--dhcp-range=${this.ula},ra-only,64`]), "--no-resolv", "--no-hosts", "--domain=lab.test",
      `--host-record=gw.lab.test,${this.v4}.1,${this.ula}1`, `--dhcp-leasefile=${this.dir}/dnsmasq.leases`,
      "--log-dhcp", `--log-facility=${this.dir}/dnsmasq.log`, ...extra,
    ];
    this.dnsmasq = this.spawn("dnsmasq", this.inHost(args));
    await waitFor("dnsmasq to start", () => this.dnsmasqLog.includes("DHCP, IP range") || (this.dnsmasq!.exitCode !== null ? Promise.reject(new Error("dnsmasq exited")) : false), 5000, 50);
  }

  async stopDnsmasq(): Promise<void> {
    if (!this.dnsmasq) return;
    this.dnsmasq.kill("SIGTERM");
    await this.dnsmasq.exited;
    this.dnsmasq = undefined;
  }

  private async yggConf(name: string, listen: string[], peers: string[], ifname: string): Promise<string> {
    const conf = JSON.parse((await $`yggdrasil -genconf -json`.quiet()).stdout.toString());
    conf.Listen = listen;
    conf.Peers = peers;
    conf.AdminListen = `unix://${this.dir}/ygg${name}.sock`;
    conf.IfName = ifname;
    conf.MulticastInterfaces = [];
    const f = `${this.dir}/ygg${name}.conf`;
    writeFileSync(f, JSON.stringify(conf));
    return f;
  }

  private async startYgg(): Promise<void> {
    await this.addNs(this.remoteNs);
    const r = this.remoteNs, h = this.hostNs;
    const a = `${this.prefix}${this.tag}ya`, b = `${this.prefix}${this.tag}yb`;
    await this.sh(["ip", "link", "add", a, "netns", h, "type", "veth", "peer", "name", b, "netns", r]);
    await this.sh(["ip", "addr", "add", `10.${this.o.net}.255.1/30`, "dev", a], h);
    await this.sh(["ip", "link", "set", a, "up"], h);
    await this.sh(["ip", "addr", "add", `10.${this.o.net}.255.2/30`, "dev", b], r);
    await this.sh(["ip", "link", "set", b, "up"], r);
    await this.sh(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], r);
    const ca = await this.yggConf("A", [`tcp://10.${this.o.net}.255.1:17001`], [], `${this.prefix}${this.tag}ta`);
    const cb = await this.yggConf("B", [], [`tcp://10.${this.o.net}.255.1:17001`], `${this.prefix}${this.tag}tb`);
    this.yggSubnet = (await $`yggdrasil -useconffile ${ca} -subnet`.quiet()).stdout.toString().trim();
    this.yggA = (await $`yggdrasil -useconffile ${ca} -address`.quiet()).stdout.toString().trim();
    this.yggB = (await $`yggdrasil -useconffile ${cb} -address`.quiet()).stdout.toString().trim();
    const logA = `${this.dir}/yggA.log`, logB = `${this.dir}/yggB.log`;
    this.spawn("yggA", ["nsenter", `--net=/run/netns/${h}`, "yggdrasil", "-useconffile", ca, "-logto", logA]);
    // B dials A: start it only once A listens, or its next retry comes a minute later (net-lab G6)
    await waitFor("yggdrasil A to listen", () => existsSync(logA) && readFileSync(logA, "utf8").includes("istener started"), 10000, 50);
    this.spawn("yggB", ["nsenter", `--net=/run/netns/${r}`, "yggdrasil", "-useconffile", cb, "-logto", logB]);
    await waitFor("yggdrasil peering", () => existsSync(logB) && readFileSync(logB, "utf8").includes("Connected"), 15000, 50);
  }

  /** A plain network namespace plugged into the bridge (no nspawn), with interface `clientIf` (m8nc0). */
  async addClientNs(): Promise<string> {
    const i = this.clients++;
    const ns = `${this.prefix}${this.tag}c${i}`;
    await this.addNs(ns);
    const hv = `${this.prefix}${this.tag}v${i}`;
    await this.sh(["ip", "link", "add", hv, "netns", this.hostNs, "type", "veth", "peer", "name", this.clientIf, "netns", ns]);
    await this.sh(["ip", "link", "set", hv, "master", this.bridge], this.hostNs);
    await this.sh(["ip", "link", "set", hv, "up"], this.hostNs);
    return ns;
  }

  /** the bridge-side veth of a client namespace made by addClientNs */
  hostVeth(ns: string): string {
    return ns.replace(/c(\d+)$/, "v$1");
  }

  /** busybox-static rootfs (applet links, os-release) for one container, plus `files` (path -> text) */
  rootfs(name: string, files: Record<string, string> = {}): string {
    const root = `${this.dir}/rootfs-${name}`;
    rmSync(root, { recursive: true, force: true });
    for (const d of ["bin", "etc", "dev", "proc", "sys", "run", "tmp", "usr/lib", "man8s-init", "root"]) mkdirSync(`${root}/${d}`, { recursive: true });
    cpSync("/bin/busybox", `${root}/bin/busybox`);
    const applets = Bun.spawnSync(["/bin/busybox", "--list"]).stdout.toString().split("\n").filter((a) => a && a !== "busybox");
    for (const a of applets) symlinkSync("busybox", `${root}/bin/${a}`);
    writeFileSync(`${root}/usr/lib/os-release`, "ID=m8nlab\nNAME=\"m8n lab busybox\"\n");
    symlinkSync("../usr/lib/os-release", `${root}/etc/os-release`);
    writeFileSync(`${root}/etc/resolv.conf`, "# placeholder\n");
    for (const [p, text] of Object.entries(files)) writeFileSync(`${root}${p}`, text);
    return root;
  }

  /**
   * Starts an nspawn container on the bridge running `cmd` as PID 2 with `env`. `root`: a rootfs made
   * beforehand by rootfs() (so many containers can start at once); `onLine`: each output line as it arrives,
   * with the time (performance.now()) it was read.
   */
  startContainer(name: string, env: Record<string, string>, cmd: string[], files: Record<string, string> = {}, opts: { root?: string; onLine?: (line: string, at: number) => void } = {}): Container {
    const root = opts.root ?? this.rootfs(name, files);
    const logFile = `${this.dir}/ct-${name}.log`;
    writeFileSync(logFile, "");
    const args = [
      "nsenter", `--net=/run/netns/${this.hostNs}`, "systemd-nspawn", "--register=no", "--keep-unit", "-q", "-M", name, "-D", root,
      "--as-pid2", `--network-bridge=${this.bridge}`, "--resolv-conf=off", "--timezone=off", "--link-journal=no", "--console=pipe",
      "--kill-signal=SIGRTMIN+3", `--bind-ro=${BUNDLE}:/man8s-init`, `--setenv=M8N_MACHINE=${name}`,
      ...Object.entries(env).map(([k, v]) => `--setenv=${k}=${v}`), ...cmd,
    ];
    let proc: ReturnType<typeof Bun.spawn>;
    if (opts.onLine) {
      const onLine = opts.onLine;
      proc = Bun.spawn(args, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
      this.tracked.push({ name: `nspawn-${name}`, proc });
      for (const stream of [proc.stdout, proc.stderr] as ReadableStream<Uint8Array>[]) {
        void (async () => {
          const dec = new TextDecoder();
          let rest = "";
          for await (const chunk of stream) {
            const at = performance.now();
            const text = rest + dec.decode(chunk, { stream: true });
            const lines = text.split("\n");
            rest = lines.pop() ?? "";
            appendFileSync(logFile, lines.map((l) => `${l}\n`).join(""));
            for (const l of lines) onLine(l, at);
          }
        })().catch(() => {});
      }
    } else proc = this.spawn(`nspawn-${name}`, args, logFile);
    const c = new Container(this, name, proc, logFile, root);
    this.containers.push(c);
    return c;
  }

  async cleanup(): Promise<void> {
    for (const c of this.containers) await c.stop().catch(() => {});
    for (const t of this.tracked.reverse()) await stopProcess(t.proc);
    for (const ns of this.netns.reverse()) Bun.spawnSync(["ip", "netns", "del", ns]);
    if (!process.env.M8N_KEEP) rmSync(this.dir, { recursive: true, force: true });
  }

  note(msg: string): void {
    appendFileSync(`${this.dir}/notes.log`, `${new Date().toISOString()} ${msg}\n`);
  }
}

/** dnsmasq log lines about one MAC */
export function dhcpLines(log: string, mac: string): string[] {
  return log.split("\n").filter((l) => l.includes(mac) && /DHCP(ACK|REQUEST|NAK|DISCOVER|OFFER)/.test(l));
}
