// Attacks on the real agent from where it trusts too much: a container's own report socket, host users
// without privileges, container data shown on an operator's terminal, and files or clients that stall
// the one thread. Each test reproduces the attack over real sockets against the built daemon.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { encode } from "@msgpack/msgpack";
import type { Socket } from "bun";
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { AgentClient } from "../../hostagent/client.ts";
import { FrameReader, encodeFrame } from "../../hostagent/protocol.ts";
import { sendReport } from "../../common/report-client.ts";
import type { ContainerStatus } from "../../hostagent/state.ts";
import { fixtures, releaseFixtures } from "./fixtures.ts";
import { type Agent, BIN, BUNDLE, client, errorCode, startAgent, stopAgentAndClient, tmp } from "./helpers.ts";
import { Raw, framed, header } from "./raw.ts";
import { Output, waitFor } from "../wait.ts";

let agent: Agent;
let c: AgentClient;
let image: { rootfs: string; imageConfig: string };
const NAMES = ["fd", "flood", "rate", "coalesce", "bounds", "forge", "term", "exec", "fuzz", "other"];
const sockOf = (a: Agent, name: string) => `${a.root}/var/lib/man8machine_configs/${name}/agent/report.sock`;
const statusOf = async (name: string) => (await c.request<{ container: ContainerStatus }>("status", { name })).container;

beforeAll(async () => {
  const fx = await fixtures();
  image = fx.get("busybox-app")!;
  agent = await startAgent({ extra: ["--frame-timeout", "2"] });
  c = await client(agent.socket);
  for (const name of NAMES) await c.request("install", { name, rootfs: image.rootfs, configPath: image.imageConfig });
}, 60_000);
afterAll(async () => {
  await stopAgentAndClient(c, agent);
  releaseFixtures();
});

/** CPU seconds (user + system) a process has used, from /proc/PID/stat. */
function cpuSeconds(pid: number): number {
  const f = require("node:fs").readFileSync(`/proc/${pid}/stat`, "utf8") as string;
  const v = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return (Number(v[11]) + Number(v[12])) / 100;
}

/** Admin ping latencies (ms) from `clients` clients pinging back to back for `ms`. */
async function pingFor(socket: string, clients: number, ms: number): Promise<number[]> {
  const cs = await Promise.all(Array.from({ length: clients }, () => client(socket)));
  const lat: number[] = [];
  const end = performance.now() + ms;
  await Promise.all(cs.map(async (k) => {
    while (performance.now() < end) {
      const t = performance.now();
      await k.request("ping");
      lat.push(performance.now() - t);
    }
  }));
  for (const k of cs) k.close();
  return lat.sort((a, b) => a - b);
}
const p99 = (sorted: number[]) => sorted[Math.floor(sorted.length * 0.99)]!;

/** A promise that rejects after ms: a request the agent never answers fails the test instead of hanging it. */
const within = <T>(p: Promise<T>, ms: number): Promise<T> =>
  Promise.race([p, Bun.sleep(ms).then(() => Promise.reject(new Error(`no answer within ${ms} ms`)))]);

describe("a container attacking its own report socket", () => {
  test("fd exhaustion: 1000 connections on one report socket; the admin socket and other containers still work", async () => {
    const a = await startAgent({ wrap: ["prlimit", "--nofile=512:512"] });
    const k = await client(a.socket);
    for (const n of ["fd", "other"]) await k.request("install", { name: n, rootfs: image.rootfs, configPath: image.imageConfig });
    const open = new Set<Socket<undefined>>();
    let connected = 0;
    await Promise.all(Array.from({ length: 1000 }, () =>
      Bun.connect({ unix: sockOf(a, "fd"), socket: { open: (s) => void open.add(s), data() {}, close: (s) => void open.delete(s), error() {} } })
        .then(() => void connected++, () => {}),
    ));
    await Bun.sleep(300);
    const cpu0 = cpuSeconds(a.proc.pid);
    const t = performance.now();
    for (let i = 0; i < 20; i++) expect(await within(k.request<{ pong: boolean }>("ping"), 2000)).toMatchObject({ pong: true });
    const fresh = await within(client(a.socket), 2000); // a new admin connection is accepted too
    expect(await within(fresh.request<{ pong: boolean }>("ping"), 2000)).toMatchObject({ pong: true });
    fresh.close();
    const pingMs = performance.now() - t;
    await Bun.sleep(500);
    const cpu = cpuSeconds(a.proc.pid) - cpu0;
    // another container reports normally while this one holds its maximum
    expect(await sendReport(sockOf(a, "other"), { phase: "running", appPid: 3 }, 1000)).toBe(true);
    // all but its few allowed connections were closed by the agent, or refused while its socket cooled down
    expect(connected).toBeGreaterThanOrEqual(4);
    expect(open.size).toBeLessThanOrEqual(4);
    expect(pingMs).toBeLessThan(1000);
    expect(cpu).toBeLessThan(0.5); // no busy loop at the fd limit
    for (const s of open) s.end();
    k.close();
    await a.stop();
  }, 30_000);

  test("report flood: 0.45 MiB reports pipelined on 8 connections; admin p99 stays low, other containers report", async () => {
    const idle = await pingFor(agent.socket, 16, 1000);
    const flooder = Bun.spawn([process.execPath, `${import.meta.dir}/flooder.ts`, sockOf(agent, "flood"), "4", "big"], { stdout: "pipe", stderr: "inherit" });
    await Bun.sleep(500);
    const busy = await pingFor(agent.socket, 16, 2500);
    expect(await sendReport(sockOf(agent, "other"), { phase: "running", appPid: 9 }, 1000)).toBe(true);
    await flooder.exited;
    console.log(`admin ping p99 at 16 clients: idle ${p99(idle).toFixed(2)} ms, during a report flood ${p99(busy).toFixed(2)} ms (${busy.length} pings)`);
    expect(p99(busy)).toBeLessThan(25); // the benchmark's target is 5 ms; generous on a shared machine
    expect((await statusOf("other")).appPid).toBe(9);
  }, 30_000);

  test("report rate: a burst is answered, then E_RATE_LIMITED and the connection closes", async () => {
    const r = await Raw.connect(sockOf(agent, "rate"));
    const one = encodeFrame({ id: 1, cmd: "report", args: { phase: "running", appPid: 5 } });
    const all = new Uint8Array(one.length * 500);
    for (let i = 0; i < 500; i++) all.set(one, i * one.length);
    r.write(all);
    await r.closed;
    const codes = r.frames.map((f) => (f.ok ? "ok" : (f.error as { code: string }).code));
    expect(codes.filter((x) => x === "ok").length).toBeGreaterThanOrEqual(10);
    expect(codes.filter((x) => x === "ok").length).toBeLessThan(100);
    expect(codes.at(-1)).toBe("E_RATE_LIMITED");
  });

  test("persistence is coalesced: 40 reports in a burst cost a few fsyncs, not one each", async () => {
    const trace = Bun.spawn(["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-p", String(agent.proc.pid)], { stdout: "ignore", stderr: "pipe" });
    // every thread of the agent traced before the burst
    const task = `/proc/${agent.proc.pid}/task`;
    const traced = (t: string) => {
      try {
        return /^TracerPid:\s*[1-9]/m.test(readFileSync(`${task}/${t}/status`, "utf8"));
      } catch {
        return true; // the thread is gone
      }
    };
    await waitFor("strace to attach", () => readdirSync(task).every(traced), 5000, 20);
    const r = await Raw.connect(sockOf(agent, "coalesce"));
    for (let i = 0; i < 40; i++) r.write(encodeFrame({ id: i, cmd: "report", args: { phase: "running", appPid: 100 + i } }));
    await r.waitFrames(40);
    await Bun.sleep(600); // past the coalescing window: the files are written
    trace.kill("SIGINT");
    const lines = (await new Response(trace.stderr).text()).split("\n").filter((l) => /fsync|fdatasync/.test(l));
    r.end();
    expect(r.frames.filter((f) => f.ok).length).toBe(40);
    expect((await statusOf("coalesce")).appPid).toBe(139);
    expect(lines.length).toBeGreaterThan(0); // the files were written ...
    expect(lines.length).toBeLessThanOrEqual(6); // ... once per window (state file + durable record), not 40 times
  }, 15_000);

  test("unbounded state: huge reports are refused at the frame; every field and the whole record stay bounded", async () => {
    const big = "m".repeat(900 * 1024);
    const r1 = await Raw.connect(sockOf(agent, "bounds"));
    r1.write(encodeFrame({ id: 1, cmd: "report", args: { phase: "running", message: big } }));
    await r1.waitFrames(1);
    expect((r1.frames[0]?.error as { code: string })?.code).toBe("E_FRAME_TOO_LARGE");
    const r2 = await Raw.connect(sockOf(agent, "bounds"));
    r2.write(encodeFrame({ id: 2, cmd: "report", args: { phase: "running", addresses: { a: big } } }));
    await r2.waitFrames(1);
    // the largest report that fits a frame: every field at or beyond its bound
    const addresses: Record<string, string[]> = {};
    for (let i = 0; i < 16; i++) addresses[`k${i}`.padEnd(32, "k")] = Array.from({ length: 8 }, () => "a".repeat(64));
    const timings: Record<string, number> = {};
    for (let i = 0; i < 32; i++) timings[`t${i}`.padEnd(32, "t")] = i;
    expect(await sendReport(sockOf(agent, "bounds"), { phase: "running", message: "é".repeat(10_000), health: "h".repeat(5000), addresses, timings, exit: { code: 1, reason: "r".repeat(10_000), signal: "s".repeat(500) } }, 1000)).toBe(true);
    const tooMany = await Raw.connect(sockOf(agent, "bounds"));
    tooMany.write(encodeFrame({ id: 3, cmd: "report", args: { phase: "running", addresses: { ...addresses, extra: "1" } } }));
    await tooMany.waitFrames(1);
    expect((tooMany.frames[0]?.error as { code: string })?.code).toBe("E_BAD_ARGS");
    const s = await statusOf("bounds");
    expect([s.message?.length, s.health?.length, s.exit?.reason?.length, s.exit?.signal?.length]).toEqual([1024, 64, 1024, 32]);
    expect(encode(s).length).toBeLessThan(24 * 1024);
    // status of everything and watch still encode
    expect((await c.request<{ containers: ContainerStatus[] }>("status")).containers.length).toBeGreaterThanOrEqual(NAMES.length);
    const w = await client(agent.socket);
    expect((await w.request<{ watching: string }>("watch")).watching).toBe("*");
    w.close();
  });

  test("status of many containers with maximal records still fits one reply (summary fields past 1 MiB)", async () => {
    const a = await startAgent();
    const k = await client(a.socket);
    const addresses: Record<string, string[]> = {};
    for (let i = 0; i < 16; i++) addresses[`k${i}`.padEnd(32, "k")] = Array.from({ length: 8 }, () => "a".repeat(64));
    const names = Array.from({ length: 100 }, (_, i) => `many${i}`);
    for (const n of names) {
      await k.request("install", { name: n, rootfs: image.rootfs, configPath: image.imageConfig });
      expect(await sendReport(sockOf(a, n), { phase: "running", appPid: 2, message: "é".repeat(10_000), addresses, exit: { code: 3, reason: "r".repeat(5000) } }, 1000)).toBe(true);
    }
    const all = await k.request<{ containers: ContainerStatus[]; truncated?: unknown }>("status");
    expect(all.containers.length).toBe(100);
    expect(all.truncated).toBe("summary");
    expect(all.containers[0]).toMatchObject({ phase: "running", appPid: 2, exit: { code: 3 } });
    expect((await k.request<{ container: ContainerStatus }>("status", { name: "many5" })).container.addresses).toEqual(addresses);
    const w = await client(a.socket);
    expect((await w.request<{ containers: ContainerStatus[] }>("watch")).containers.length).toBe(100);
    w.close();
    const human = Bun.spawnSync([BIN, "agent", "--socket", a.socket, "status"]).stdout.toString();
    expect(human).toContain("many99: running");
    expect(human).toContain("list shortened");
    k.close();
    await a.stop();
  }, 60_000);

  test("bad persisted state from an older run is trimmed on load", async () => {
    const dir = tmp("state");
    const socket = `${dir}/agent.sock`;
    mkdirSync(`${dir}/state`);
    const huge = "z".repeat(2 * 1024 * 1024);
    writeFileSync(`${dir}/state/old.json`, JSON.stringify({
      status: { name: "old", phase: "running", installed: true, updatedAt: 1, message: huge, health: huge, addresses: { a: huge }, timings: { x: "y" }, history: Array.from({ length: 50_000 }, (_, i) => ({ phase: "running", at: i })) },
      peer: { pid: 1, start: huge },
    }));
    const a = await startAgent({ socket });
    const k = await client(a.socket);
    const s = (await k.request<{ container: ContainerStatus }>("status", { name: "old" })).container;
    expect(s.phase).toBe("running");
    expect(s.message?.length).toBe(1024);
    expect(s.health?.length).toBe(64);
    expect(s.addresses).toBeUndefined(); // a field out of bounds is dropped, the record stays
    expect(s.timings).toBeUndefined();
    expect(s.history.length).toBe(32);
    expect((await k.request<{ containers: ContainerStatus[] }>("status")).containers.map((x) => x.name)).toEqual(["old"]);
    k.close();
    await a.stop();
  });
});

describe("host users without privileges", () => {
  const asNobody = (argv: string[]) =>
    Bun.spawnSync(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", ...argv], { stdout: "pipe", stderr: "pipe" });
  const PY = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry: s.connect(sys.argv[1])\nexcept OSError as e: print('CONNECT', e.strerror); sys.exit(0)\ns.sendall(bytes.fromhex(sys.argv[2]))\nsys.stdout.buffer.write(s.recv(4096))";
  const forged = () => Buffer.from(encodeFrame({ id: 1, cmd: "report", args: { phase: "exited", exit: { code: 0, reason: "forged" } } })).toString("hex");

  test("cannot reach a report socket, and are refused as peers even where a directory lets them in", async () => {
    // the test's temporary directories are private; open the path down to the agent's own directories
    chmodSync(dirname(agent.root), 0o755);
    expect(await sendReport(sockOf(agent, "forge"), { phase: "running", appPid: 11 }, 1000)).toBe(true);
    const direct = asNobody(["/usr/bin/python3", "-c", PY, sockOf(agent, "forge"), forged()]);
    expect(direct.stdout.toString()).toContain("CONNECT Permission denied");
    // a directory opened by mistake: the peer check still refuses a host user ...
    chmodSync(`${agent.root}/var/lib/man8machine_configs/forge`, 0o755);
    const plain = asNobody(["/usr/bin/python3", "-c", PY, sockOf(agent, "forge"), forged()]);
    expect(plain.stdout.toString()).toContain("E_FORBIDDEN");
    expect(plain.stdout.toString()).toContain("uid 65534 on the host");
    // ... and one in its own user and pid namespaces, as `unshare -Urpf` makes them (root inside)
    const ns = asNobody(["unshare", "-Urpf", "/usr/bin/python3", "-c", PY, sockOf(agent, "forge"), forged()]);
    expect(ns.stdout.toString()).toContain("E_FORBIDDEN");
    expect(ns.stdout.toString()).toContain("owned by uid 65534");
    const s = await statusOf("forge");
    expect([s.phase, s.appPid, s.exit]).toEqual(["running", 11, undefined]);
    chmodSync(`${agent.root}/var/lib/man8machine_configs/forge`, 0o700);
    chmodSync(dirname(agent.root), 0o700);
  });
});

describe("container data on an operator's terminal", () => {
  test("status and watch escape control characters; --json stays exact", async () => {
    const evil = { phase: "running" as const, health: "\x1b]0;owned\x07ok", message: "m", addresses: { ipv4: "10.0.0.1\n\x1b[2Jfake: exited" }, exit: { code: 1, reason: "bye\r\x1b[31mred\u202e" } };
    expect(await sendReport(sockOf(agent, "term"), evil, 1000)).toBe(true);
    const human = Bun.spawnSync([BIN, "agent", "--socket", agent.socket, "status", "term"]).stdout.toString();
    expect(human).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f\u202e]/);
    expect(human.trim().split("\n").length).toBe(1);
    expect(human).toContain("health \\x1b]0;owned\\x07ok");
    expect(human).toContain("10.0.0.1\\n\\x1b[2Jfake: exited");
    expect(human).toContain("bye\\r\\x1b[31mred\\u202e");
    const json = JSON.parse(Bun.spawnSync([BIN, "agent", "--socket", agent.socket, "--json", "status", "term"]).stdout.toString());
    expect(json.container).toMatchObject({ health: evil.health, addresses: evil.addresses, exit: evil.exit });
    // watch: the current state and then each change, escaped the same way
    const w = Bun.spawn([BIN, "agent", "--socket", agent.socket, "watch", "term"], { stdout: "pipe" });
    const out = new Output(w.stdout);
    await out.waitLines(1); // subscribed: the current state is printed
    await sendReport(sockOf(agent, "term"), { ...evil, message: "again" }, 1000);
    await out.waitLines(2);
    w.kill();
    await out.ended;
    const lines = out.lines();
    expect(lines.length).toBe(2);
    for (const l of lines) expect(l).not.toMatch(/[\x00-\x1f\x7f\u202e]/);
  });
});

describe("stalls of the one thread", () => {
  test("a configPath that is a FIFO is refused at once; the daemon keeps answering", async () => {
    const fifo = `${tmp("fifo")}/config.json`;
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    const t = performance.now();
    expect(await within(errorCode(c.request("classify", { rootfs: image.rootfs, configPath: fifo })), 3000)).toBe("E_BAD_CONFIG");
    expect(performance.now() - t).toBeLessThan(1000);
    expect(await within(c.request<{ pong: boolean }>("ping"), 1000)).toMatchObject({ pong: true });
  });

  test("a 1 MiB frame in 128-byte writes costs linear time", async () => {
    const body = encode({ id: 7, cmd: "ping", args: { pad: "p".repeat(1024 * 1024 - 64) } });
    const frame = framed(body);
    // a separate writer that sends each 128-byte piece on its own, slowly enough that the agent reads it alone
    const py = "import socket,sys,time\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nd=sys.stdin.buffer.read()\nfor i in range(0,len(d),128):\n  s.sendall(d[i:i+128]); time.sleep(0.00003)\nr=b''\nwhile len(r)<4 or len(r)<4+int.from_bytes(r[:4],'big'):\n  c=s.recv(65536)\n  if not c: break\n  r+=c\nprint(len(r))";
    const cpu0 = cpuSeconds(agent.proc.pid);
    const w = Bun.spawn(["python3", "-c", py, agent.socket], { stdin: frame, stdout: "pipe" });
    expect(await w.exited).toBe(0);
    const cpu = cpuSeconds(agent.proc.pid) - cpu0;
    expect(Number((await new Response(w.stdout).text()).trim())).toBeGreaterThan(4); // the reply came
    console.log(`agent CPU for one 1 MiB frame in 128-byte pieces over the socket: ${cpu.toFixed(2)} s`);
    expect(cpu).toBeLessThan(2); // per-read overhead dominates here; the assembly itself is timed below
    // the assembly alone, every piece on its own (the socket may merge pieces): linear, not quadratic;
    // the best of 3 runs, so a busy machine does not decide (quadratic assembly copies 4 GiB here)
    let best = Infinity;
    for (let k = 0; k < 3; k++) {
      const reader = new FrameReader();
      const t = performance.now();
      let got = 0;
      for (let off = 0; off < frame.length; off += 128) got += reader.push(frame.subarray(off, off + 128)).length;
      best = Math.min(best, performance.now() - t);
      expect(got).toBe(1);
    }
    expect(best).toBeLessThan(100);
  }, 30_000);

  test("an incomplete frame has an absolute deadline: one byte every 2 s does not keep it open", async () => {
    const a = await startAgent({ extra: ["--frame-timeout", "6"] });
    const r = await Raw.connect(a.socket);
    r.write(header(100));
    const t = performance.now();
    while (!r.closedFlag && performance.now() - t < 12_000) {
      r.write(new Uint8Array([0xc0]));
      await Promise.race([r.closed, Bun.sleep(2000)]);
    }
    expect(r.closedFlag).toBe(true);
    expect(performance.now() - t).toBeLessThan(8500);
    await a.stop();
  }, 20_000);
});

describe("one schema for the init and the agent", () => {
  test("the real init's exec phase (MAN8S_EXEC_INIT) shows in `man8s agent status`", async () => {
    const dir = tmp("exec");
    writeFileSync(`${dir}/env`, 'MAN8S_EXEC_INIT=["/bin/sleep","3"]\nMAN8S_NETWORK=none\n');
    const init = Bun.spawn([`${BUNDLE}/init`], {
      env: { PATH: "/usr/bin:/bin", MAN8S_ENV_FILE: `${dir}/env`, MAN8S_STATUS_FILE: `${dir}/status.json`, MAN8S_REPORT_SOCKET: sockOf(agent, "exec") },
      stdout: "ignore",
      stderr: "pipe",
    });
    let s: ContainerStatus | null = null;
    for (let i = 0; i < 100 && init.exitCode === null; i++) {
      s = await statusOf("exec");
      if (s.phase === "exec") break;
      await Bun.sleep(20);
    }
    const human = Bun.spawnSync([BIN, "agent", "--socket", agent.socket, "status", "exec"]).stdout.toString();
    init.kill("SIGKILL");
    await init.exited;
    expect(s?.phase).toBe("exec");
    expect(s?.history.map((h) => h.phase)).toContain("signals");
    expect(human).toContain("exec: exec");
  }, 20_000);
});

describe("fuzz: random and mutated reports over the real socket", () => {
  test("6 s of hostile reports: the agent stays up, admin works, the record stays bounded", async () => {
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const phases = ["starting", "signals", "running", "exec", "exited", "failed", "bogus", "", "RUNNING"];
    const values = (): unknown => {
      switch (rnd(10)) {
        case 0: return "s".repeat(rnd(70_000));
        case 1: return rnd(2) ? -rnd(1e9) : rnd(1e9) * 1e6;
        case 2: return { [`k${rnd(100)}`]: values(), nested: { deep: [values()] } };
        case 3: return Array.from({ length: rnd(40) }, () => "10.0.0." + rnd(255));
        case 4: return null;
        case 5: return true;
        case 6: return new Uint8Array(rnd(1000));
        case 7: return 1.5;
        case 8: return "\x1b[31m\n\u0000" + "é".repeat(rnd(3000));
        default: return rnd(100_000);
      }
    };
    // well-typed reports with fields of random size around and beyond their bounds
    const plausible = () => ({
      phase: phases[rnd(6)],
      appPid: 1 + rnd(1000),
      message: "m".repeat(rnd(8000)),
      health: "h".repeat(rnd(100)),
      addresses: Object.fromEntries(Array.from({ length: rnd(40) }, (_, i) => [`if${i}`, Array.from({ length: rnd(20) }, () => "2001:db8::".padEnd(rnd(120), "1"))])),
      timings: Object.fromEntries(Array.from({ length: rnd(40) }, (_, i) => [`t${i}`, rnd(1000) / 7])),
      exit: { code: rnd(256), reason: "r".repeat(rnd(3000)) },
    });
    const report = () => {
      if (rnd(3) === 0) return { id: rnd(1000), cmd: "report", args: plausible() };
      const args: Record<string, unknown> = { phase: phases[rnd(phases.length)] };
      for (const k of ["initPid", "appPid", "pid1", "health", "message", "addresses", "timings", "exit", "name", "x"]) if (rnd(3) === 0) args[k] = values();
      if (rnd(4) === 0) args.addresses = Object.fromEntries(Array.from({ length: rnd(30) }, (_, i) => [`a${i}`, values()]));
      if (rnd(4) === 0) args.exit = { code: values(), reason: values(), signal: values() };
      return { id: rnd(1000), cmd: rnd(10) ? "report" : "ping", args };
    };
    const mutate = (b: Uint8Array): Uint8Array => {
      const m = b.slice();
      for (let i = 0, n = 1 + rnd(4); i < n; i++) m[4 + rnd(Math.max(1, m.length - 4))] = rnd(256);
      return rnd(5) === 0 ? m.subarray(0, rnd(m.length)) : m;
    };
    // every state the agent goes through, not only the last one, stays within the bounds
    const watcher = await client(agent.socket);
    let largestEvent = 0;
    let longestText = 0;
    let events = 0;
    watcher.eventHandler = (_id, e) => {
      events++;
      const st = (e as { status: ContainerStatus }).status;
      largestEvent = Math.max(largestEvent, encode(st).length);
      longestText = Math.max(longestText, st.message?.length ?? 0, st.exit?.reason?.length ?? 0);
    };
    await watcher.request("watch", { name: "fuzz" });
    const end = performance.now() + 6000;
    let sent = 0;
    const worker = async () => {
      while (performance.now() < end) {
        let r: Raw;
        try {
          r = await Raw.connect(sockOf(agent, "fuzz"));
        } catch {
          await Bun.sleep(10);
          continue;
        }
        for (let i = 0; i < 1 + rnd(20) && !r.closedFlag; i++) {
          let f: Uint8Array;
          try {
            f = encodeFrame(report());
          } catch {
            f = framed(new Uint8Array([0xc1]));
          }
          r.write(rnd(3) === 0 ? mutate(f) : f);
          sent++;
          if (rnd(4) === 0) await Bun.sleep(rnd(30));
        }
        r.end();
        await Bun.sleep(rnd(20));
      }
    };
    await Promise.all(Array.from({ length: 4 }, worker));
    expect(sent).toBeGreaterThan(100); // fewer than offered: over its rate, the container's socket cools down
    watcher.close();
    // how many well-formed reports get past the rate limit in 6 s depends on the machine's load: the watch
    // must have seen some (their bounds are what is checked), not a fixed number
    expect(events).toBeGreaterThan(2);
    expect(largestEvent).toBeLessThan(24 * 1024);
    expect(longestText).toBeLessThanOrEqual(1024);
    expect(agent.proc.exitCode).toBeNull();
    expect(await within(c.request<{ pong: boolean }>("ping"), 1000)).toMatchObject({ pong: true });
    const s = await statusOf("fuzz");
    expect(encode(s).length).toBeLessThan(24 * 1024);
    expect(s.history.length).toBeLessThanOrEqual(32);
    expect((await c.request<{ containers: ContainerStatus[] }>("status")).containers.length).toBeGreaterThanOrEqual(NAMES.length);
    // the container itself can still report once its burst has refilled
    await Bun.sleep(1500);
    expect(await sendReport(sockOf(agent, "fuzz"), { phase: "running", appPid: 77 }, 1000)).toBe(true);
    expect((await statusOf("fuzz")).appPid).toBe(77);
  }, 30_000);
});
