// The image's own settings as Docker applies them, through the real agent on its socket, with a real umoci
// image (user-app: USER app, VOLUME /data with content owned by uid 1000, /run content reached through
// /var/run -> /run, EXPOSE 8080): User, readiness defaults, Volumes (seeded, never overwritten), --volume,
// and the /run + /tmp protected copies. Each install works on a copy of the fixture's rootfs.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import type { Classification } from "../../hostagent/classify.ts";
import type { AgentClient } from "../../hostagent/client.ts";
import { HOST_SECRET, fixtures, releaseFixtures, type Fixture } from "./fixtures.ts";
import { type Agent, client, errorCode, startAgent, stopAgentAndClient, tmp } from "./helpers.ts";

let fx: Map<string, Fixture>;
let agent: Agent;
let c: AgentClient;

beforeAll(async () => {
  fx = await fixtures();
  mkdirSync(HOST_SECRET, { recursive: true });
  writeFileSync(`${HOST_SECRET}/secret`, "host-only");
  agent = await startAgent();
  c = await client(agent.socket);
}, 60_000);
afterAll(async () => {
  rmSync(HOST_SECRET, { recursive: true, force: true });
  await stopAgentAndClient(c, agent);
  releaseFixtures();
});

function envOf(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const l of text.split("\n")) if (l && !l.startsWith("#")) m.set(l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1));
  return m;
}

/** A private copy of a fixture rootfs (cp -a keeps owners), so installs do not change the shared one. */
function copyRootfs(tag: string): string {
  const d = tmp("rootfs");
  const r = Bun.spawnSync(["cp", "-a", `${fx.get(tag)!.rootfs}/.`, d]);
  expect(r.exitCode).toBe(0);
  return d;
}

const render = (name: string, tag: string, extra: Record<string, unknown> = {}) =>
  c.request<{ nspawn: string; env: string; ready: { value: string; why: string } }>("render", { name, rootfs: fx.get(tag)!.rootfs, configPath: fx.get(tag)!.imageConfig, ...extra });

describe("User", () => {
  test("classify reports the image's User with the rootfs's passwd as evidence; render writes MAN8S_APPLICATION_USER", async () => {
    const f = fx.get("user-app")!;
    const cls = await c.request<Classification>("classify", { rootfs: f.rootfs, configPath: f.imageConfig });
    expect(cls.user).toBe("app");
    const ev = cls.evidence.find((e) => e.source === "config.User")!;
    expect(ev.decision).toContain("User 'app'");
    expect(ev.detail).toBe("user app is 1000 in /etc/passwd");
    expect(cls.warnings).toEqual([]);
    const r = await render("u1", "user-app");
    expect(envOf(r.env).get("MAN8S_APPLICATION_USER")).toBe("app");
    // every form Docker accepts goes through verbatim; names the rootfs does not know are warned about
    const cfg = JSON.parse(readFileSync(f.imageConfig, "utf8"));
    for (const u of ["1000", "1000:2000", "app:media", "ghost:app", "app:nogroup"]) {
      cfg.config.User = u;
      const k = await c.request<Classification>("classify", { rootfs: f.rootfs, config: cfg });
      expect(k.user).toBe(u);
      const e = await c.request<{ env: string }>("render", { name: "u2", rootfs: f.rootfs, config: cfg });
      expect(envOf(e.env).get("MAN8S_APPLICATION_USER")).toBe(u);
      if (u.startsWith("ghost") || u.endsWith("nogroup")) expect(k.warnings.join(" ")).toContain("is not in the rootfs's /etc/");
      else expect(k.warnings).toEqual([]);
    }
    // no User: no variable, evidence says root
    const b = await render("u3", "busybox-app");
    expect(envOf(b.env).has("MAN8S_APPLICATION_USER")).toBe(false);
    const kb = await c.request<Classification>("classify", { rootfs: fx.get("busybox-app")!.rootfs, configPath: fx.get("busybox-app")!.imageConfig });
    expect(kb.evidence.find((e) => e.source === "config.User")?.decision).toBe("the app runs as root (no User)");
  });
});

describe("readiness", () => {
  test("NotifyReady=yes always; MAN8S_READY healthy / first TCP port / start / none by default; --ready overrides", async () => {
    const cases: [string, Record<string, unknown>, string][] = [
      ["user-app", {}, "tcp://127.0.0.1:8080"],
      ["busybox-app", {}, "start"],
      ["systemd", {}, "none"],
      ["s6-overlay-v3", {}, "start"],
      ["user-app", { ready: "healthy" }, "healthy"],
      ["user-app", { ready: "none" }, "none"],
      ["user-app", { ready: "http://127.0.0.1:8080/health" }, "http://127.0.0.1:8080/health"],
    ];
    for (const [tag, extra, want] of cases) {
      const r = await render("rdy", tag, extra);
      expect([tag, envOf(r.env).get("MAN8S_READY")]).toEqual([tag, want]);
      expect(r.nspawn.split("\n")).toContain("NotifyReady=yes");
    }
    const f = fx.get("user-app")!;
    const cfg = JSON.parse(readFileSync(f.imageConfig, "utf8"));
    cfg.config.Healthcheck = { Test: ["CMD", "true"] };
    expect(envOf((await c.request<{ env: string }>("render", { name: "h", rootfs: f.rootfs, config: cfg })).env).get("MAN8S_READY")).toBe("healthy");
    cfg.config.Healthcheck = { Test: ["NONE"] };
    expect(envOf((await c.request<{ env: string }>("render", { name: "h", rootfs: f.rootfs, config: cfg })).env).get("MAN8S_READY")).toBe("tcp://127.0.0.1:8080");
    cfg.config.ExposedPorts = { "53/udp": {}, "9000": {} };
    expect(envOf((await c.request<{ env: string }>("render", { name: "h", rootfs: f.rootfs, config: cfg })).env).get("MAN8S_READY")).toBe("tcp://127.0.0.1:9000");
    // tcp://db (no port): before, only E_BAD_CONFIG from the rendered env; now the probes' parser refuses the argument
    for (const bad of ["soon", "tcp://", "exec:", "a\nb", "tcp://db", "icmp://db:80"]) expect(await errorCode(render("rdy", "user-app", { ready: bad }))).toBe("E_BAD_ARGS");
  });
});

describe("volumes", () => {
  test("render: each image Volume is a Bind= with :idmap to the storage dir; --volume chooses config, skip or a host path", async () => {
    const root = agent.root;
    const r = await render("vol", "user-app");
    const binds = r.nspawn.split("\n").filter((l) => l.startsWith("Bind="));
    expect(binds).toEqual([
      `Bind=${root}/var/lib/man8machine_storage/vol/data:/data:idmap`,
      `Bind=${root}/var/lib/man8machine_storage/vol/escape:/escape:idmap`,
    ]);
    const o = await render("vol", "user-app", { volumes: { "/data": "config", "/escape": "skip", "/etc/app.conf": "data", "/srv/x": "/srv/host-x" } });
    expect(o.nspawn.split("\n").filter((l) => l.startsWith("Bind="))).toEqual([
      `Bind=${root}/var/lib/man8machine_configs/vol/data:/data:idmap`,
      `Bind=${root}/var/lib/man8machine_storage/vol/etc/app.conf:/etc/app.conf:idmap`,
      "Bind=/srv/host-x:/srv/x:idmap",
    ]);
    // without private users there is no idmap on any bind
    const n = await render("vol", "user-app", { privateUsers: false });
    expect(n.nspawn).toContain(`Bind=${root}/var/lib/man8machine_storage/vol/data:/data\n`);
    for (const v of [{ "relative/x": "data" }, { "/proc/x": "data" }, { "/a:b": "data" }, { "/x": "sometimes" }, { "/x": "rel/host" }, { "/agent": "config" }, { "/current": "config" }, { "/run/man8s-agent": "data" }, { "/": "data" }]) {
      expect([JSON.stringify(v), await errorCode(render("vol", "user-app", { volumes: v }))]).toEqual([JSON.stringify(v), "E_BAD_ARGS"]);
    }
    const cfg = JSON.parse(readFileSync(fx.get("user-app")!.imageConfig, "utf8"));
    cfg.config.Volumes = { "/man8s-init/x": {} };
    const bad = c.request("render", { name: "vol", rootfs: fx.get("user-app")!.rootfs, config: cfg });
    expect(await errorCode(bad)).toBe("E_BAD_CONFIG");
    cfg.config.Volumes = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`/v${i}`, {}]));
    expect(await errorCode(c.request("render", { name: "vol", rootfs: fx.get("user-app")!.rootfs, config: cfg }))).toBe("E_BAD_CONFIG");
  });

  test("install seeds volumes from the image with owners, never follows links out of the rootfs, never overwrites data", async () => {
    const rootfs = copyRootfs("user-app");
    const f = fx.get("user-app")!;
    const args = { name: "seed", rootfs, configPath: f.imageConfig, volumes: { "/etc/app.conf": "data" } };
    const r = await c.request<{ volumes: { path: string; seeded: string; host: string }[] }>("install", args);
    const st = `${agent.root}/var/lib/man8machine_storage/seed`;
    expect(r.volumes.map((v) => [v.path, v.seeded])).toEqual([["/data", "image"], ["/escape", "empty"], ["/etc/app.conf", "image"]]);
    const d = statSync(`${st}/data`);
    expect([d.uid, d.gid, d.mode & 0o7777]).toEqual([1000, 1000, 0o700]);
    const s = statSync(`${st}/data/seed.txt`);
    expect([s.uid, s.gid, s.mode & 0o7777]).toEqual([1000, 1000, 0o600]);
    expect(readFileSync(`${st}/data/seed.txt`, "utf8")).toBe("seeded-from-image\n");
    expect(statSync(`${st}/data/sub`).uid).toBe(1000);
    expect(readlinkSync(`${st}/data/escape`)).toBe("/etc/shadow-of-the-host"); // a link stays a link
    // /escape -> HOST_SECRET in the image resolves inside the rootfs (where it does not exist): empty
    expect(readdirSync(`${st}/escape`)).toEqual([]);
    expect(lstatSync(`${st}/etc/app.conf`).isFile()).toBe(true);
    expect(readFileSync(`${st}/etc/app.conf`, "utf8")).toBe("setting=image\n");
    expect(readdirSync(st).filter((n) => n.startsWith("."))).toEqual([]);

    // the container wrote data; a forced reinstall (even one that changes the volume's choice) keeps it
    writeFileSync(`${st}/data/seed.txt`, "written-by-the-app\n");
    writeFileSync(`${st}/data/new.txt`, "new\n");
    writeFileSync(`${st}/etc/app.conf`, "setting=mine\n");
    const again = await c.request<{ volumes: { path: string; seeded?: string }[] }>("install", { ...args, force: true });
    expect(again.volumes.map((v) => [v.path, v.seeded])).toEqual([["/data", "kept"], ["/escape", "kept"], ["/etc/app.conf", "kept"]]);
    await c.request("install", { ...args, force: true, volumes: { "/data": "skip", "/etc/app.conf": "skip" } });
    expect(readFileSync(`${st}/data/seed.txt`, "utf8")).toBe("written-by-the-app\n");
    expect(readFileSync(`${st}/data/new.txt`, "utf8")).toBe("new\n");
    expect(readFileSync(`${st}/etc/app.conf`, "utf8")).toBe("setting=mine\n");

    // a link the container made inside its volume is never followed by a later install (nested volume)
    const victim = tmp("victim");
    Bun.spawnSync(["ln", "-s", victim, `${st}/data/sub2`]);
    const nested = c.request("install", { ...args, force: true, volumes: { "/data/sub2/x": "data" } });
    expect(await errorCode(nested)).toBe("E_BAD_PATH");
    expect(readdirSync(victim)).toEqual([]);
    // config volumes live in the container's config directory, as mbctl's choice 1
    await c.request("install", { ...args, name: "seedcfg", volumes: { "/data": "config" } });
    expect(readFileSync(`${agent.root}/var/lib/man8machine_configs/seedcfg/data/seed.txt`, "utf8")).toBe("seeded-from-image\n");
  });

  test("install and inject keep the image's /run (through /var/run) and /tmp as the protected copies the init restores", async () => {
    const rootfs = copyRootfs("user-app");
    const f = fx.get("user-app")!;
    const r = await c.request<{ protected: { dir: string; from: string; action: string }[] }>("install", { name: "prot", rootfs, configPath: f.imageConfig });
    expect(r.protected.map((p) => [p.dir, p.from, p.action])).toEqual([["/run.man8sprotected", "/run", "copied"], ["/tmp.man8sprotected", "/tmp", "copied"]]);
    const m = statSync(`${rootfs}/run.man8sprotected/app/marker`);
    expect([m.uid, m.gid, m.mode & 0o7777]).toEqual([1000, 1000, 0o640]);
    expect(readFileSync(`${rootfs}/run.man8sprotected/app/marker`, "utf8")).toBe("image-run-content\n");
    expect(statSync(`${rootfs}/run.man8sprotected/app`).mode & 0o7777).toBe(0o750);
    expect(readlinkSync(`${rootfs}/run.man8sprotected/app/link`)).toBe("marker");
    expect(statSync(`${rootfs}/tmp.man8sprotected`).mode & 0o7777).toBe(0o1777);
    expect(readFileSync(`${rootfs}/tmp.man8sprotected/keep.txt`, "utf8")).toBe("tmp-content\n");
    // the image's own /run stays as it was
    expect(readFileSync(`${rootfs}/run/app/marker`, "utf8")).toBe("image-run-content\n");

    // an image whose /run is a link to a host directory: resolved inside the rootfs, the host's never copied
    const evil = tmp("evil");
    mkdirSync(`${evil}/bin`);
    Bun.spawnSync(["ln", "-s", HOST_SECRET, `${evil}/run`]);
    const i = await c.request<{ protected: { dir: string; action: string }[] }>("inject", { rootfs: evil, mode: "bind" });
    expect(i.protected.map((p) => p.action)).toEqual(["none", "none"]);
    expect(existsSync(`${evil}/run.man8sprotected`)).toBe(false);
    // inject refreshes the copy: a planted link at the protected name is replaced, not followed
    rmSync(`${rootfs}/run.man8sprotected`, { recursive: true });
    Bun.spawnSync(["ln", "-s", HOST_SECRET, `${rootfs}/run.man8sprotected`]);
    await c.request("inject", { rootfs, mode: "bind" });
    expect(lstatSync(`${rootfs}/run.man8sprotected`).isDirectory()).toBe(true);
    expect(readdirSync(HOST_SECRET)).toEqual(["secret"]);
    expect(readdirSync(rootfs).filter((n) => n.includes(".tmp-") || n.includes(".new-") || n.includes(".old-"))).toEqual([]);
  });
});
