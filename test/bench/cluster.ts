// `bun run bench`, section cluster (docs/cluster.md): a name on another host looked up through the agent,
// as a container's init does it (common/cluster-lookup.ts over the machine's report socket), p50/p99; and
// how long a change on one host takes to reach the other host's view (etcd watch). Two hosts and a
// 3-member etcd cluster in namespaces of their own (test/cluster/lab.ts). `bun test/bench/cluster.ts` alone.
import { cpSync, mkdirSync, writeFileSync } from "node:fs";
import { lookupName } from "../../common/cluster-lookup.ts";
import { reportSocket } from "../../hostagent/layout.ts";
import { cleanup } from "../hostagent/helpers.ts";
import { ClusterLab, ask, cli, waitFor } from "../cluster/lab.ts";

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;

export async function run(): Promise<void> {
  console.log("\n== cluster: names across hosts (3 etcd members, 2 hosts) ==");
  const lab = new ClusterLab("b", 153, 3);
  try {
    await lab.start(2);
    const rootfs = `${lab.dir}/rootfs`;
    for (const d of ["bin", "etc", "man8s-init", "usr/lib"]) mkdirSync(`${rootfs}/${d}`, { recursive: true });
    cpSync("/bin/busybox", `${rootfs}/bin/busybox`);
    writeFileSync(`${rootfs}/usr/lib/os-release`, "ID=m8e\n");
    const config = `${lab.dir}/config.json`;
    writeFileSync(config, JSON.stringify({ architecture: "amd64", os: "linux", config: { Cmd: ["/bin/busybox", "sleep", "1000"] }, rootfs: { type: "layers", diff_ids: [] } }));
    const [h0, h1] = [lab.hosts[0]!, lab.hosts[1]!];
    for (const h of [h0, h1]) await waitFor(`${h.name} publishing`, async () => (await ask(h.agent.socket, "cluster")).state === "publishing", 15_000);
    const install = async (h: typeof h0, name: string) => {
      const r = await cli(h.agent.socket, ["agent", "install", name, "--rootfs", rootfs, "--config", config, "--bridge", h.bridge, "--ygg-prefix", h.yggSubnet]);
      if (r.code !== 0) throw new Error(r.err);
    };
    await install(h1, "m8e-asker");
    // a change on host0 → seen in host1's view (claim + put + watch), 20 times
    const seen: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      await install(h0, `m8e-b${i}`);
      await waitFor("host1 to see it", async () => ((await ask(h1.agent.socket, "lookup", { name: `m8e-b${i}` })) as { address: string | null }).address !== null, 5000, 1);
      seen.push(performance.now() - t0);
    }
    // the init's lookup of a remote name over the asker's report socket (root on the host is accepted)
    const env = { MAN8S_REPORT_SOCKET: reportSocket(h1.agent.root, "m8e-asker") };
    const ms: number[] = [];
    for (let i = 0; i < 300; i++) {
      const t0 = performance.now();
      const a = await lookupName(`m8e-b${i % 20}`, env);
      ms.push(performance.now() - t0);
      if (!a?.found || a.host !== "host0") throw new Error(`lookup failed: ${JSON.stringify(a)}`);
      if (i % 16 === 15) await Bun.sleep(1000); // within the lookup rate (16/s per container)
    }
    console.log(`remote name lookup through the agent (report socket, ${ms.length} lookups): p50 ${pct(ms, 50).toFixed(2)} ms, p99 ${pct(ms, 99).toFixed(2)} ms`);
    console.log(`install on host0 → entry in host1's view (claim, install, publish, watch; ${seen.length}x): p50 ${pct(seen, 50).toFixed(0)} ms, p99 ${pct(seen, 99).toFixed(0)} ms`);
    console.log("remote ready → waiter's app started: see test/cluster/remote-wait.test.ts (printed by the test)");
  } finally {
    await lab.cleanup();
    cleanup();
  }
}

if (import.meta.main) await run();
