// Dependencies across hosts (docs/cluster.md), all real: two hosts (namespaces with a bridge, dnsmasq, a
// peered yggdrasil node and an agent with --etcd) and a 3-member etcd cluster (test/cluster/lab.ts). A
// machine on host1 whose MAN8S_WAIT_FOR names a machine on host0 (ready://NAME and http://NAME:PORT, both
// resolved through its agent's catalog) starts its app only once host0's app is ready, and reaches it over
// yggdrasil. Run under the shared lock: flock /tmp/man8s-heavy.lock bun test test/cluster/remote-wait.test.ts
import { afterAll, beforeAll, expect, test } from "bun:test";
import { cpSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { cleanup as cleanupAgents } from "../hostagent/helpers.ts";
import { ClusterLab, ask, cli, waitFor, type Host } from "./lab.ts";

const lab = new ClusterLab("w", 152, 3);

/** a busybox machine rootfs at its place under the agent's root, and its image config */
function machine(h: Host, name: string, cmd: string): { rootfs: string; config: string } {
  const rootfs = `${h.agent.root}/var/lib/man8machines/${name}`;
  for (const d of ["bin", "etc", "dev", "proc", "sys", "run", "tmp", "man8s-init", "www", "usr/lib"]) mkdirSync(`${rootfs}/${d}`, { recursive: true });
  cpSync("/bin/busybox", `${rootfs}/bin/busybox`);
  for (const a of ["sh", "httpd", "wget", "sleep", "cat", "ip"]) symlinkSync("busybox", `${rootfs}/bin/${a}`);
  writeFileSync(`${rootfs}/usr/lib/os-release`, "ID=m8e\n");
  symlinkSync("../usr/lib/os-release", `${rootfs}/etc/os-release`);
  writeFileSync(`${rootfs}/www/index.html`, `hello from ${name}\n`);
  const config = `${lab.dir}/${name}.config.json`;
  writeFileSync(config, JSON.stringify({ architecture: "amd64", os: "linux", config: { Cmd: ["/bin/sh", "-c", cmd], Env: ["PATH=/bin"], ExposedPorts: { "8080/tcp": {} } }, rootfs: { type: "layers", diff_ids: [] } }));
  return { rootfs, config };
}

async function install(h: Host, name: string, cmd: string, env: Record<string, string>): Promise<void> {
  const m = machine(h, name, cmd);
  const r = await cli(h.agent.socket, ["agent", "install", name, "--rootfs", m.rootfs, "--config", m.config, "--bridge", h.bridge, "--ygg-prefix", h.yggSubnet,
    "--stop-timeout", "3", ...Object.entries(env).flatMap(([k, v]) => ["--env", `${k}=${v}`])]);
  if (r.code !== 0) throw new Error(`install ${name} on ${h.name}: ${r.err}`);
}

interface Status { phase: string; history: { phase: string; at: number }[] }
const status = async (h: Host, name: string) => ((await ask(h.agent.socket, "status", { name })) as { container: Status }).container;

beforeAll(async () => {
  await lab.start(2);
  for (const i of [0, 1]) await waitFor(`host${i} to publish`, async () => (await ask(lab.hosts[i]!.agent.socket, "cluster")).state === "publishing", 15_000);
}, 60_000);

afterAll(async () => {
  await lab.cleanup();
  cleanupAgents();
});

test("a machine on host1 waiting for one on host0 starts after it is ready and reaches it over yggdrasil", async () => {
  const [h0, h1] = [lab.hosts[0]!, lab.hosts[1]!];
  // host0: the dependency, ready once its port answers (MAN8S_READY's default: the exposed port)
  await install(h0, "m8e-db", "exec httpd -f -p 8080 -h /www", {});
  const db = await waitFor("host1 to know m8e-db", async () => {
    const r = (await ask(h1.agent.socket, "lookup", { name: "m8e-db" })) as { address: string; host: string; found: boolean };
    return r.found && r.address ? r : undefined; // the claim comes first (no address yet), then the installed entry
  }, 5000, 20);
  expect(db.host).toBe("host0");
  // host1: waits for it by name (the init asks its agent), then fetches from it over yggdrasil
  await install(h1, "m8e-app", "exec httpd -f -p 8080 -h /www", {
    MAN8S_WAIT_FOR: "ready://m8e-db http://m8e-db:8080/",
    MAN8S_WAIT_TIMEOUT: "60",
  });
  const s1 = await cli(h1.agent.socket, ["machines", "start", "m8e-app"]);
  expect(s1.err).toBe("");
  expect(s1.code).toBe(0);
  await waitFor("m8e-app to wait for its dependencies", async () => (await status(h1, "m8e-app")).phase === "dependencies", 20_000);
  await Bun.sleep(1500);
  expect((await status(h1, "m8e-app")).phase).toBe("dependencies");

  const s0 = await cli(h0.agent.socket, ["machines", "start", "m8e-db"]);
  expect(s0.err).toBe("");
  expect(s0.code).toBe(0);
  await waitFor("m8e-db ready, as host1 sees it", async () => ((await ask(h1.agent.socket, "lookup", { name: "m8e-db" })) as { ready: boolean }).ready, 30_000, 20);
  const app = await waitFor("m8e-app's app to run", async () => {
    const s = await status(h1, "m8e-app");
    return s.history.find((x) => x.phase === "app" || x.phase === "running");
  }, 20_000, 20);
  // the waiter's app started after the dependency was ready, within a second plus the probe interval
  const dbEntry = ((await ask(h0.agent.socket, "cluster")) as { machines: { name: string; updatedAt: number; ready: boolean }[] }).machines.find((m) => m.name === "m8e-db")!;
  expect(dbEntry.ready).toBe(true);
  // both times are this machine's wall clock: the agents' (the entry's last change, the report's arrival)
  console.log(`host0's app ready → host1's app started: ${app.at - dbEntry.updatedAt} ms`);
  expect(app.at).toBeGreaterThanOrEqual(dbEntry.updatedAt);
  expect(app.at - dbEntry.updatedAt).toBeLessThan(1000 + 250 + 1000);
  // the wait's http://m8e-db:8080/ passed from inside host1's container: host0's page over yggdrasil (the
  // name resolved by host1's agent to host0's /64); the waiter then runs and is ready itself
  await waitFor("m8e-app ready, as host0 sees it", async () => ((await ask(h0.agent.socket, "lookup", { name: "m8e-app" })) as { ready: boolean }).ready, 20_000).catch(async (e) => {
    throw new Error(`${(e as Error).message}\n${JSON.stringify(await status(h1, "m8e-app"))}\n${JSON.stringify(await ask(h1.agent.socket, "machines"))}`);
  });
  expect(db.address.startsWith(h0.yggSubnet.replace("::/64", ":"))).toBe(true);
}, 80_000);
