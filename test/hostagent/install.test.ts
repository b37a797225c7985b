// render → install → inject, through the daemon, into a temporary root and rootfs; then what the files
// say is checked the way their readers will read them (a real shell for ARGS, JSON for ARGV).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, realpathSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import type { AgentClient } from "../../hostagent/client.ts";
import { sendReport } from "../../common/report-client.ts";
import { fixtures, releaseFixtures, type Fixture } from "./fixtures.ts";
import { type Agent, BUNDLE, client, errorCode, startAgent, tmp, stopAgentAndClient } from "./helpers.ts";

let fx: Map<string, Fixture>;
let agent: Agent;
let c: AgentClient;

beforeAll(async () => {
  fx = await fixtures();
  agent = await startAgent({ extra: ["--ygg-prefix", "300:2e98:a4b0:1789::/64"] });
  c = await client(agent.socket);
}, 60_000);
afterAll(async () => {
  await stopAgentAndClient(c, agent);
  releaseFixtures();
});

/** The init's reading of the env file: KEY=VALUE, literal, comments and blanks skipped. */
function parseEnv(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line.trim() === "" || line.trimStart().startsWith("#")) continue;
    const i = line.indexOf("=");
    expect(i).toBeGreaterThan(0);
    expect(line.slice(0, i)).toMatch(/^[A-Za-z_][A-Za-z0-9_]*$/);
    m.set(line.slice(0, i), line.slice(i + 1));
  }
  return m;
}

const nginxHealth = { Test: ["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"], Interval: 5_000_000_000, Retries: 3 };

function nginxConfig() {
  const img = JSON.parse(readFileSync(fx.get("nginx-like")!.imageConfig, "utf8"));
  img.config.Healthcheck = nginxHealth;
  img.config.Env = [...(img.config.Env ?? []), "PATH=/usr/local/sbin:/usr/bin:/bin", "LANG=C.UTF-8", "QUOTED=a \"b\" $HOME `x`", "TERM=it's \"both\""];
  return img;
}

describe("render", () => {
  test("nginx-like: env file the init reads exactly, nspawn file with mbctl's keys", async () => {
    const f = fx.get("nginx-like")!;
    const r = await c.request<{ nspawn: string; env: string; template: string }>("render", {
      name: "web1",
      rootfs: f.rootfs,
      config: nginxConfig(),
      imageUrl: "docker.io/library/nginx:latest",
      env: { EXTRA: "x=y" },
    });
    const env = parseEnv(r.env);
    const argv = ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"];
    expect(JSON.parse(env.get("MAN8S_APPLICATION_ARGV")!)).toEqual(argv);
    // mbctl's shell-quoted line, split back by a real POSIX shell
    const sh = Bun.spawnSync(["/bin/busybox", "sh", "-c", `eval "set -- $1"; printf '%s\\0' "$@"`, "sh", env.get("MAN8S_APPLICATION_ARGS")!]);
    expect(sh.stdout.toString().split("\0").slice(0, -1)).toEqual(argv);
    expect(env.get("MAN8S_APPLICATION_ARGS")).toBe("/docker-entrypoint.sh nginx -g 'daemon off;'");
    expect(env.get("MAN8S_CONTAINER_NAME")).toBe("web1");
    expect(env.get("MAN8S_YGGDRASIL_ADDRESS")).toBe("300:2e98:a4b0:1789:" + (await c.request<{ suffix: string }>("address", { name: "web1" })).suffix.slice(2));
    expect(env.get("MAN8S_STOP_SIGNAL")).toBe("SIGQUIT");
    expect(env.get("MAN8S_STOP_TIMEOUT")).toBe("10");
    expect(env.has("MAN8S_SIGNAL_GROUP")).toBe(false);
    expect(env.has("MAN8S_EXEC_INIT")).toBe(false);
    expect(JSON.parse(env.get("MAN8S_HEALTHCHECK")!)).toEqual(nginxHealth);
    expect(env.get("MAN8S_REPORT_SOCKET")).toBe("/run/man8s-agent/report.sock");
    expect(env.get("MAN8S_OCI_IMAGE_URL")).toBe("docker.io/library/nginx:latest");
    expect(env.get("NGINX_VERSION")).toBe("1.27.0");
    expect(env.get("QUOTED")).toBe('a "b" $HOME `x`');
    expect(env.get("EXTRA")).toBe("x=y");
    expect(env.has("PATH") || env.has("LANG")).toBe(false); // those go to Environment= as mbctl does
    // ...unless nspawn's parser cannot carry the value (both quote kinds): then the env file has it
    expect(env.get("TERM")).toBe(`it's "both"`);
    expect(r.nspawn).not.toContain("TERM=");
    expect(r.template).toBe("netns-noinit");
    const n = r.nspawn;
    for (const line of [
      "[Exec]", "Boot=no", "ProcessTwo=yes", "KillSignal=SIGRTMIN+3", "Parameters=/man8s-init/init", "PrivateUsers=pick",
      'Environment="PATH=/usr/local/sbin:/usr/bin:/bin"', 'Environment="LANG=C.UTF-8"', "WorkingDirectory=/",
      "[Network]", "VirtualEthernet=yes", "Bridge=srvgrp0", "[Files]", "PrivateUsersOwnership=map",
      `BindReadOnly=${agent.root}/var/lib/man8machine_configs/web1/man8env.env:/man8env.env:idmap`,
      `BindReadOnly=${BUNDLE}:/man8s-init`,
      `BindReadOnly=${agent.root}/var/lib/man8machine_configs/web1/agent:/run/man8s-agent`,
    ]) expect(n.split("\n")).toContain(line);
  });

  test("PID-1 images get ProcessTwo=no, their KillSignal and MAN8S_EXEC_INIT; shell form gets the group flag", async () => {
    const cases: [string, string, string, string][] = [
      ["s6-overlay-v3", "ProcessTwo=no", "KillSignal=SIGTERM", "netns-init"],
      ["systemd", "ProcessTwo=no", "KillSignal=SIGRTMIN+3", "netns-systemd"],
      ["busybox-init", "ProcessTwo=no", "KillSignal=SIGUSR2", "netns-init"],
    ];
    for (const [tag, p2, kill, template] of cases) {
      const f = fx.get(tag)!;
      const r = await c.request<{ nspawn: string; env: string; template: string }>("render", { name: `x-${tag}`, rootfs: f.rootfs, configPath: f.imageConfig, privateNetwork: true, privateUsers: false });
      expect([tag, r.template]).toEqual([tag, template]);
      expect(r.nspawn).toContain(`\n${p2}\n`);
      expect(r.nspawn).toContain(`\n${kill}\n`);
      expect(r.nspawn).toContain("\nPrivate=yes\n");
      expect(r.nspawn).not.toContain("idmap");
      const env = parseEnv(r.env);
      expect(JSON.parse(env.get("MAN8S_EXEC_INIT")!)).toEqual(JSON.parse(env.get("MAN8S_APPLICATION_ARGV")!));
    }
    const sf = fx.get("shell-form")!;
    const r = await c.request<{ env: string }>("render", { name: "sf", rootfs: sf.rootfs, configPath: sf.imageConfig });
    expect(parseEnv(r.env).get("MAN8S_SIGNAL_GROUP")).toBe("1");
  });

  test("values the env file cannot hold are refused, naming the field", async () => {
    const f = fx.get("busybox-app")!;
    const base = { name: "bad", rootfs: f.rootfs };
    const m1 = c.request("render", { ...base, config: { config: { Cmd: ["/bin/sleep", "1"], Env: ["GOOD=1", "EVIL=a\nMAN8S_APPLICATION_ARGV=[\"/bin/sh\"]"] } } });
    expect(await errorCode(m1)).toBe("E_BAD_ENV");
    await m1.catch((e: Error) => expect(e.message).toContain("EVIL"));
    const m2 = c.request("render", { ...base, config: { config: { Cmd: ["/bin/echo", "two\nlines"] } } });
    await m2.catch((e: Error) => expect(e.message).toContain("MAN8S_APPLICATION_ARGS: argument 1"));
    expect(await errorCode(c.request("render", { ...base, config: { config: { Cmd: ["x"] } }, env: { "BAD-KEY": "1" } }))).toBe("E_BAD_ENV");
    expect(await errorCode(c.request("render", { ...base, config: { config: {} } }))).toBe("E_BAD_CONFIG");
    expect(await errorCode(c.request("render", { ...base, config: { config: { Cmd: ["x"], WorkingDir: "relative" } } }))).toBe("E_BAD_CONFIG");
    expect(await errorCode(c.request("render", { ...base, config: { config: { Cmd: ["x"] } }, bridge: "br0; rm -rf /" }))).toBe("E_BAD_ARGS");
    expect(await errorCode(c.request("render", { ...base, config: { config: { Cmd: ["x"] } }, stopTimeout: 500 }))).toBe("E_BAD_ARGS");
  });
});

describe("install", () => {
  test("writes mbctl's layout atomically, refuses to overwrite without force, leaves nothing half-written", async () => {
    const f = fx.get("tini")!;
    const args = { name: "tiny", rootfs: f.rootfs, configPath: f.imageConfig };
    const r = await c.request<Record<string, unknown>>("install", args);
    const cfg = `${agent.root}/var/lib/man8machine_configs/tiny`;
    expect(r.files).toEqual([`${cfg}/man8env.env`, `${cfg}/container.nspawn`]);
    const link = `${agent.root}/etc/systemd/nspawn/tiny.nspawn`;
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readlinkSync(link)).toBe("../../../var/lib/man8machine_configs/tiny/container.nspawn");
    expect(realpathSync(link)).toBe(realpathSync(`${cfg}/container.nspawn`));
    expect(statSync(`${cfg}/man8env.env`).mode & 0o777).toBe(0o644);
    const rendered = await c.request<{ env: string; nspawn: string }>("render", args);
    expect(readFileSync(`${cfg}/man8env.env`, "utf8")).toBe(rendered.env);
    expect(readFileSync(`${cfg}/container.nspawn`, "utf8")).toBe(rendered.nspawn);
    // the report socket exists as soon as the container is installed
    expect(lstatSync(`${cfg}/agent/report.sock`).isSocket()).toBe(true);
    expect(r.reportSocket).toBe(`${cfg}/agent/report.sock`);
    expect(statSync(`${cfg}/agent/report.sock`).mode & 0o777).toBe(0o666);

    const before = readFileSync(`${cfg}/man8env.env`, "utf8");
    expect(await errorCode(c.request("install", { ...args, env: { X: "1" } }))).toBe("E_EXISTS");
    expect(readFileSync(`${cfg}/man8env.env`, "utf8")).toBe(before);
    // a bad value with force: error, and the old files are untouched
    expect(await errorCode(c.request("install", { ...args, force: true, env: { X: "a\nb" } }))).toBe("E_BAD_ENV");
    expect(readFileSync(`${cfg}/man8env.env`, "utf8")).toBe(before);
    const forced = await c.request<{ replaced: boolean }>("install", { ...args, force: true, env: { X: "1" } });
    expect(forced.replaced).toBe(true);
    expect(readFileSync(`${cfg}/man8env.env`, "utf8")).toContain("\nX=1\n");
    expect(readdirSync(cfg).filter((n) => n.includes(".tmp-"))).toEqual([]);
    expect(readdirSync(`${agent.root}/etc/systemd/nspawn`)).toEqual(["tiny.nspawn"]);
    // a bad install of a new name creates nothing at all
    expect(await errorCode(c.request("install", { ...args, name: "never", env: { "1X": "v" } }))).toBe("E_BAD_ENV");
    expect(existsSync(`${agent.root}/var/lib/man8machine_configs/never`)).toBe(false);
    // a hand-written settings file (not our link) is never replaced
    writeFileSync(`${agent.root}/etc/systemd/nspawn/hand.nspawn`, "[Exec]\n");
    expect(await errorCode(c.request("install", { ...args, name: "hand", force: true }))).toBe("E_EXISTS");
    expect(readFileSync(`${agent.root}/etc/systemd/nspawn/hand.nspawn`, "utf8")).toBe("[Exec]\n");
  });

  test("an agent restarted on the same root reopens the report sockets and remembers the last status", async () => {
    const root = tmp("root2");
    const a1 = await startAgent({ root });
    const k = await client(a1.socket);
    const f = fx.get("busybox-app")!;
    await k.request("install", { name: "persist", rootfs: f.rootfs, configPath: f.imageConfig });
    k.close();
    const sock = `${root}/var/lib/man8machine_configs/persist/agent/report.sock`;
    expect(existsSync(sock)).toBe(true);
    expect(await sendReport(sock, { phase: "running", appPid: 12 }, 3000)).toBe(true);
    await a1.stop();
    expect(existsSync(sock)).toBe(false); // removed at shutdown
    const a2 = await startAgent({ root, socket: a1.socket });
    expect(lstatSync(sock).isSocket()).toBe(true);
    const k2 = await client(a2.socket);
    // the last status was kept next to the socket, and its reporter (this process) is still alive
    expect(await k2.request("status", { name: "persist" })).toMatchObject({ container: { name: "persist", installed: true, phase: "running", appPid: 12, hostPid: process.pid, initAlive: true } });
    k2.close();
    await a2.stop();
  });
});

async function sha(p: string): Promise<string> {
  const h = new Bun.CryptoHasher("sha256");
  h.update(await Bun.file(p).arrayBuffer());
  return h.digest("hex");
}

describe("inject", () => {
  test("copy: same files, sizes, hashes, modes and links as the bundle; a planted symlink is replaced, not followed", async () => {
    const rootfs = tmp("rootfs");
    const victim = tmp("victim");
    writeFileSync(`${victim}/keep`, "host file");
    symlinkSync(victim, `${rootfs}/man8s-init`); // a hostile image pointing its /man8s-init at the host
    const r = await c.request<{ mode: string; path: string; verified: boolean; files: { path: string }[] }>("inject", { rootfs, mode: "copy" });
    expect(r).toMatchObject({ mode: "copy", path: `${rootfs}/man8s-init`, verified: true });
    expect(readdirSync(victim)).toEqual(["keep"]);
    expect(lstatSync(`${rootfs}/man8s-init`).isDirectory()).toBe(true);
    const walk = (d: string, rel = ""): string[] => readdirSync(`${d}/${rel}`).flatMap((n) => {
      const p = rel ? `${rel}/${n}` : n;
      return lstatSync(`${d}/${p}`).isDirectory() && !lstatSync(`${d}/${p}`).isSymbolicLink() ? [p, ...walk(d, p)] : [p];
    }).sort();
    const src = walk(BUNDLE);
    expect(walk(`${rootfs}/man8s-init`)).toEqual(src);
    expect(r.files.map((f) => f.path).sort()).toEqual(src);
    for (const p of src) {
      const a = lstatSync(`${BUNDLE}/${p}`);
      const b = lstatSync(`${rootfs}/man8s-init/${p}`);
      expect([p, b.mode & 0o7777, b.size, b.isSymbolicLink()]).toEqual([p, a.mode & 0o7777, a.size, a.isSymbolicLink()]);
      if (a.isSymbolicLink()) expect(readlinkSync(`${rootfs}/man8s-init/${p}`)).toBe(readlinkSync(`${BUNDLE}/${p}`));
      else if (a.isFile()) expect(await sha(`${rootfs}/man8s-init/${p}`)).toBe(await sha(`${BUNDLE}/${p}`));
    }
    expect(statSync(`${rootfs}/man8s-init/init`).mode & 0o111).toBe(0o111);
    expect(readlinkSync(`${rootfs}/man8s-init/00-init.sh`)).toBe("init");
    // injecting again replaces the copy in place and leaves no temporary directories behind
    await c.request("inject", { rootfs, mode: "copy" });
    expect(readdirSync(rootfs)).toEqual(["man8s-init"]);
  }, 60_000);

  test("bind: the BindReadOnly line and a mount point; bad bundles and rootfs are refused", async () => {
    const rootfs = tmp("rootfs");
    const r = await c.request<{ bindLine: string }>("inject", { rootfs, mode: "bind" });
    expect(r.bindLine).toBe(`BindReadOnly=${BUNDLE}:/man8s-init`);
    expect(lstatSync(`${rootfs}/man8s-init`).isDirectory()).toBe(true);
    const empty = tmp("nobundle");
    mkdirSync(`${empty}/lib`);
    expect(await errorCode(c.request("inject", { rootfs, bundle: empty }))).toBe("E_NOT_FOUND");
    expect(await errorCode(c.request("inject", { rootfs: `${rootfs}/../x`, mode: "copy" }))).toBe("E_BAD_PATH");
    const file = `${rootfs}/afile`;
    writeFileSync(file, "");
    expect(await errorCode(c.request("inject", { rootfs: file }))).toBe("E_BAD_PATH");
  });
});
