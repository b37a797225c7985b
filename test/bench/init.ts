// Init benchmarks, man8s beside tini and dumb-init measured in the same run:
// exec → app's first output, idle memory, reaping 1000 orphans, signal forwarding latency.
import { readFileSync } from "node:fs";
import { compile } from "../../build.ts";
import { BUNDLE, childrenOf, ensureBuilt, fixture, WORK } from "../init/harness.ts";

const N_START = Number(process.env.BENCH_N ?? 40);
const N_SIG = Number(process.env.BENCH_SIGNALS ?? 300);

interface Init {
  name: string;
  argv: (cmd: string[]) => string[];
}

const INITS: Init[] = [
  { name: "man8s", argv: (cmd) => [`${BUNDLE}/init`, "--", ...cmd] },
  { name: "tini", argv: (cmd) => ["tini", "-s", "--", ...cmd] },
  { name: "dumb-init", argv: (cmd) => ["dumb-init", "--", ...cmd] },
  { name: "(no init)", argv: (cmd) => cmd },
];

const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", MAN8S_STATUS_FILE: `${WORK}/bench-status.json`, MAN8S_ENV_FILE: `${WORK}/none.env` };

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
const ms = (x: number) => `${x.toFixed(2)} ms`;

/** Spawn → first byte on stdout, with the app being /bin/echo; also what the process printed. */
async function startOnce(init: Init, extraEnv: Record<string, string> = {}): Promise<{ ms: number; out: string }> {
  const t0 = performance.now();
  const p = Bun.spawn(init.argv(["/bin/echo", "x"]), { env: { ...env, ...extraEnv }, stdout: "pipe", stderr: "ignore" });
  const reader = p.stdout.getReader();
  let chunk = await reader.read();
  const ms = performance.now() - t0;
  let out = "";
  const dec = new TextDecoder();
  while (!chunk.done) {
    out += dec.decode(chunk.value, { stream: true });
    chunk = await reader.read();
  }
  await p.exited;
  return { ms, out };
}

/** The init's own clock (status record): the runtime's time origin → its first statement, → the app's spawn. */
function initView(status: string): { first: number; spawned: number } {
  const r = JSON.parse(readFileSync(status, "utf8"));
  return { first: r.phases.runtime, spawned: r.app.startedAfterMs };
}

function memOf(pid: number): { rss: number; anon: number } {
  const st = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(st)?.[1] ?? 0);
  return { rss: kb("VmRSS") / 1024, anon: kb("RssAnon") / 1024 };
}

async function idleMemory(init: Init): Promise<{ rss: number; anon: number }> {
  const p = Bun.spawn(init.argv(["sleep", "30"]), { env, stdout: "ignore", stderr: "ignore" });
  await Bun.sleep(1500);
  const m = memOf(p.pid);
  p.kill("SIGKILL");
  await p.exited;
  for (const c of childrenOf(p.pid)) process.kill(c, "SIGKILL");
  return m;
}

/**
 * As PID 1 of a pid namespace: from the moment the burst's parent has exited (its 1000 zombies now belong
 * to the init) until the init has no child left but the app, polled from outside through
 * /proc/PID/task/PID/children. For man8s also the init's own figure for its largest reaping pass.
 */
async function reap1000(init: Init, sigapp: string): Promise<{ outside: number; inside?: { n: number; ms: number } }> {
  const status = `${WORK}/bench-reap-${init.name}.json`;
  const cmd = ["sh", "-c", `${sigapp} orphans 1000; echo done; exec sleep 30`];
  const p = Bun.spawn(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", ...init.argv(cmd)], {
    env: { ...env, MAN8S_STATUS_FILE: status }, stdout: "pipe", stderr: "ignore",
  });
  const reader = p.stdout.getReader();
  let initPid = 0;
  while (!initPid) {
    initPid = childrenOf(p.pid)[0] ?? 0;
    await Bun.sleep(1);
  }
  await reader.read();
  const t0 = performance.now();
  while (childrenOf(initPid).length > 1) await Bun.sleep(0);
  const outside = performance.now() - t0;
  if (init.name === "man8s") process.kill(initPid, "SIGTERM");
  else p.kill("SIGKILL");
  await p.exited;
  const inside = init.name === "man8s" ? JSON.parse(readFileSync(status, "utf8")).exit?.largestReap : undefined;
  return { outside, inside };
}

/** kill(init, SIGUSR1) → the app's "sig 10" line read back through a pipe. */
async function forwarding(init: Init, sigapp: string): Promise<number[]> {
  const p = Bun.spawn(init.argv([sigapp, "-x", "15"]), { env, stdout: "pipe", stderr: "ignore" });
  const reader = p.stdout.getReader();
  const dec = new TextDecoder();
  let buf = "";
  const next = async (re: RegExp) => {
    while (!re.test(buf)) buf += dec.decode((await reader.read()).value);
    buf = "";
  };
  await next(/ready/);
  const lat: number[] = [];
  for (let i = 0; i < N_SIG; i++) {
    const t0 = performance.now();
    process.kill(p.pid, "SIGUSR1");
    await next(/sig 10 /);
    lat.push(performance.now() - t0);
    await Bun.sleep(2);
  }
  p.kill("SIGTERM");
  await p.exited;
  return lat;
}

/**
 * An empty compiled Bun program, built exactly as our binary is (build.ts's flags and its own start-up
 * profile for --bytecode-order): the floor any Bun-based init starts from. It prints "x" and, after it,
 * the runtime's clock at its first statement.
 */
async function emptyBun(): Promise<string> {
  const src = `${WORK}/empty.ts`;
  // unbuffered, like echo
  await Bun.write(src, 'const t = performance.now();\nrequire("node:fs").writeSync(1, `x ${t}\\n`);\n');
  const out = `${WORK}/empty-bun`;
  await compile([src], out, []);
  return out;
}

export async function run(): Promise<void> {
  await ensureBuilt();
  const sigapp = await fixture("sigapp");
  const empty = await emptyBun();
  INITS.push({ name: "(empty Bun binary, no init work)", argv: () => [empty] });
  console.log("\n## init (man8s beside tini 0.19 and dumb-init 1.2.5, same run)\n");

  // interleaved, so that load from elsewhere on the machine falls on every init alike
  const starts = new Map<string, number[]>(INITS.map((i) => [i.name, []]));
  const side = { ready: [] as number[], initFirst: [] as number[], initSpawned: [] as number[], emptyFirst: [] as number[] };
  const man8s = INITS[0]!;
  const readyEnv = { MAN8S_READY: "tcp://127.0.0.1:9" }; // the agent's default for an image that exposes a port
  for (let i = 0; i < N_START; i++) {
    for (const init of INITS) {
      const r = await startOnce(init);
      starts.get(init.name)!.push(r.ms);
      if (init === man8s) {
        const v = initView(env.MAN8S_STATUS_FILE);
        side.initFirst.push(v.first);
        side.initSpawned.push(v.spawned);
      } else if (init.name.startsWith("(empty")) side.emptyFirst.push(Number(r.out.split(/\s+/)[1]));
    }
    side.ready.push((await startOnce(man8s, readyEnv)).ms);
  }
  const tini = pct(starts.get("tini")!, 50);
  console.log(`exec → app's first output (/bin/echo), n=${N_START}:`);
  console.log("| init | p50 | p90 | × tini |\n|---|---|---|---|");
  for (const [name, xs] of starts) console.log(`| ${name} | ${ms(pct(xs, 50))} | ${ms(pct(xs, 90))} | ${(pct(xs, 50) / tini).toFixed(2)} |`);

  const init50 = pct(starts.get(man8s.name)!, 50);
  const emptyStarts = starts.get(INITS.at(-1)!.name)!;
  console.log(`\nexec → app, the init beside an empty Bun binary built with the same flags (same runs, n=${N_START}):`);
  console.log("| | man8s init | empty Bun binary | the init's own work |\n|---|---|---|---|");
  console.log(`| exec → first output, p50 | ${ms(init50)} | ${ms(pct(emptyStarts, 50))} | ${ms(init50 - pct(emptyStarts, 50))} |`);
  console.log(`| runtime's clock: origin → first statement, p50 | ${ms(pct(side.initFirst, 50))} | ${ms(pct(side.emptyFirst, 50))} | ${ms(pct(side.initFirst, 50) - pct(side.emptyFirst, 50))} |`);
  console.log(`| runtime's clock: origin → the app's spawn, p50 | ${ms(pct(side.initSpawned, 50))} | | |`);
  console.log(`| exec → first output with MAN8S_READY=${readyEnv.MAN8S_READY}, p50 | ${ms(pct(side.ready, 50))} | | ${ms(pct(side.ready, 50) - pct(emptyStarts, 50))} |`);

  console.log("\nidle memory, 1.5 s after start, app = sleep:");
  console.log("| init | VmRSS | RssAnon |\n|---|---|---|");
  for (const init of INITS.slice(0, 3)) {
    const m = await idleMemory(init);
    console.log(`| ${init.name} | ${m.rss.toFixed(1)} MiB | ${m.anon.toFixed(2)} MiB |`);
  }

  console.log("\nreaping 1000 orphans as PID 1 (their parent exits → only the app left, polled from outside):");
  console.log("| init | until no zombie is left | the init's own largest reaping pass |\n|---|---|---|");
  for (const init of INITS.slice(0, 3)) {
    const r = await reap1000(init, sigapp);
    console.log(`| ${init.name} | ${ms(r.outside)} | ${r.inside ? `${r.inside.n} zombies in ${ms(r.inside.ms)}` : "n/a"} |`);
  }

  console.log(`\nsignal forwarding latency (kill SIGUSR1 → app logs it), n=${N_SIG}:`);
  console.log("| init | p50 | p99 |\n|---|---|---|");
  for (const init of INITS.slice(0, 4)) {
    const lat = await forwarding(init, sigapp);
    console.log(`| ${init.name} | ${ms(pct(lat, 50))} | ${ms(pct(lat, 99))} |`);
  }
}

if (import.meta.main) await run();
