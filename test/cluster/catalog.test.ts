// The cluster catalog with real parts (docs/cluster.md): a 3-member etcd cluster and two hosts, each its
// own network namespace with a bridge, dnsmasq, a peered yggdrasil node and an agent started with --etcd
// (test/cluster/lab.ts). Machines are installed through the agents; names are unique across hosts; a lost
// etcd member changes nothing; a host cut off from etcd keeps serving, is marked stale and publishes
// again on return; a killed agent's entries expire after the lease TTL.
// Run under the shared lock: flock /tmp/man8s-heavy.lock bun test test/cluster/catalog.test.ts
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, writeFileSync, cpSync, symlinkSync } from "node:fs";
import { AgentClient } from "../../hostagent/client.ts";
import { cleanup as cleanupAgents } from "../hostagent/helpers.ts";
import { reportSocket } from "../../hostagent/layout.ts";
import { BIN, ClusterLab, ask, cli, waitFor } from "./lab.ts";

const TTL = 3;
const lab = new ClusterLab("c", 151, TTL);
let rootfs = "";
let config = "";

interface Entry { name: string; host: string; state: string; ready: boolean; yggAddress: string | null }
interface Snapshot { state: string; stale: boolean; hosts: { host: string }[]; machines: Entry[] }

const snapshot = async (i: number) => (await ask(lab.hosts[i]!.agent.socket, "cluster")) as unknown as Snapshot;
const names = (s: Snapshot) => s.machines.map((m) => `${m.name}@${m.host}`).sort();

/** a busybox rootfs with the bundle's mount point, and an image config whose app is busybox httpd */
function image(dir: string): void {
  rootfs = `${dir}/rootfs`;
  for (const d of ["bin", "etc", "dev", "proc", "sys", "run", "tmp", "man8s-init", "www", "usr/lib"]) mkdirSync(`${rootfs}/${d}`, { recursive: true });
  cpSync("/bin/busybox", `${rootfs}/bin/busybox`);
  for (const a of ["sh", "httpd", "wget", "sleep", "cat"]) symlinkSync("busybox", `${rootfs}/bin/${a}`);
  writeFileSync(`${rootfs}/usr/lib/os-release`, "ID=m8e\n");
  symlinkSync("../usr/lib/os-release", `${rootfs}/etc/os-release`);
  writeFileSync(`${rootfs}/www/index.html`, "hello from m8e\n");
  config = `${dir}/config.json`;
  writeFileSync(config, JSON.stringify({ architecture: "amd64", os: "linux", config: { Cmd: ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"], Env: ["PATH=/bin"], ExposedPorts: { "8080/tcp": {} } }, rootfs: { type: "layers", diff_ids: [] } }));
}

const install = (i: number, name: string) =>
  cli(lab.hosts[i]!.agent.socket, ["agent", "install", name, "--rootfs", rootfs, "--config", config, "--bridge", lab.hosts[i]!.bridge, "--ygg-prefix", lab.hosts[i]!.yggSubnet]);

beforeAll(async () => {
  await lab.start(2);
  image(lab.dir);
  for (const i of [0, 1]) await waitFor(`host${i} to publish`, async () => (await snapshot(i)).state === "publishing", 15_000);
}, 90_000);

afterAll(async () => {
  await lab.cleanup();
  cleanupAgents();
});

test("machines are published under the agent's lease; list --cluster on every host shows every host's", async () => {
  // agent watch --cluster on host1: the snapshot, then host0's new machine as it is published
  const w = Bun.spawn([BIN, "agent", "--socket", lab.hosts[1]!.agent.socket, "--json", "watch", "--cluster"], { stdout: "pipe", stderr: "pipe" });
  const lines: string[] = [];
  void (async () => {
    const dec = new TextDecoder();
    let rest = "";
    for await (const c of w.stdout as ReadableStream<Uint8Array>) {
      const parts = (rest + dec.decode(c, { stream: true })).split("\n");
      rest = parts.pop() ?? "";
      lines.push(...parts);
    }
  })();
  await waitFor("the watch's first line", () => lines.length > 0, 5000, 20);
  expect(JSON.parse(lines[0]!)).toMatchObject({ type: "cluster", kind: "state", state: "publishing" });
  const r = await install(0, "m8e-web");
  expect(r.err).toBe("");
  expect(r.code).toBe(0);
  const s = await waitFor("host1 to see m8e-web", async () => {
    const s = await snapshot(1);
    // claimed first ("installing"), then published as installed
    return s.machines.some((m) => m.name === "m8e-web" && m.host === "host0" && m.state === "stopped") && s;
  }, 5000);
  expect(s.hosts.map((h) => h.host)).toEqual(["host0", "host1"]);
  await waitFor("the watch to stream m8e-web", () => lines.some((l) => {
    const e = JSON.parse(l) as { kind: string; name?: string; host?: string; entry?: { state: string } };
    return e.kind === "put" && e.name === "m8e-web" && e.host === "host0" && e.entry?.state === "stopped";
  }), 5000, 20);
  w.kill();
  await w.exited;
  const e = s.machines.find((m) => m.name === "m8e-web")!;
  expect(e.state).toBe("stopped");
  expect(e.yggAddress?.startsWith(lab.hosts[0]!.yggSubnet.replace("::/64", ":"))).toBe(true);
  // in etcd: one key per machine, on a lease (it goes when the lease does)
  const kv = lab.etcdctl(["get", "/man8s/v1/machines/m8e-web", "-w", "json"]);
  expect(kv.code).toBe(0);
  expect(Number(JSON.parse(kv.out).kvs[0].lease)).toBeGreaterThan(0);
  // the CLI: a header saying whose view and its state, one line per machine with its host
  const list = await cli(lab.hosts[1]!.agent.socket, ["machines", "list", "--cluster"]);
  expect(list.code).toBe(0);
  expect(list.out).toMatch(/^# cluster view of host1: publishing; hosts: host0, host1$/m);
  expect(list.out).toMatch(/^m8e-web\thost0\tstopped\t3[0-9a-f]{2}:/m);
  // the plain list is unchanged: this host's machines only
  expect((await cli(lab.hosts[1]!.agent.socket, ["machines", "list"])).out).not.toContain("m8e-web");
});

test("a name held by another live host is refused, naming the holder; a race for a new name has one winner", async () => {
  const dup = await install(1, "m8e-web");
  expect(dup.code).toBe(1);
  expect(dup.err).toContain("E_NAME_TAKEN");
  expect(dup.err).toContain("held by host host0");
  // nothing of the machine was made on host1
  expect((await cli(lab.hosts[1]!.agent.socket, ["machines", "list"])).out).not.toContain("m8e-web");
  // both hosts at once: one transaction wins
  const [a, b] = await Promise.all([install(0, "m8e-race"), install(1, "m8e-race")]);
  expect([a.code, b.code].sort()).toEqual([0, 1]);
  const loser = a.code === 1 ? a : b;
  expect(loser.err).toMatch(/E_NAME_TAKEN.*held by host host[01]/);
  // a reinstall on the holder is allowed (the name is its own)
  expect((await cli(lab.hosts[0]!.agent.socket, ["agent", "install", "m8e-web", "--force", "--rootfs", rootfs, "--config", config, "--bridge", lab.hosts[0]!.bridge])).code).toBe(0);
});

test("lookup: NAME and NAME@HOST through the agent, local and remote", async () => {
  const c = await AgentClient.connect(lab.hosts[1]!.agent.socket);
  try {
    const r = (await c.request("lookup", { name: "m8e-web" })) as Record<string, unknown>;
    expect(r).toMatchObject({ found: true, cluster: true, local: false, stale: false, host: "host0", ready: false, state: "stopped" });
    expect(String(r.address)).toStartWith(lab.hosts[0]!.yggSubnet.replace("::/64", ":"));
    expect(await c.request("lookup", { name: "m8e-web@host0" })).toMatchObject({ found: true, host: "host0" });
    expect(await c.request("lookup", { name: "m8e-web@host1" })).toMatchObject({ found: false });
    expect(await c.request("lookup", { name: "m8e-nothing" })).toMatchObject({ found: false, cluster: true });
  } finally {
    c.close();
  }
});

test("lookup on a container's report socket: allowed, read-only, rate-limited on its own without closing", async () => {
  const c = await AgentClient.connect(reportSocket(lab.hosts[0]!.agent.root, "m8e-web"));
  try {
    const all = await Promise.allSettled(Array.from({ length: 48 }, () => c.request("lookup", { name: "m8e-race" })));
    const limited = all.filter((r) => r.status === "rejected" && (r.reason as { code?: string }).code === "E_RATE_LIMITED").length;
    expect(all.filter((r) => r.status === "fulfilled").length).toBeGreaterThanOrEqual(32); // the burst
    expect(limited).toBeGreaterThan(0);
    // the connection stays, and admin commands stay refused there
    await Bun.sleep(200);
    expect(await c.request("lookup", { name: "m8e-race" })).toMatchObject({ found: true, cluster: true });
    expect(await c.request("cluster").catch((e: { code: string }) => e.code)).toBe("E_FORBIDDEN");
  } finally {
    c.close();
  }
});

test("one etcd member lost (quorum kept): nothing changes", async () => {
  const before = names(await snapshot(1));
  await lab.killMember(0);
  // writes still go through (a new machine), the views stay current, no host turns stale
  expect((await install(1, "m8e-after")).code).toBe(0);
  const s0 = await waitFor("host0 to see m8e-after", async () => {
    const s = await snapshot(0);
    return s.machines.some((m) => m.name === "m8e-after") && s;
  }, 8000);
  expect(s0.state).toBe("publishing");
  const s1 = await snapshot(1);
  expect(s1.state).toBe("publishing");
  expect(names(s1)).toEqual([...before, "m8e-after@host1"].sort());
  // the leases are kept alive through the others: nothing expires over two TTLs
  await Bun.sleep(TTL * 2 * 1000);
  expect(names(await snapshot(0))).toEqual(names(s1));
  expect((await snapshot(0)).state).toBe("publishing");
}, 30_000);

test("etcd unreachable: the agent serves its host, its view is stale; back: it publishes again", async () => {
  const h1 = lab.hosts[1]!;
  lab.sh(["ip", "link", "set", h1.uplinkIf, "down"], h1.ns);
  try {
    const s = await waitFor("host1 to turn stale", async () => {
      const s = await snapshot(1);
      return s.state === "stale" && s;
    }, (TTL + 5) * 1000);
    expect(s.stale).toBe(true);
    // the host itself is served as before
    const list = await cli(h1.agent.socket, ["machines", "list"]);
    expect(list.code).toBe(0);
    expect(list.out).toContain("m8e-after");
    expect((await cli(h1.agent.socket, ["machines", "list", "--cluster"])).out).toMatch(/^# cluster view of host1: stale \(STALE/m);
    // a new name cannot be checked for uniqueness: refused, clearly
    const r = await install(1, "m8e-offline");
    expect(r.code).toBe(1);
    expect(r.err).toContain("E_CLUSTER_UNAVAILABLE");
    // host1's lease expires: host0 sees its machines go
    await waitFor("host1's entries to expire", async () => !(await snapshot(0)).machines.some((m) => m.host === "host1"), (TTL + 5) * 1000);
  } finally {
    lab.sh(["ip", "link", "set", h1.uplinkIf, "up"], h1.ns);
  }
  await waitFor("host1 to publish again", async () => (await snapshot(1)).state === "publishing", 15_000);
  await waitFor("host0 to see host1's machines again", async () => (await snapshot(0)).machines.some((m) => m.name === "m8e-after" && m.host === "host1"), 5000);
}, 60_000);

test("a killed agent's entries vanish after the lease TTL", async () => {
  const h0 = lab.hosts[0]!;
  expect((await snapshot(1)).machines.some((m) => m.host === "host0")).toBe(true);
  const t0 = performance.now();
  await h0.agent.stop("SIGKILL");
  await waitFor("host0's entries to expire", async () => {
    const s = await snapshot(1);
    return !s.machines.some((m) => m.host === "host0") && !s.hosts.some((h) => h.host === "host0");
  }, (TTL + 5) * 1000);
  const gone = (performance.now() - t0) / 1000;
  console.log(`host0 killed → its entries gone on host1 after ${gone.toFixed(2)} s (TTL ${TTL} s)`);
  expect(gone).toBeGreaterThan(TTL / 3); // not before the lease could have expired
  // a restarted agent publishes its machines again
  await lab.restartAgent(0);
  await waitFor("host0 back", async () => (await snapshot(1)).machines.some((m) => m.name === "m8e-web" && m.host === "host0"), 15_000);
}, 60_000);
