// The agent as systemd starts it: an inherited listening socket (LISTEN_FDS, via systemd-socket-activate,
// the real activator) and journal priorities when stderr is the stream JOURNAL_STREAM names.
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, openSync, readFileSync, rmSync, statSync, closeSync, fstatSync } from "node:fs";
import { scratchDir } from "../scratch.ts";
import { AgentClient } from "../../hostagent/client.ts";
import { BIN, BUNDLE, ensureBuilt } from "../hostagent/helpers.ts";

setDefaultTimeout(30_000);
const dirs: string[] = [];
const tmp = () => {
  const d = scratchDir("m8s-agent");
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function ping(socket: string, timeoutMs = 10_000): Promise<unknown> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const c = await AgentClient.connect(socket);
      try {
        return await c.request("ping", {});
      } finally {
        c.close();
      }
    } catch (e) {
      if (Date.now() > end) throw e;
      await Bun.sleep(25);
    }
  }
}

describe("socket activation", () => {
  test("the agent serves the socket systemd-socket-activate made, and leaves its path in place when it stops", async () => {
    ensureBuilt();
    const d = tmp();
    const socket = `${d}/run/agent.sock`;
    Bun.spawnSync(["mkdir", "-p", `${d}/run`]);
    const err = `${d}/stderr`;
    const fd = openSync(err, "w");
    const p = Bun.spawn(["systemd-socket-activate", "-l", socket, BIN, "hostagent", "serve", "--socket", socket, "--root", `${d}/root`, "--bundle", BUNDLE], {
      stdio: ["ignore", "ignore", fd],
    });
    closeSync(fd);
    try {
      expect(await ping(socket)).toMatchObject({ pong: true });
      const log = readFileSync(err, "utf8");
      expect(log).toContain("(inherited fd 3)");
      // the agent never recreated the path: the inode is the activator's
      const ino = statSync(socket).ino;
      expect(await ping(socket)).toMatchObject({ pong: true });
      expect(statSync(socket).ino).toBe(ino);
    } finally {
      p.kill("SIGTERM");
      expect(await p.exited).toBe(0);
    }
    // the socket unit owns the path: it stays for the next activation
    expect(existsSync(socket)).toBe(true);
    expect(readFileSync(err, "utf8")).not.toMatch(/^<\d>/m);
  });

  test("LISTEN_PID of another process: the variables are ignored and the agent binds the path itself", async () => {
    ensureBuilt();
    const d = tmp();
    const socket = `${d}/agent.sock`;
    const p = Bun.spawn([BIN, "hostagent", "serve", "--socket", socket, "--root", `${d}/root`, "--bundle", BUNDLE], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, LISTEN_PID: "1", LISTEN_FDS: "1" },
    });
    try {
      expect(await ping(socket)).toMatchObject({ pong: true });
      expect((statSync(socket).mode & 0o777).toString(8)).toBe("600");
    } finally {
      p.kill("SIGTERM");
      await p.exited;
    }
    expect(await new Response(p.stderr).text()).not.toContain("inherited");
    expect(existsSync(socket)).toBe(false);
  });

  test("LISTEN_FDS=2 for this process: refused with a usage error, nothing served", async () => {
    ensureBuilt();
    const d = tmp();
    const p = Bun.spawn(["systemd-socket-activate", "-l", `${d}/a.sock`, "-l", `${d}/b.sock`, BIN, "hostagent", "serve", "--socket", `${d}/a.sock`, "--root", `${d}/root`], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    // the activator execs the service on the first connection
    await ping(`${d}/a.sock`, 2000).catch(() => {});
    const killer = setTimeout(() => p.kill("SIGKILL"), 10_000);
    const r = { exitCode: await p.exited, stderr: await new Response(p.stderr).text() };
    clearTimeout(killer);
    expect(r.exitCode).toBe(64);
    expect(r.stderr.toString()).toContain("2 sockets passed (LISTEN_FDS)");
  });
});

describe("journal priorities", () => {
  async function agentLog(journalStream: (errFile: string) => string | undefined): Promise<string> {
    ensureBuilt();
    const d = tmp();
    const err = `${d}/stderr`;
    const fd = openSync(err, "w");
    const st = fstatSync(fd);
    const js = journalStream(err) ?? "";
    const socket = `${d}/agent.sock`;
    const p = Bun.spawn([BIN, "hostagent", "serve", "--socket", socket, "--root", `${d}/root`, "--bundle", BUNDLE], {
      stdio: ["ignore", "ignore", fd],
      env: { ...process.env, JOURNAL_STREAM: js.replace("DEV", String(st.dev)).replace("INO", String(st.ino)) },
    });
    closeSync(fd);
    await ping(socket);
    p.kill("SIGTERM");
    await p.exited;
    return readFileSync(err, "utf8");
  }

  test("stderr is the journal stream: every line carries an sd-daemon <N> prefix", async () => {
    const log = await agentLog(() => "DEV:INO");
    expect(log).toMatch(/^<6>man8s hostagent: listening on /m);
    expect(log).toMatch(/^<6>man8s hostagent: SIGTERM: shutting down$/m);
    for (const l of log.trimEnd().split("\n")) expect(l).toMatch(/^<[0-7]>/);
  });

  test("a usage error on the journal stream: the usage format, each line at priority err", async () => {
    ensureBuilt();
    const err = `${tmp()}/stderr`;
    const fd = openSync(err, "w");
    const st = fstatSync(fd);
    const r = Bun.spawnSync([BIN, "hostagent", "serve", "--no-such-flag"], { stdio: ["ignore", "ignore", fd], env: { ...process.env, JOURNAL_STREAM: `${st.dev}:${st.ino}` } });
    closeSync(fd);
    expect(r.exitCode).toBe(64);
    expect(readFileSync(err, "utf8")).toBe("<3>man8s hostagent serve: unknown option '--no-such-flag'\n<3>run 'man8s hostagent serve --help' for usage\n");
  });

  test("JOURNAL_STREAM naming another file (inherited by a child with stderr redirected): no prefixes", async () => {
    const log = await agentLog(() => "DEV:1");
    expect(log).toMatch(/^man8s hostagent: listening on /m);
    expect(log).not.toMatch(/^<\d>/m);
  });
});
