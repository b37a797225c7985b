// Two namespaces joined by a veth for the DHCP client tests: a server side (dnsmasq or the hostile
// dhcp-server.ts, on a real UDP socket) and a client side running the real binary (`man8s netctl up`).
// Names: netns m8d<tag>s / m8d<tag>c, links m8d<tag>s0 / m8d<tag>c0 (tag <= 8 chars, names <= 15).
// Everything started is tracked by pid and removed in cleanup().
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from "node:fs";
import { expect } from "bun:test";
import { BIN } from "./lab.ts";
import { labDir } from "../scratch.ts";
import { stopProcess } from "../wait.ts";

const SERVER = new URL("./dhcp-server.ts", import.meta.url).pathname;

export interface Msg {
  t: number;
  wall: number;
  type: number;
  xid: number;
  ciaddr: string;
  requested: string;
}

export interface Client {
  proc: ReturnType<typeof Bun.spawn>;
  log(): string;
  exited: Promise<number>;
}

export class DhcpPair {
  readonly srvNs: string;
  readonly cliNs: string;
  readonly srvIf: string;
  readonly cliIf: string;
  readonly dir: string;
  readonly net: string;
  private procs: ReturnType<typeof Bun.spawn>[] = [];

  constructor(
    readonly tag: string,
    octet: number,
  ) {
    if (tag.length > 8) throw new Error(`tag ${tag} too long`);
    this.srvNs = `m8d${tag}s`;
    this.cliNs = `m8d${tag}c`;
    this.srvIf = `m8d${tag}s0`;
    this.cliIf = `m8d${tag}c0`;
    this.net = `10.${octet}.0`;
    this.dir = labDir(`m8d-${tag}`);
  }

  sh(cmd: string[], ns?: string): string {
    const full = ns ? ["ip", "netns", "exec", ns, ...cmd] : cmd;
    const r = Bun.spawnSync(full, { stdout: "pipe", stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`${full.join(" ")}: ${r.stderr.toString()}`);
    return r.stdout.toString();
  }

  async start(): Promise<this> {
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    for (const ns of [this.srvNs, this.cliNs]) {
      if (existsSync(`/run/netns/${ns}`)) this.sh(["ip", "netns", "del", ns]);
      this.sh(["ip", "netns", "add", ns]);
      this.sh(["ip", "link", "set", "lo", "up"], ns);
    }
    this.sh(["ip", "link", "add", this.srvIf, "netns", this.srvNs, "type", "veth", "peer", "name", this.cliIf, "netns", this.cliNs]);
    this.sh(["ip", "addr", "add", `${this.net}.1/24`, "dev", this.srvIf], this.srvNs);
    // as on a real host, the router's link-local is usable from the start: a router whose link-local is
    // still in DAD cannot answer the client's early router solicitations (its next RA may come seconds later)
    this.sh(["sysctl", "-qw", `net.ipv6.conf.${this.srvIf}.accept_dad=0`], this.srvNs);
    this.sh(["ip", "link", "set", this.srvIf, "up"], this.srvNs);
    // the hostile server answers to the limited broadcast
    this.sh(["ip", "route", "add", "255.255.255.255/32", "dev", this.srvIf], this.srvNs);
    return this;
  }

  private track(cmd: string[], logFile: string, env?: Record<string, string>): ReturnType<typeof Bun.spawn> {
    // one append-mode fd for both streams, so stdout and stderr do not overwrite each other
    const fd = openSync(logFile, "a");
    const p = Bun.spawn(cmd, { stdin: "ignore", stdout: fd, stderr: fd, ...(env ? { env } : {}) });
    closeSync(fd);
    this.procs.push(p);
    return p;
  }

  private read(f: string): string {
    try {
      return readFileSync(`${this.dir}/${f}`, "utf8");
    } catch {
      return "";
    }
  }

  private server: ReturnType<typeof Bun.spawn> | undefined;
  serverAlive(): boolean {
    return !!this.server && this.server.exitCode === null && this.server.signalCode === null;
  }

  async startServer(scenario: string, extra: Record<string, unknown> = {}): Promise<void> {
    const p = (this.server = this.track(["ip", "netns", "exec", this.srvNs, process.execPath, SERVER, JSON.stringify({ scenario, net: this.net, ...extra })], `${this.dir}/server.log`));
    await waitUntil("the DHCP server to listen", () => this.read("server.log").includes('"listening"') || (p.exitCode !== null ? fail(`server exited: ${this.read("server.log")}`) : false), 10_000);
  }

  async startDnsmasq(extra: string[]): Promise<void> {
    const p = this.track(
      ["ip", "netns", "exec", this.srvNs, "dnsmasq", "--no-daemon", "--user=root", "--group=root", "--conf-file=/dev/null", `--pid-file=${this.dir}/dnsmasq.pid`, `--interface=${this.srvIf}`, "--bind-interfaces", "--no-resolv", "--no-hosts", "--no-ping", `--dhcp-leasefile=${this.dir}/dnsmasq.leases`, "--log-dhcp", `--log-facility=${this.dir}/dnsmasq.log`, ...extra],
      `${this.dir}/dnsmasq.out`,
    );
    await waitUntil("dnsmasq to start", () => this.read("dnsmasq.log").includes("DHCP, IP range") || (p.exitCode !== null ? fail(`dnsmasq exited: ${this.read("dnsmasq.out")}`) : false), 10_000);
  }

  get dnsmasqLog(): string {
    return this.read("dnsmasq.log");
  }

  /** messages the hostile server received */
  messages(): Msg[] {
    return this.read("server.log")
      .split("\n")
      .filter((l) => l.startsWith('{"t"'))
      .map((l) => JSON.parse(l) as Msg);
  }

  get resolvPath(): string {
    return `${this.dir}/resolv.conf`;
  }

  /** `man8s netctl up` (resident unless --once) in the client namespace, IPv4 only */
  client(env: Record<string, string> = {}, args: string[] = []): Client {
    const logFile = `${this.dir}/client.log`;
    const proc = this.track(["ip", "netns", "exec", this.cliNs, BIN, "netctl", "up", ...args], logFile, {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      MAN8S_NETWORK: "v4",
      MAN8S_RESOLV_CONF: this.resolvPath,
      MAN8S_NETCTL_STATE: `${this.dir}/state.json`,
      MAN8S_CONTAINER_NAME: `m8d${this.tag}`,
      ...env,
    });
    return { proc, log: () => this.read("client.log"), exited: proc.exited };
  }

  /** IPv4 addresses on the client's link: [address/prefixlen, valid_life_time] */
  addrs(): { local: string; prefixlen: number; valid: number }[] {
    const j = JSON.parse(this.sh(["ip", "-j", "-4", "addr", "show", "dev", this.cliIf], this.cliNs) || "[]");
    return (j[0]?.addr_info ?? []).map((a: { local: string; prefixlen: number; valid_life_time: number }) => ({ local: a.local, prefixlen: a.prefixlen, valid: a.valid_life_time }));
  }

  routes(): { dst: string; gateway?: string; scope?: string; prefsrc?: string }[] {
    return JSON.parse(this.sh(["ip", "-j", "-4", "route", "show"], this.cliNs) || "[]");
  }

  async cleanup(): Promise<void> {
    for (const p of this.procs.reverse()) await stopProcess(p);
    for (const ns of [this.cliNs, this.srvNs]) Bun.spawnSync(["ip", "netns", "del", ns]);
    if (!process.env.M8N_KEEP) rmSync(this.dir, { recursive: true, force: true });
  }
}

function fail(msg: string): never {
  throw new Error(msg);
}

export async function waitUntil(what: string, fn: () => boolean, timeoutMs: number, stepMs = 50): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(stepMs);
  }
}

/** Stops a resident client with SIGTERM and returns its exit code. */
export async function stopClient(c: Client): Promise<number> {
  return stopProcess(c.proc);
}

/** Checks a resolv.conf the way a resolver reads it: only our lines, valid names, bounded. */
export function assertValidResolvConf(text: string): void {
  expect(text.length).toBeLessThan(1024);
  const lines = text.split("\n");
  expect(lines.pop()).toBe("");
  let ns = 0;
  for (const l of lines) {
    if (l.startsWith("#")) continue;
    const [kw, ...rest] = l.split(" ");
    if (kw === "nameserver") {
      ns++;
      expect(rest.length).toBe(1);
      expect(rest[0]).toMatch(/^\d{1,3}(\.\d{1,3}){3}$/);
    } else if (kw === "search") {
      expect(rest.length).toBeGreaterThan(0);
      expect(rest.length).toBeLessThanOrEqual(6);
      expect(rest.join(" ").length).toBeLessThanOrEqual(256);
      for (const n of rest) expect(n).toMatch(/^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/);
    } else throw new Error(`unexpected resolv.conf line: ${JSON.stringify(l)}`);
  }
  expect(ns).toBeLessThanOrEqual(3);
}
