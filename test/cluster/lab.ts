// A cluster lab (docs/cluster.md): a backbone namespace (m8e<tag>x) with a bridge, a 3-member etcd cluster
// on it, and N "hosts", each its own namespace (m8e<tag>h<i>) plugged into the backbone, with a container
// bridge, dnsmasq (DHCPv4, RA for a ULA /64), a real yggdrasil node (host i>0 peers with host 0 over the
// backbone) whose /64 is routed to the bridge, and a man8s agent started with --etcd. Everything started is
// tracked by pid and ended by pid; every namespace and link carries the lab's prefix.
import { $ } from "bun";
import type { Subprocess } from "bun";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { AgentClient } from "../../hostagent/client.ts";
import { BIN, BUNDLE, startAgent, type Agent } from "../hostagent/helpers.ts";
import { waitFor } from "../netctl/lab.ts";
import { stopProcess } from "../wait.ts";

export { BIN, BUNDLE, waitFor };

export interface Member {
  name: string;
  client: string;
  peer: string;
  proc: Subprocess | null;
}

export interface Host {
  i: number;
  name: string;
  ns: string;
  bridge: string;
  /** the backbone address of this host */
  uplink: string;
  uplinkIf: string;
  yggSubnet: string;
  yggAddress: string;
  agent: Agent;
}

export class ClusterLab {
  readonly dir: string;
  readonly bb: string;
  readonly bbBridge: string;
  readonly members: Member[] = [];
  readonly hosts: Host[] = [];
  private readonly procs: Subprocess[] = [];
  private readonly netns: string[] = [];

  constructor(
    readonly tag: string,
    /** second octet of every IPv4 network in the lab */
    readonly net: number,
    readonly ttl = 3,
  ) {
    this.dir = `/tmp/m8e-${tag}-${process.pid}`;
    this.bb = `m8e${tag}x`;
    this.bbBridge = `m8e${tag}k`;
  }

  sh(cmd: string[], ns?: string): string {
    const full = ns ? ["nsenter", `--net=/run/netns/${ns}`, "--", ...cmd] : cmd;
    const r = Bun.spawnSync(full, { stdout: "pipe", stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`${full.join(" ")}: ${r.stderr.toString()}`);
    return r.stdout.toString();
  }

  private addNs(name: string): void {
    if (existsSync(`/run/netns/${name}`)) Bun.spawnSync(["ip", "netns", "del", name]);
    this.sh(["ip", "netns", "add", name]);
    this.netns.push(name);
    this.sh(["ip", "link", "set", "lo", "up"], name);
  }

  spawn(cmd: string[], log: string): Subprocess {
    const f = Bun.file(log);
    const p = Bun.spawn(cmd, { stdin: "ignore", stdout: f, stderr: f });
    this.procs.push(p);
    return p;
  }

  get endpoints(): string {
    return this.members.map((m) => m.client).join(",");
  }

  async start(hosts: number): Promise<this> {
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    this.addNs(this.bb);
    this.sh(["ip", "link", "add", this.bbBridge, "type", "bridge"], this.bb);
    this.sh(["ip", "link", "set", this.bbBridge, "up"], this.bb);
    this.sh(["ip", "addr", "add", `10.${this.net}.254.1/24`, "dev", this.bbBridge], this.bb);
    for (let i = 0; i < 3; i++) {
      this.members.push({ name: `e${i}`, client: `http://10.${this.net}.254.1:${23790 + i}`, peer: `http://10.${this.net}.254.1:${23800 + i}`, proc: null });
    }
    for (let i = 0; i < 3; i++) this.startMember(i, "new");
    await waitFor("etcd to elect a leader", () => this.etcdctl(["endpoint", "health", "--cluster"]).code === 0, 20_000, 100);
    for (let i = 0; i < hosts; i++) await this.addHost(i);
    return this;
  }

  startMember(i: number, state: "new" | "existing" = "existing"): void {
    const m = this.members[i]!;
    const cluster = this.members.map((x) => `${x.name}=${x.peer}`).join(",");
    m.proc = this.spawn(["nsenter", `--net=/run/netns/${this.bb}`, "--", "etcd", "--name", m.name, "--data-dir", `${this.dir}/${m.name}`,
      "--listen-client-urls", m.client, "--advertise-client-urls", m.client, "--listen-peer-urls", m.peer,
      "--initial-advertise-peer-urls", m.peer, "--initial-cluster", cluster, "--initial-cluster-state", state,
      "--initial-cluster-token", `m8e-${this.tag}`, "--heartbeat-interval", "50", "--election-timeout", "500"], `${this.dir}/${m.name}.log`);
  }

  /** SIGKILL one member (a lost machine); returns once it is gone. */
  async killMember(i: number): Promise<void> {
    const p = this.members[i]!.proc;
    if (!p) return;
    p.kill("SIGKILL");
    await p.exited;
    this.members[i]!.proc = null;
  }

  etcdctl(args: string[]): { code: number; out: string } {
    const live = this.members.filter((m) => m.proc).map((m) => m.client).join(",");
    const r = Bun.spawnSync(["nsenter", `--net=/run/netns/${this.bb}`, "--", "etcdctl", `--endpoints=${live}`, "--dial-timeout=1s", "--command-timeout=2s", ...args], {
      stdout: "pipe", stderr: "pipe", env: { ...process.env, ETCDCTL_API: "3" },
    });
    return { code: r.exitCode ?? -1, out: r.stdout.toString() + r.stderr.toString() };
  }

  private async yggConf(i: number, listen: string[], peers: string[]): Promise<string> {
    const conf = JSON.parse((await $`yggdrasil -genconf -json`.quiet()).stdout.toString());
    conf.Listen = listen;
    conf.Peers = peers;
    conf.AdminListen = `unix://${this.dir}/ygg${i}.sock`;
    conf.IfName = `m8e${this.tag}t${i}`;
    conf.MulticastInterfaces = [];
    const f = `${this.dir}/ygg${i}.conf`;
    writeFileSync(f, JSON.stringify(conf));
    return f;
  }

  private async addHost(i: number): Promise<Host> {
    const ns = `m8e${this.tag}h${i}`;
    const net = this.net;
    this.addNs(ns);
    this.sh(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", "net.ipv4.ip_forward=1"], ns);
    // uplink to the backbone
    const up = `m8e${this.tag}u${i}`, port = `m8e${this.tag}p${i}`;
    this.sh(["ip", "link", "add", up, "netns", ns, "type", "veth", "peer", "name", port, "netns", this.bb]);
    this.sh(["ip", "link", "set", port, "master", this.bbBridge], this.bb);
    this.sh(["ip", "link", "set", port, "up"], this.bb);
    const uplink = `10.${net}.254.${10 + i}`;
    this.sh(["ip", "addr", "add", `${uplink}/24`, "dev", up], ns);
    this.sh(["ip", "link", "set", up, "up"], ns);
    // the containers' bridge, with an idle port so it has carrier (as a host's bridge in use has)
    const br = `m8e${this.tag}b${i}`, an = `m8e${this.tag}a${i}`;
    this.sh(["ip", "link", "add", br, "type", "bridge"], ns);
    this.sh(["sysctl", "-qw", `net.ipv6.conf.${br}.accept_dad=0`], ns);
    this.sh(["ip", "link", "add", an, "type", "veth", "peer", "name", `${an}p`], ns);
    this.sh(["ip", "link", "set", an, "master", br], ns);
    for (const l of [an, `${an}p`, br]) this.sh(["ip", "link", "set", l, "up"], ns);
    const v4 = `10.${net}.${i + 1}`;
    const ula = `fd${net.toString(16)}:${i + 1}::`;
    this.sh(["ip", "addr", "add", `${v4}.1/24`, "dev", br], ns);
    this.sh(["ip", "-6", "addr", "add", `${ula}1/64`, "dev", br, "nodad"], ns);
    // yggdrasil: host 0 listens on its uplink, the others dial it
    const listen = `tcp://10.${net}.254.10:17001`;
    const conf = await this.yggConf(i, i === 0 ? [listen] : [], i === 0 ? [] : [listen]);
    const yggSubnet = (await $`yggdrasil -useconffile ${conf} -subnet`.quiet()).stdout.toString().trim();
    const yggAddress = (await $`yggdrasil -useconffile ${conf} -address`.quiet()).stdout.toString().trim();
    const ylog = `${this.dir}/ygg${i}.log`;
    this.spawn(["nsenter", `--net=/run/netns/${ns}`, "--", "yggdrasil", "-useconffile", conf, "-logto", ylog], `${this.dir}/ygg${i}.out`);
    const text = () => (existsSync(ylog) ? readFileSync(ylog, "utf8") : "");
    if (i === 0) await waitFor("yggdrasil 0 to listen", () => text().includes("istener started"), 10_000, 50);
    else await waitFor(`yggdrasil ${i} to peer`, () => text().includes("Connected"), 15_000, 50);
    this.sh(["ip", "-6", "addr", "add", `${yggSubnet.replace("::/64", "")}::1/64`, "dev", br, "nodad"], ns);
    // dnsmasq: DHCPv4 and the ULA's RAs (the containers' default route), as on a man8s host
    const dlog = `${this.dir}/dnsmasq${i}.log`;
    const dns = this.spawn(["nsenter", `--net=/run/netns/${ns}`, "--", "dnsmasq", "--no-daemon", "--user=root", "--group=root", "--conf-file=/dev/null",
      `--pid-file=${this.dir}/dnsmasq${i}.pid`, `--interface=${br}`, "--bind-interfaces", `--dhcp-range=${v4}.100,${v4}.200,2m`, "--enable-ra",
      `--dhcp-range=${ula},ra-only,64`, "--no-resolv", "--no-hosts", `--dhcp-leasefile=${this.dir}/dnsmasq${i}.leases`, `--log-facility=${dlog}`], `${this.dir}/dnsmasq${i}.out`);
    await waitFor("dnsmasq to start", () => (existsSync(dlog) && readFileSync(dlog, "utf8").includes("DHCP, IP range")) || (dns.exitCode !== null ? Promise.reject(new Error("dnsmasq exited")) : false), 5000, 50);
    const name = `host${i}`;
    const agent = await this.startAgent(ns, name, yggSubnet);
    const h: Host = { i, name, ns, bridge: br, uplink, uplinkIf: up, yggSubnet, yggAddress, agent };
    this.hosts[i] = h;
    return h;
  }

  startAgent(ns: string, name: string, yggSubnet: string, root?: string): Promise<Agent> {
    return startAgent({
      wrap: ["nsenter", `--net=/run/netns/${ns}`, "--"],
      ...(root ? { root } : {}),
      extra: ["--ygg-prefix", yggSubnet, "--etcd", this.endpoints, "--host-name", name, "--etcd-ttl", String(this.ttl)],
    });
  }

  /** Restart host i's agent on the same root (after a kill). */
  async restartAgent(i: number): Promise<void> {
    const h = this.hosts[i]!;
    h.agent = await this.startAgent(h.ns, h.name, h.yggSubnet, h.agent.root);
  }

  async cleanup(): Promise<void> {
    for (const h of this.hosts) await h?.agent.stop().catch(() => 0);
    for (const p of this.procs.reverse()) await stopProcess(p);
    for (const ns of this.netns.reverse()) Bun.spawnSync(["ip", "netns", "del", ns]);
    if (!process.env.M8E_KEEP) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A CLI call against one agent: { code, out, err }. */
export async function cli(socket: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn([BIN, args[0]!, "--socket", socket, ...args.slice(1)], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

/** One request on an agent's admin socket. */
export async function ask(socket: string, cmd: string, args: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  const c = await AgentClient.connect(socket);
  try {
    return (await c.request(cmd, args)) as Record<string, unknown>;
  } finally {
    c.close();
  }
}
