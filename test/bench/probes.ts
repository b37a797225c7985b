// `bun run bench` section "probes": CPU time the init spends per probe of each type, and the delay from the
// app's port opening to READY=1 on the notify socket (target: one probe interval + 10 ms).
// The HTTP/TCP server runs in a separate process so its CPU is not counted; exec: counts only our side
// (spawn, pipes, wait), not the child's own CPU.
import { parseProbeUrl } from "../../probes/url.ts";
import { runProbe } from "../../probes/run.ts";
import { startReady } from "../../probes/ready.ts";
import { NotifyListener, freePort, tempDir } from "../probes/helpers.ts";

const ROOT = `${import.meta.dir}/../..`;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function cpuPerProbe(url: string, n: number): Promise<{ cpuUs: number; wallMs: number; ok: boolean }> {
  const probe = parseProbeUrl(url);
  for (let i = 0; i < 3; i++) await runProbe(probe, { timeoutMs: 2000 });
  const walls: number[] = [];
  let ok = true;
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const r = await runProbe(probe, { timeoutMs: 2000 });
    walls.push(performance.now() - t);
    ok &&= r.ok;
  }
  const c = process.cpuUsage(c0);
  return { cpuUs: (c.user + c.system) / n, wallMs: pct(walls, 50), ok };
}

async function readyDelays(trials: number, intervalMs: number): Promise<number[]> {
  const dir = tempDir("bench");
  const delays: number[] = [];
  try {
    for (let i = 0; i < trials; i++) {
      const listener = new NotifyListener(`${dir.path}/notify${i}`);
      const port = freePort();
      const h = startReady(
        { NOTIFY_SOCKET: `${dir.path}/notify${i}`, MAN8S_READY: `tcp://127.0.0.1:${port}` },
        { log: () => {}, intervalMs },
      );
      await Bun.sleep(150 + Math.random() * 250); // the app opens its port at a random point of the cycle
      const server = Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } });
      const opened = performance.now();
      const m = await listener.waitFor((x) => x.text.includes("READY=1"), 5000);
      if (m) delays.push(m.t - opened);
      await h.stop();
      server.stop(true);
      listener.close();
    }
  } finally {
    dir.remove();
  }
  return delays;
}

export async function run(): Promise<void> {
  console.log("\n## probes");
  const port = freePort();
  const server = Bun.spawn([process.execPath, `${ROOT}/test/probes/fixtures/serve.ts`, String(port)], { stdin: "ignore", stdout: "pipe", stderr: "inherit" });
  try {
    const reader = server.stdout.getReader();
    await reader.read();
    reader.releaseLock();
    const rows: [string, string, number][] = [
      ["tcp", `tcp://127.0.0.1:${port}`, 200],
      ["http", `http://127.0.0.1:${port}/`, 200],
      ["exec (sh -c true)", "exec:true", 50],
      ["icmp", "icmp://127.0.0.1", 200],
    ];
    console.log("probe                 CPU per probe (this process)   median wall   n");
    for (const [name, url, n] of rows) {
      const r = await cpuPerProbe(url, n);
      console.log(`${name.padEnd(22)}${`${Math.round(r.cpuUs)} µs`.padStart(14)}${"".padEnd(17)}${`${r.wallMs.toFixed(2)} ms`.padStart(11)}   ${n}${r.ok ? "" : "  (FAILED probes)"}`);
    }
  } finally {
    server.kill("SIGKILL");
    await server.exited;
  }
  const interval = 100;
  const d = await readyDelays(12, interval);
  console.log(
    `port open -> READY=1 (MAN8S_READY=tcp://..., interval ${interval} ms, ${d.length} trials): ` +
      `median ${pct(d, 50).toFixed(1)} ms, p90 ${pct(d, 90).toFixed(1)} ms, max ${Math.max(...d).toFixed(1)} ms ` +
      `(target <= ${interval + 10} ms: ${Math.max(...d) <= interval + 10 ? "met" : "NOT met"})`,
  );
}

if (import.meta.main) await run();
