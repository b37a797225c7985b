// Host agent benchmark (part of `bun run bench`): request latency p50/p99 and throughput over the real
// socket with 1, 16 and 256 concurrent clients, and the time to classify each fixture image.
import { AgentClient } from "../../hostagent/client.ts";
import { fixtures, releaseFixtures } from "../hostagent/fixtures.ts";
import { cleanup, startAgent } from "../hostagent/helpers.ts";

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function load(socket: string, clients: number, total: number): Promise<{ p50: number; p99: number; max: number; rps: number }> {
  const cs = await Promise.all(Array.from({ length: clients }, () => AgentClient.connect(socket)));
  // warm-up: JIT both sides and fill the connection buffers
  await Promise.all(cs.map(async (c) => {
    for (let i = 0; i < 20; i++) await c.request("ping");
  }));
  const lat: number[] = [];
  const per = Math.ceil(total / clients);
  const t0 = performance.now();
  await Promise.all(cs.map(async (c) => {
    for (let i = 0; i < per; i++) {
      const t = performance.now();
      await c.request("ping");
      lat.push(performance.now() - t);
    }
  }));
  const secs = (performance.now() - t0) / 1000;
  for (const c of cs) c.close();
  lat.sort((a, b) => a - b);
  return { p50: pct(lat, 50), p99: pct(lat, 99), max: lat.at(-1)!, rps: lat.length / secs };
}

export async function run(): Promise<void> {
  console.log("\n== hostagent: request latency and throughput (ping over the real unix socket) ==");
  const agent = await startAgent();
  try {
    console.log("clients  requests   p50 ms   p99 ms   max ms      req/s");
    for (const [clients, total] of [[1, 20_000], [16, 40_000], [256, 51_200]] as const) {
      const r = await load(agent.socket, clients, total);
      console.log(`${String(clients).padStart(7)} ${String(total).padStart(9)} ${r.p50.toFixed(3).padStart(8)} ${r.p99.toFixed(3).padStart(8)} ${r.max.toFixed(2).padStart(8)} ${Math.round(r.rps).toString().padStart(10)}`);
    }
    console.log("targets: p99 <= 2 ms at 16 clients, >= 20,000 req/s");

    // one container floods its report socket (0.45 MiB reports pipelined on 8 connections, from another
    // process); the admin socket must not notice
    console.log("\n== hostagent: admin ping at 16 clients while one container floods its report socket ==");
    const fxf = await fixtures();
    const img = fxf.get("busybox-app")!;
    const k = await AgentClient.connect(agent.socket);
    await k.request("install", { name: "flood", rootfs: img.rootfs, configPath: img.imageConfig });
    k.close();
    const idle = await load(agent.socket, 16, 40_000);
    const sock = `${agent.root}/var/lib/man8machine_configs/flood/agent/report.sock`;
    const flooder = Bun.spawn([process.execPath, `${import.meta.dir}/../hostagent/flooder.ts`, sock, "60", "big"], { stdout: "pipe" });
    await Bun.sleep(300);
    const busy = await load(agent.socket, 16, 40_000);
    flooder.kill();
    await flooder.exited;
    console.log("           p50 ms   p99 ms   max ms      req/s");
    for (const [label, r] of [["idle", idle], ["flood", busy]] as const) {
      console.log(`${label.padEnd(8)} ${r.p50.toFixed(3).padStart(8)} ${r.p99.toFixed(3).padStart(8)} ${r.max.toFixed(2).padStart(8)} ${Math.round(r.rps).toString().padStart(10)}`);
    }
    console.log("target: p99 <= 5 ms at 16 clients during the flood");

    console.log("\n== hostagent: classify time per fixture image (median of 20, image config) ==");
    const fx = await fixtures();
    const c = await AgentClient.connect(agent.socket);
    for (const [tag, f] of fx) {
      const times: number[] = [];
      let kind = "";
      for (let i = 0; i < 20; i++) {
        const t = performance.now();
        kind = ((await c.request("classify", { rootfs: f.rootfs, configPath: f.imageConfig })) as { kind: string }).kind;
        times.push(performance.now() - t);
      }
      times.sort((a, b) => a - b);
      console.log(`${tag.padEnd(20)} ${kind.padEnd(14)} ${pct(times, 50).toFixed(2).padStart(7)} ms`);
    }
    c.close();
  } finally {
    await agent.stop();
    cleanup();
    releaseFixtures();
  }
}

if (import.meta.main) await run();
