// The daemon over its real socket: commands, concurrency, every kind of bad input, permissions, shutdown,
// and a fuzz run after which the daemon still answers and its memory is back near where it started.
import { afterAll, describe, expect, test } from "bun:test";
import { encode } from "@msgpack/msgpack";
import { chmodSync, existsSync, statSync, writeFileSync } from "node:fs";
import { encodeFrame } from "../../hostagent/protocol.ts";
import { BIN, cleanup, client, errorCode, rssKiB, startAgent, tmp } from "./helpers.ts";
import { Raw, framed, header } from "./raw.ts";

afterAll(cleanup);

describe("admin socket", () => {
  test("ping and version; many concurrent clients each get their own answers", async () => {
    const a = await startAgent();
    const c = await client(a.socket);
    expect(await c.request("ping")).toMatchObject({ pong: true });
    const v = (await c.request("version")) as Record<string, unknown>;
    expect(v).toMatchObject({ protocol: 1, pid: a.proc.pid });
    expect(typeof v.version).toBe("string");
    const clients = await Promise.all(Array.from({ length: 64 }, () => client(a.socket)));
    const replies = await Promise.all(clients.flatMap((k, i) => Array.from({ length: 20 }, (_, j) => k.request("address", { name: `c${i}-${j}`, prefix: "300::/64" }))));
    replies.forEach((r, n) => expect((r as { name: string }).name).toBe(`c${Math.floor(n / 20)}-${n % 20}`));
    for (const k of clients) k.close();
    c.close();
    expect(await a.stop()).toBe(0);
  });

  test("mode 0600, stale socket replaced, live socket refused, SIGTERM and SIGINT remove it", async () => {
    const dir = tmp("sock");
    const path = `${dir}/a.sock`;
    // a stale socket file (nobody listening) left by a killed agent
    const first = await startAgent({ socket: path });
    first.proc.kill("SIGKILL");
    await first.proc.exited;
    expect(existsSync(path)).toBe(true);
    const a = await startAgent({ socket: path });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    // a second agent on the same live socket must refuse instead of stealing it
    const second = Bun.spawnSync([BIN, "hostagent", "serve", "--socket", path, "--root", `${dir}/r`]);
    expect(second.exitCode).toBe(69);
    expect(second.stderr.toString()).toContain("another agent is listening");
    expect(await (await client(path)).request("ping")).toMatchObject({ pong: true });
    expect(await a.stop("SIGTERM")).toBe(0);
    expect(existsSync(path)).toBe(false);
    const b = await startAgent({ socket: path });
    expect(await b.stop("SIGINT")).toBe(0);
    expect(existsSync(path)).toBe(false);
    // a non-socket file at the path is never removed
    writeFileSync(path, "precious");
    const third = Bun.spawnSync([BIN, "hostagent", "serve", "--socket", path, "--root", `${dir}/r`]);
    expect(third.exitCode).toBe(69);
    expect(Bun.file(path).size).toBe(8);
  });

  test("a non-root peer is refused even when the file mode would let it in", async () => {
    const a = await startAgent();
    chmodSync(a.socket, 0o666);
    chmodSync(a.socket.replace(/\/[^/]+$/, ""), 0o755); // mkdtemp made it 0700
    const r = Bun.spawnSync(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", BIN, "agent", "--socket", a.socket, "ping"]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.toString()).toContain("E_FORBIDDEN");
    expect(r.stderr.toString()).toContain("uid 65534");
    expect(await (await client(a.socket)).request("ping")).toMatchObject({ pong: true });
    await a.stop();
  });
});

describe("bad input", () => {
  test("each kind of bad request gets its own error code and the connection keeps working", async () => {
    const a = await startAgent();
    const c = await client(a.socket);
    const cases: [string, Record<string, unknown>, string][] = [
      ["nosuch", {}, "E_UNKNOWN_COMMAND"],
      ["report", { phase: "running" }, "E_FORBIDDEN"],
      ["address", { name: 5 }, "E_BAD_ARGS"],
      ["address", { name: "../etc" }, "E_BAD_NAME"],
      ["address", { name: "ok", prefix: "not-an-address" }, "E_BAD_ARGS"],
      ["classify", { rootfs: "relative/dir", config: {} }, "E_BAD_PATH"],
      ["classify", { rootfs: "/tmp/../etc", config: {} }, "E_BAD_PATH"],
      ["classify", { rootfs: "/nonexistent-m8a", config: {} }, "E_NOT_FOUND"],
      ["classify", { rootfs: "/tmp", config: { config: { Cmd: "not-a-list" } } }, "E_BAD_CONFIG"],
      ["classify", { rootfs: "/tmp", configPath: "/nonexistent-m8a.json" }, "E_NOT_FOUND"],
      ["classify", { rootfs: "/tmp" }, "E_BAD_ARGS"],
      ["classify", { rootfs: ["/tmp"], config: {} }, "E_BAD_ARGS"],
      ["status", { name: "nobody-knows-me" }, "E_NOT_FOUND"],
      ["render", { name: "x", rootfs: "/tmp", config: { config: { Cmd: ["a"] } }, stopTimeout: "10" }, "E_BAD_ARGS"],
      ["inject", { rootfs: "/tmp", mode: "teleport" }, "E_BAD_ARGS"],
    ];
    for (const [cmd, args, code] of cases) expect([cmd, await errorCode(c.request(cmd, args))]).toEqual([cmd, code]);
    expect(await c.request("ping")).toMatchObject({ pong: true });
    await a.stop();
  });

  test("frame-level errors: bad msgpack and non-map get a reply; oversized frames a reply and a close", async () => {
    const a = await startAgent();
    const r = await Raw.connect(a.socket);
    r.write(framed(new Uint8Array([0xc1, 0xc1])));
    r.write(framed(encode([1, 2, 3])));
    r.write(framed(encode({ id: 4, cmd: 12 })));
    r.write(framed(new Uint8Array(0)));
    r.write(encodeFrame({ id: 5, cmd: "ping" }));
    await r.waitFrames(5);
    expect(r.frames.map((f) => (f.ok ? "ok" : (f.error as { code: string }).code))).toEqual(["E_BAD_MSGPACK", "E_BAD_REQUEST", "E_BAD_REQUEST", "E_BAD_MSGPACK", "ok"]);
    expect(r.frames[2]!.id).toBe(4);
    r.write(header(1024 * 1024 + 1));
    r.write(new Uint8Array(1000));
    await r.closed;
    expect((r.frames.at(-1)!.error as { code: string }).code).toBe("E_FRAME_TOO_LARGE");
    // a truncated frame followed by a close leaves nothing behind; other clients never noticed
    const t = await Raw.connect(a.socket);
    t.write(header(100));
    t.write(new Uint8Array(10));
    t.end();
    await t.closed;
    expect(await (await client(a.socket)).request("ping")).toMatchObject({ pong: true });
    await a.stop();
  });

  test("a stalled half frame is closed after --frame-timeout; deep nesting is just another bad request", async () => {
    const a = await startAgent({ extra: ["--frame-timeout", "1"] });
    const stalled = await Raw.connect(a.socket);
    stalled.write(header(50));
    stalled.write(new Uint8Array(10));
    const idle = await Raw.connect(a.socket); // idle between requests: never timed out
    const t = performance.now();
    // Bun's socket timers tick every few seconds: 1 s means "within about 5 s"
    await Promise.race([stalled.closed, Bun.sleep(9000)]);
    expect(stalled.closedFlag).toBe(true);
    expect(performance.now() - t).toBeGreaterThan(700);
    await Bun.sleep(600);
    idle.write(encodeFrame({ id: 1, cmd: "ping" }));
    await idle.waitFrames(1);
    expect(idle.frames[0]).toMatchObject({ id: 1, ok: true });
    // ~1 MiB of nested arrays, and a request whose args nest 500,000 deep
    const deep = new Uint8Array(1024 * 1024 - 100).fill(0x91);
    deep[deep.length - 1] = 0xc0;
    idle.write(framed(deep));
    const pre = encode({ id: 2, cmd: "classify", args: { rootfs: null } });
    const nested = new Uint8Array(pre.length - 1 + 500_000).fill(0x91);
    nested.set(pre.subarray(0, pre.length - 1));
    nested[nested.length - 1] = 0xc0;
    idle.write(framed(nested));
    await idle.waitFrames(3);
    expect(idle.frames.slice(1).map((f) => (f.error as { code: string }).code)).toEqual(["E_BAD_REQUEST", "E_BAD_ARGS"]);
    idle.end();
    expect(await a.stop()).toBe(0);
  }, 30_000);

  test("fuzz: 3 x 10,000 random, truncated and oversized frames over many connections", async () => {
    const a = await startAgent();
    const pid = a.proc.pid;
    const c = await client(a.socket);
    // warm up the same paths so the baseline includes JIT'd code and allocator pools
    for (let i = 0; i < 2000; i++) await c.request("address", { name: `w${i}` });
    await Bun.sleep(300);
    const before = rssKiB(pid);
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const bytes = (n: number) => Uint8Array.from({ length: n }, () => rnd(256));
    const str = (n: number) => Array.from({ length: n }, () => "abcXYZ09._-~é$ '\"".charAt(rnd(18))).join("");
    const cmds = ["ping", "version", "classify", "render", "plan", "install", "inject", "address", "status", "watch", "report", "nope", ""];
    const junkValue = (d = 0): unknown => {
      switch (rnd(d > 2 ? 5 : 8)) {
        case 0: return rnd(1e6) - 5e5;
        case 1: return str(rnd(40));
        case 2: return null;
        case 3: return rnd(2) === 0;
        case 4: return bytes(rnd(20));
        case 5: return Array.from({ length: rnd(5) }, () => junkValue(d + 1));
        case 6: return Object.fromEntries(Array.from({ length: rnd(5) }, () => [str(rnd(8)), junkValue(d + 1)]));
        default: return 1.5;
      }
    };
    const fuzzFrame = (): { data: Uint8Array; kills: boolean; replies?: boolean } => {
      switch (rnd(10)) {
        case 0: return { data: framed(bytes(1 + rnd(200))), kills: false }; // random payload
        case 1: return { data: header(1024 * 1024 + 1 + rnd(1 << 30)), kills: true, replies: true }; // oversized
        case 2: return { data: framed(encode(junkValue())), kills: false }; // valid msgpack, not a request
        case 3: { const f = encodeFrame({ id: rnd(1000), cmd: cmds[rnd(cmds.length)], args: junkValue() }); return { data: f, kills: false }; }
        case 4: { const f = framed(bytes(50)); return { data: f.subarray(0, 1 + rnd(f.length - 1)), kills: true }; } // truncated, then close
        default: {
          const args = Object.fromEntries(["name", "rootfs", "config", "configPath", "prefix", "mode", "phase", "force", "env"].filter(() => rnd(2)).map((k) => [k, junkValue()]));
          return { data: encodeFrame({ id: rnd(1000), cmd: cmds[rnd(cmds.length)], args }), kills: false };
        }
      }
    };
    let sent = 0;
    let replies = 0;
    let expected = 0;
    let conns = 0;
    const rounds: number[] = [];
    const t0 = performance.now();
    const ROUNDS = Number(process.env.M8A_FUZZ_ROUNDS ?? 3);
    for (let round = 1; round <= ROUNDS; round++) {
    // three rounds of 10,000: the first shows the daemon survives, the next two that nothing leaks
    while (sent < 10_000 * round) {
      // 32 connections at a time, each with a burst of frames; some end with a frame that kills them
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          const r = await Raw.connect(a.socket);
          conns++;
          const n = 1 + rnd(60);
          let want = 0;
          for (let i = 0; i < n && sent < 10_000 * round; i++) {
            const f = fuzzFrame();
            r.write(f.data);
            sent++;
            // every complete frame gets exactly one reply; an oversized header gets one and a close
            if (!f.kills || f.replies) want++;
            if (f.kills) break;
          }
          await r.waitFrames(want, 5000);
          expected += want;
          replies += r.frames.filter((x) => !("event" in x)).length;
          r.end();
          await Promise.race([r.closed, Bun.sleep(2000)]);
        }),
      );
    }
    await Bun.sleep(700);
    rounds.push(rssKiB(pid));
    }
    const secs = (performance.now() - t0) / 1000;
    expect(a.proc.exitCode).toBeNull();
    expect(await c.request("ping")).toMatchObject({ pong: true });
    const fresh = await client(a.socket);
    expect(await fresh.request("version")).toMatchObject({ protocol: 1 });
    await Bun.sleep(1500);
    const after = rssKiB(pid);
    console.log(`fuzz: ${sent} frames over ${conns} connections in ${secs.toFixed(1)} s, ${replies} replies; RSS KiB: before ${before}, after each round ${rounds.join(", ")}, at the end ${after}`);
    expect(replies).toBe(expected);
    expect(after).toBeLessThan(before + 24 * 1024);
    // bounded, not growing with traffic (10 rounds measured: it rises ~15 MB, then the GC brings it back)
    for (const r of rounds) expect(r).toBeLessThan(before + 32 * 1024);
    expect(await a.stop()).toBe(0);
    expect((await a.stderr()).includes("internal error")).toBe(false);
  }, 120_000);
});
