// tcp / http / exec probes against real listeners and real processes on the host; name resolution.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { parseProbeUrl } from "../../probes/url.ts";
import { runProbe, runCommand, goDuration, OUTPUT_LIMIT } from "../../probes/run.ts";
import { resolveHost, containerAddress, yggPrefix, lookupHostsFile } from "../../probes/resolve.ts";
import { freePort, groupExists, isRoot, processExists, tempDir, ROOT } from "./helpers.ts";
import { BIN, ensureBuilt } from "../build.ts";

beforeAll(() => {
  if (isRoot) ensureBuilt(); // one test runs the binary
}, 120_000);

const probe = (url: string, timeoutMs = 2000, env: Record<string, string | undefined> = {}) => runProbe(parseProbeUrl(url), { timeoutMs, env });

describe("tcp and http probes against real listeners", () => {
  let tcp: Bun.TCPSocketListener<undefined>;
  let tcp6: Bun.TCPSocketListener<undefined>;
  let silent: Bun.TCPSocketListener<undefined>;
  let http: ReturnType<typeof Bun.serve>;
  const seen: string[] = [];
  beforeAll(() => {
    tcp = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    tcp6 = Bun.listen({ hostname: "::1", port: 0, socket: { data() {} } });
    // accepts, reads the request, never answers: an HTTP probe must time out
    silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    http = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req) {
        const u = new URL(req.url);
        seen.push(`${req.headers.get("host")} ${u.pathname}${u.search}`);
        const code = Number(u.pathname.slice(1)) || 200;
        return new Response("body", { status: code, headers: code === 302 ? { location: "/500" } : {} });
      },
    });
  });
  afterAll(() => {
    tcp.stop(true);
    tcp6.stop(true);
    silent.stop(true);
    http.stop(true);
  });

  test("tcp passes on an open port (v4 and v6) and fails fast on a closed one", async () => {
    const ok = await probe(`tcp://127.0.0.1:${tcp.port}`);
    expect(ok).toMatchObject({ ok: true, exitCode: 0, timedOut: false, address: "127.0.0.1" });
    expect((await probe(`tcp://[::1]:${tcp6.port}`)).ok).toBe(true);
    expect((await probe(`tcp://localhost:${tcp.port}`)).ok).toBe(true);
    const closed = await probe(`tcp://127.0.0.1:${freePort()}`);
    expect(closed).toMatchObject({ ok: false, exitCode: 1, timedOut: false });
    expect(closed.output).toContain("ECONNREFUSED");
    expect(closed.durationMs).toBeLessThan(1000);
  });

  test("http: 200 and 302 pass (redirect not followed), 404 and 500 fail; Host header and query are sent", async () => {
    const r200 = await probe(`http://127.0.0.1:${http.port}/200?a=b`);
    expect(r200).toMatchObject({ ok: true, exitCode: 0 });
    expect(r200.output).toBe("HTTP 200 OK");
    const r302 = await probe(`http://localhost:${http.port}/302`);
    expect(r302.ok).toBe(true);
    expect(r302.output).toStartWith("HTTP 302");
    for (const code of [404, 500]) {
      const r = await probe(`http://127.0.0.1:${http.port}/${code}`);
      expect(r).toMatchObject({ ok: false, exitCode: 1 });
      expect(r.output).toStartWith(`HTTP ${code}`);
    }
    expect(seen).toContain(`127.0.0.1:${http.port} /200?a=b`);
    expect(seen).toContain(`localhost:${http.port} /302`);
    expect(seen.filter((s) => s.endsWith("/500"))).toHaveLength(1); // the 302 was not followed
  });

  test("http to a server that never answers times out at the probe timeout", async () => {
    const t0 = performance.now();
    const r = await probe(`http://127.0.0.1:${silent.port}/`, 300);
    const ms = performance.now() - t0;
    expect(r).toMatchObject({ ok: false, exitCode: -1, timedOut: true });
    expect(ms).toBeGreaterThanOrEqual(280);
    expect(ms).toBeLessThan(1500);
  });

  test("a non-HTTP answer fails with the line it got", async () => {
    const junk = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: { data(s) { s.write("SSH-2.0-OpenSSH\r\n"); s.end(); } },
    });
    try {
      const r = await probe(`http://127.0.0.1:${junk.port}/`);
      expect(r.ok).toBe(false);
      expect(r.output).toContain("SSH-2.0");
    } finally {
      junk.stop(true);
    }
  });
});

describe("exec probes", () => {
  test("exit 0 passes, other codes fail with the code; stdout and stderr are captured", async () => {
    const ok = await probe("exec:echo out; echo err >&2");
    expect(ok).toMatchObject({ ok: true, exitCode: 0 });
    expect(ok.output).toContain("out\n");
    expect(ok.output).toContain("err\n");
    const bad = await probe("exec:exit 7");
    expect(bad).toMatchObject({ ok: false, exitCode: 7, timedOut: false });
  });

  test("a command that does not exist fails (127 from the shell)", async () => {
    const r = await probe("exec:/nonexistent/m8p-cmd");
    expect(r.ok).toBe(false);
    expect(r.exitCode).toBe(127);
  });

  test("direct exec without a shell reports a spawn error", async () => {
    const r = await runCommand(["/nonexistent/m8p-cmd"], { timeoutMs: 1000 });
    expect(r.exitCode).toBe(-1);
    expect(r.spawnError).toContain("/nonexistent/m8p-cmd");
  });

  test.skipIf(!isRoot)("without /bin/sh an exec: probe runs its words, and one that needs a shell fails saying so", async () => {
    // the compiled binary in a mount namespace whose /usr/bin (and so /bin/sh) is an empty tmpfs
    const bin = BIN;
    const noShell = async (cmd: string) => {
      const p = Bun.spawn(["unshare", "-m", "--propagation", "private", "/bin/sh", "-c", 'mount -t tmpfs m8p-nosh /usr/bin && exec "$0" netctl probe "$1" --json', bin, cmd], { stdout: "pipe", stderr: "pipe" });
      const [out, err] = [await new Response(p.stdout).text(), await new Response(p.stderr).text()];
      return { code: await p.exited, out, err };
    };
    const words = await noShell(`exec:'${bin}' --version`);
    expect(words.code, words.err).toBe(0);
    expect(JSON.parse(words.out)).toMatchObject({ ok: true, exitCode: 0 });
    // before: the words were ["man8s", "--version", "|", "grep", "nomatch"] and the probe passed
    const piped = await noShell(`exec:${bin} --version | grep nomatch`);
    expect(piped.code, piped.err).toBe(1);
    expect(JSON.parse(piped.out)).toMatchObject({ ok: false, exitCode: -1, output: "exec: shell operator '|' needs a shell, and the image has no /bin/sh" });
    const seq = await noShell(`exec:${bin} --version; false`);
    expect(JSON.parse(seq.out).output).toContain("shell operator ';' needs a shell");
  });

  test("output is capped at 4096 bytes with '...' appended", async () => {
    const r = await runCommand(["sh", "-c", "head -c 10000 /dev/zero | tr '\\0' x; echo tail >&2"], { timeoutMs: 5000 });
    expect(r.exitCode).toBe(0);
    expect(r.output.length).toBe(OUTPUT_LIMIT + 3);
    expect(r.output).toEndWith("x...");
  });

  test("a hung probe is killed at its timeout together with its whole process group", async () => {
    const dir = tempDir("hung");
    try {
      const pidFile = `${dir.path}/pids`;
      const t0 = performance.now();
      // the shell starts two background sleepers, records all pids, then waits forever
      const r = await runCommand(["sh", "-c", `sleep 60 & a=$!; sleep 60 & b=$!; echo "$$ $a $b" > ${pidFile}; echo started; wait`], { timeoutMs: 400 });
      const ms = performance.now() - t0;
      expect(r).toMatchObject({ exitCode: -1, timedOut: true });
      expect(r.output).toBe("started\n");
      expect(ms).toBeGreaterThanOrEqual(390);
      expect(ms).toBeLessThan(2000);
      const pids = readFileSync(pidFile, "utf8").trim().split(" ").map(Number);
      expect(pids[0]).toBe(r.pid); // the group leader is the probe itself (setsid)
      await Bun.sleep(50);
      expect(groupExists(r.pid)).toBe(false);
      for (const p of pids) expect(processExists(p)).toBe(false);
    } finally {
      dir.remove();
    }
  });

  test("an abort signal kills a running probe at once", async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const t0 = performance.now();
    const r = await runProbe(parseProbeUrl("exec:sleep 30"), { timeoutMs: 10_000, signal: ac.signal });
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(r.ok).toBe(false);
    expect(r.exitCode).toBe(-1);
  });

  test("exec: gets the given environment and working directory", async () => {
    const dir = tempDir("env");
    try {
      const r = await runProbe(parseProbeUrl('exec:test "$M8P_X" = yes && pwd'), { timeoutMs: 2000, spawnEnv: { M8P_X: "yes", PATH: process.env.PATH }, cwd: dir.path });
      expect(r.ok).toBe(true);
      expect(r.output.trim()).toBe(dir.path);
    } finally {
      dir.remove();
    }
  });

  test("goDuration prints like Go's time.Duration", () => {
    expect(goDuration(30_000)).toBe("30s");
    expect(goDuration(1500)).toBe("1.5s");
    expect(goDuration(250)).toBe("250ms");
    expect(goDuration(90_000)).toBe("1m30s");
    expect(goDuration(3_600_000)).toBe("1h0m0s");
  });
});

describe("host resolution", () => {
  // docs/notes.md §10 vectors
  const env = { MAN8S_YGGDRASIL_PREFIX: "300:2e98:a4b0:1789::/64" };
  test("container names map to mbctl's yggdrasil address in our /64", async () => {
    expect(await containerAddress("TestBWContainer3", env)).toBe("300:2e98:a4b0:1789:1d44:bc13:a177:c4d");
    expect(await containerAddress("容器1", env)).toBe("300:2e98:a4b0:1789:43f:df2c:1e17:d67f");
    // the prefix can come from our own address instead
    const own = { MAN8S_YGGDRASIL_ADDRESS: "300:0:0:1:aaaa:bbbb:cccc:dddd" };
    expect(await yggPrefix(own)).toBe("300:0:0:1::/64");
    expect(await containerAddress("Man8Registry", own)).toBe("300::1:506:6d46:6c9:5800");
    expect(await containerAddress("x", {})).toBeNull();
  });

  test("resolution order: literal, localhost, hosts file, container name, DNS", async () => {
    const dir = tempDir("hosts");
    try {
      await Bun.write(`${dir.path}/hosts`, "# comment\n10.1.2.3 db db.local\nfd00::5\tweb # trailing\n");
      expect(await resolveHost("10.0.0.9", env)).toEqual({ address: "10.0.0.9", family: 4, via: "address" });
      expect(await resolveHost("fe80::1%eth0", env)).toEqual({ address: "fe80::1", family: 6, via: "address" });
      expect(await resolveHost("localhost", env)).toMatchObject({ address: "127.0.0.1", via: "localhost" });
      expect(await resolveHost("db", env, { hostsFile: `${dir.path}/hosts` })).toMatchObject({ address: "10.1.2.3", via: "hosts" });
      expect(await resolveHost("web", env, { hostsFile: `${dir.path}/hosts` })).toMatchObject({ address: "fd00::5", family: 6, via: "hosts" });
      expect(lookupHostsFile("nope", `${dir.path}/hosts`)).toBeNull();
      expect(await resolveHost("TestBWContainer3", env, { hostsFile: `${dir.path}/hosts` })).toEqual({
        address: "300:2e98:a4b0:1789:1d44:bc13:a177:c4d",
        family: 6,
        via: "container",
      });
      // dotted names that DNS does not know fall back to the container hash when a prefix is known
      expect(await resolveHost("m8p-no-such.invalid", env, { hostsFile: `${dir.path}/hosts` })).toMatchObject({ via: "container" });
      await expect(resolveHost("m8p-no-such.invalid", {}, { hostsFile: `${dir.path}/hosts` })).rejects.toThrow(/cannot resolve 'm8p-no-such.invalid'/);
    } finally {
      dir.remove();
    }
  });

  test("a probe that cannot resolve its host fails with the reason", async () => {
    const r = await probe("tcp://m8p-no-such.invalid:80", 3000, {});
    expect(r.ok).toBe(false);
    expect(r.output).toContain("cannot resolve");
  });

  test("the CLI runs one probe: exit status, --json, usage errors", async () => {
    const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const cli = (...args: string[]) => Bun.spawn([process.execPath, `${ROOT}/test/probes/fixtures/probe-main.ts`, ...args], { stdout: "pipe", stderr: "pipe" });
      const a = cli(`tcp://127.0.0.1:${l.port}`, "--json");
      const out = JSON.parse(await new Response(a.stdout).text());
      expect(await a.exited).toBe(0);
      expect(out).toMatchObject({ url: `tcp://127.0.0.1:${l.port}`, ok: true, exitCode: 0 });
      const b = cli(`tcp://127.0.0.1:${freePort()}`);
      expect(await new Response(b.stdout).text()).toStartWith("FAIL tcp://");
      expect(await b.exited).toBe(1);
      const c = cli("exec:sleep 5", "--timeout", "300ms");
      expect(await new Response(c.stdout).text()).toContain("timed out");
      expect(await c.exited).toBe(1);
      const d = cli("bogus://x");
      expect(await new Response(d.stderr).text()).toContain("bad probe URL 'bogus://x'");
      expect(await d.exited).toBe(64);
      const e = cli("--help");
      expect(await new Response(e.stdout).text()).toContain("usage: man8s netctl probe URL");
      expect(await e.exited).toBe(0);
      // the READY=1 test payload is a test fixture (fixtures/notify-ready.ts), not a hidden mode of the product
      const f = cli("--notify-ready", `tcp://127.0.0.1:${l.port}`);
      expect(await new Response(f.stderr).text()).toContain("unknown option '--notify-ready'");
      expect(await f.exited).toBe(64);
    } finally {
      l.stop(true);
    }
  });
});
