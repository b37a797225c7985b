// Pull benchmark (part of `bun run bench`): a real docker-registry on loopback, images built with umoci.
//   - man8s machines pull (cold store) → installed, against mbctl's flow (skopeo copy to a fresh layout +
//     umoci unpack, no cache), same image, same run
//   - a second image sharing the base layer: bytes of layers fetched vs the image's total
//   - a re-pull of the same digest; renew with an unchanged digest (target ≤ 1 s)
//   - umoci unpack vs umoci raw unpack of the same image
import { rmSync } from "node:fs";
import { BIN, cleanup, startAgent } from "../hostagent/helpers.ts";
import { buildImages, Registry, run as sh, tmpDir } from "../machines/registry.ts";

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function timed(argv: string[]): Promise<{ s: number; out: string }> {
  const t = performance.now();
  const p = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`${argv.join(" ")}: ${err}`);
  return { s: (performance.now() - t) / 1000, out };
}

export async function run(): Promise<void> {
  console.log("\n== machines: pull into the shared store (docker-registry on loopback) ==");
  const dir = tmpDir("bench-pull");
  const reg = await Registry.start(dir);
  try {
    const img = buildImages(dir, 32 * 1024 * 1024);
    reg.push(img.layout, "app", "b/app:1");
    reg.push(img.layout, "app2", "b/app2:1");
    reg.push(img.layout, "big", "b/big:1");
    const N = 5;
    const cold: number[] = [];
    const mb: number[] = [];
    for (let i = 0; i < N; i++) {
      const agent = await startAgent();
      const m = (...a: string[]) => [BIN, "machines", "--socket", agent.socket, ...a];
      cold.push((await timed(m("pull", "--tls-verify=false", `${reg.host}/b/big:1`, `bench${i}`))).s);
      await agent.stop();
      const layout = `${dir}/mbctl-${i}`;
      const t = performance.now();
      sh(["skopeo", "copy", "--src-tls-verify=false", `docker://${reg.host}/b/big:1`, `oci:${layout}:latest`]);
      sh(["umoci", "unpack", "--image", `${layout}:latest`, `${layout}-unpack`]);
      mb.push((performance.now() - t) / 1000);
      rmSync(layout, { recursive: true, force: true });
      rmSync(`${layout}-unpack`, { recursive: true, force: true });
    }
    console.log(`image: busybox base + 32 MiB layer; median of ${N}, cold store each time`);
    console.log(`  man8s machines pull → installed (pull, unpack, classify, render, install, inject): ${median(cold).toFixed(2)} s`);
    console.log(`  mbctl's flow (skopeo copy + umoci unpack only, no config, no init):        ${median(mb).toFixed(2)} s`);

    const agent = await startAgent();
    const m = (...a: string[]) => [BIN, "machines", "--socket", agent.socket, "--json", ...a];
    const res = (out: string) => (JSON.parse(out.trim().split("\n").at(-1)!) as { result: Record<string, number> }).result;
    await timed(m("pull", "--tls-verify=false", `${reg.host}/b/app:1`, "first"));
    const second = await timed(m("pull", "--tls-verify=false", `${reg.host}/b/app2:1`, "second"));
    const r2 = res(second.out);
    const man = JSON.parse(sh(["skopeo", "inspect", "--raw", "--tls-verify=false", `docker://${reg.host}/b/app2:1`])) as { layers: { size: number }[] };
    const total = man.layers.reduce((n, l) => n + l.size, 0);
    console.log(`second image sharing the base layer: ${r2.fetchedBytes} of ${total} layer bytes fetched (${r2.reused}/${r2.layers} layers reused), ${second.s.toFixed(2)} s`);
    const digest = sh(["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", `docker://${reg.host}/b/app:1`]).trim();
    const again = await timed(m("pull", "--tls-verify=false", `${reg.host}/b/app@${digest}`, "again"));
    console.log(`re-pull of the same digest: ${res(again.out).fetchedBytes} layer bytes fetched, ${again.s.toFixed(2)} s`);
    const renews: number[] = [];
    for (let i = 0; i < 5; i++) renews.push((await timed(m("renew", "--tls-verify=false", "first"))).s);
    console.log(`renew with an unchanged digest: median ${median(renews).toFixed(2)} s (target ≤ 1 s)`);
    await agent.stop();

    const unpack: number[] = [];
    const raw: number[] = [];
    const layout = `${dir}/unpack-layout`;
    sh(["skopeo", "copy", "--src-tls-verify=false", `docker://${reg.host}/b/big:1`, `oci:${layout}:x`]);
    for (let i = 0; i < 3; i++) {
      let t = performance.now();
      sh(["umoci", "unpack", "--image", `${layout}:x`, `${dir}/u${i}`]);
      unpack.push((performance.now() - t) / 1000);
      t = performance.now();
      sh(["umoci", "raw", "unpack", "--image", `${layout}:x`, `${dir}/r${i}`]);
      raw.push((performance.now() - t) / 1000);
      rmSync(`${dir}/u${i}`, { recursive: true, force: true });
      rmSync(`${dir}/r${i}`, { recursive: true, force: true });
    }
    console.log(`umoci unpack ${median(unpack).toFixed(2)} s vs umoci raw unpack ${median(raw).toFixed(2)} s (same image, median of 3)`);
  } finally {
    await reg.stop();
    rmSync(dir, { recursive: true, force: true });
    cleanup();
  }
}

if (import.meta.main) await run();
