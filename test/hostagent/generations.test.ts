// install is all or nothing across both files, and keeps the user's edits: real agent processes on their
// socket, killed with SIGKILL at each step of an install (MAN8S_AGENT_FAULT), restarted on the same root;
// a real tmpfs that runs full; hand edits of container.nspawn and man8env.env merged three ways.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, writeFileSync } from "node:fs";
import type { AgentClient } from "../../hostagent/client.ts";
import { fixtures, releaseFixtures, type Fixture } from "./fixtures.ts";
import { type Agent, client, errorCode, startAgent, stopAgentAndClient, tmp } from "./helpers.ts";

let fx: Map<string, Fixture>;
let agent: Agent;
let c: AgentClient;

beforeAll(async () => {
  fx = await fixtures();
  agent = await startAgent();
  c = await client(agent.socket);
}, 60_000);
afterAll(async () => {
  await stopAgentAndClient(c, agent);
  releaseFixtures();
});

const cfgDir = (root: string, name: string) => `${root}/var/lib/man8machine_configs/${name}`;
const base = (name: string) => ({ name, rootfs: fx.get("busybox-app")!.rootfs, configPath: fx.get("busybox-app")!.imageConfig, privateNetwork: true });

/** Every name under dir, recursively (links not followed). */
function tree(dir: string, rel = ""): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(`${dir}/${rel}`).flatMap((n) => {
    const p = rel ? `${rel}/${n}` : n;
    return lstatSync(`${dir}/${p}`).isDirectory() ? [`${p}/`, ...tree(dir, p)] : [p];
  }).sort();
}

describe("three-way merge of user edits", () => {
  test("install --force keeps added and changed lines and keys, applies the new rendering elsewhere, reports conflicts", async () => {
    const name = "merge1";
    const dir = cfgDir(agent.root, name);
    await c.request("install", { ...base(name), env: { A: "1", B: "2" }, stopTimeout: 10 });
    // the last rendering is kept beside the files, in the current generation
    expect(readFileSync(`${dir}/current/container.nspawn.rendered`, "utf8")).toBe(readFileSync(`${dir}/container.nspawn`, "utf8"));
    // the user edits both files (in place, through the links, as an editor does)
    const nsp = readFileSync(`${dir}/container.nspawn`, "utf8")
      .replace("[Files]\n", "[Files]\nBind=/srv/hand-added:/srv/data:idmap\n")
      .replace("KillSignal=SIGRTMIN+3", "KillSignal=SIGRTMIN+3\nLimitNOFILE=4096");
    writeFileSync(`${dir}/container.nspawn`, nsp);
    const env = readFileSync(`${dir}/man8env.env`, "utf8").replace("\nA=1\n", "\nA=user\n").replace("\nB=2\n", "\nB=user\n") + "# my note\nMINE=kept\n";
    writeFileSync(`${dir}/man8env.env`, env);
    // re-render with other values: A unchanged by the rendering (user wins quietly), B changed by both
    // (conflict, user wins), the stop timeout changed only by the rendering (applied)
    const r = await c.request<{ conflicts: { file: string; entry: string; base: string; rendered: string; yours: string }[]; kept: { entry: string }[] }>(
      "install", { ...base(name), env: { A: "1", B: "3" }, stopTimeout: 20, force: true },
    );
    const nspNow = readFileSync(`${dir}/container.nspawn`, "utf8");
    const envNow = readFileSync(`${dir}/man8env.env`, "utf8").split("\n");
    expect(nspNow.slice(nspNow.indexOf("[Files]")).split("\n")).toContain("Bind=/srv/hand-added:/srv/data:idmap");
    expect(nspNow).toContain("\nLimitNOFILE=4096\n");
    expect(envNow).toContain("A=user");
    expect(envNow).toContain("B=user");
    expect(envNow).toContain("MINE=kept");
    expect(envNow).toContain("# my note");
    expect(envNow).toContain("MAN8S_STOP_TIMEOUT=20");
    expect(r.conflicts).toEqual([{ file: `${dir}/man8env.env`, entry: "B", base: "B=2", rendered: "B=3", yours: "B=user" }]);
    expect(r.kept.map((k) => k.entry).sort()).toEqual(["# my note", "A", "MINE", "[Exec] LimitNOFILE", "[Files] Bind /srv/data"].sort());
    // the new base is the new rendering, not the merge
    expect(readFileSync(`${dir}/current/man8env.env.rendered`, "utf8")).toContain("\nB=3\n");
    // a user who deletes a rendered line keeps it deleted
    writeFileSync(`${dir}/container.nspawn`, nspNow.replace("Timezone=copy\n", ""));
    await c.request("install", { ...base(name), env: { A: "1", B: "3" }, stopTimeout: 20, force: true });
    expect(readFileSync(`${dir}/container.nspawn`, "utf8")).not.toContain("Timezone=");
    // the CLI prints the conflict
    const cli = Bun.spawnSync([`${import.meta.dir}/../../dist/man8s`, "agent", "--socket", agent.socket, "install", name, "--rootfs", base(name).rootfs, "--config", base(name).configPath, "--private-network", "--env", "A=1", "--env", "B=4", "--stop-timeout", "20", "--force"]);
    expect(cli.stdout.toString()).toContain(`conflict (your value kept): ${dir}/man8env.env: B: yours "B=user", new rendering "B=4"`);
  });

  test("an editor that replaced the link with a file (sed -i) and an install by an older agent are adopted, then merged", async () => {
    const name = "merge2";
    const dir = cfgDir(agent.root, name);
    await c.request("install", { ...base(name), env: { A: "1" } });
    const text = readFileSync(`${dir}/man8env.env`, "utf8").replace("\nA=1\n", "\nA=sed\n");
    writeFileSync(`${dir}/.sed-tmp`, text);
    renameSync(`${dir}/.sed-tmp`, `${dir}/man8env.env`); // what sed -i does
    await c.request("install", { ...base(name), env: { A: "1", NEW: "n" }, force: true });
    expect(lstatSync(`${dir}/man8env.env`).isSymbolicLink()).toBe(true);
    const env = readFileSync(`${dir}/man8env.env`, "utf8").split("\n");
    expect(env).toContain("A=sed");
    expect(env).toContain("NEW=n");

    // the layout an older agent wrote: two plain files, no generations; replaced by the new rendering
    const old = `${agent.root}/var/lib/man8machine_configs/legacy`;
    await c.request("install", { ...base("legacy") });
    const nsp = readFileSync(`${old}/container.nspawn`, "utf8");
    const envText = readFileSync(`${old}/man8env.env`, "utf8");
    Bun.spawnSync(["rm", "-rf", `${old}/current`, `${old}/generations`, `${old}/container.nspawn`, `${old}/man8env.env`]);
    writeFileSync(`${old}/container.nspawn`, nsp);
    writeFileSync(`${old}/man8env.env`, envText);
    expect(await errorCode(c.request("install", base("legacy")))).toBe("E_EXISTS");
    await c.request("install", { ...base("legacy"), env: { L: "1" }, force: true });
    expect(readFileSync(`${old}/man8env.env`, "utf8")).toContain("\nL=1\n");
    expect(tree(`${old}/generations`).filter((p) => p.endsWith("/"))).toEqual([readlinkSync(`${old}/current`).replace("generations/", "") + "/"]);
  });
});

describe("all or nothing", () => {
  const STEPS = ["after-generation", "after-links", "after-switch"] as const;

  for (const step of STEPS) {
    test(`kill -9 ${step}: the restarted agent cleans up, and status and install agree with the files`, async () => {
      const root = tmp("gen-root");
      const sock = `${tmp("gen-sock")}/agent.sock`;
      const name = `k-${step}`;
      const dir = cfgDir(root, name);
      // first install, killed
      const a1 = await startAgent({ root, socket: sock, env: { MAN8S_AGENT_FAULT: `install:${step}` } });
      const k1 = await client(a1.socket);
      expect(await errorCode(k1.request("install", base(name)))).not.toBe("no error");
      expect(await a1.proc.exited).toBe(137);
      k1.close();
      const a2 = await startAgent({ root, socket: sock });
      const k2 = await client(a2.socket);
      const status = await errorCode(k2.request("status", { name }));
      if (step === "after-switch") {
        // committed: installed, and both sides say so
        expect(status).toBe("no error");
        expect(await errorCode(k2.request("install", base(name)))).toBe("E_EXISTS");
        expect(tree(dir).filter((p) => p.includes(".tmp-"))).toEqual([]);
        expect(tree(`${dir}/generations`).filter((p) => p.endsWith("/")).length).toBe(1);
      } else {
        // never committed: nothing of it is left, the name is free
        expect(status).toBe("E_NOT_FOUND");
        expect(existsSync(dir)).toBe(false);
        const links = `${root}/etc/systemd/nspawn`;
        expect(existsSync(links) ? readdirSync(links) : []).toEqual([]);
        await k2.request("install", base(name));
        expect(await errorCode(k2.request("status", { name }))).toBe("no error");
      }
      // a forced reinstall killed at the same step: the old pair or the new one, never a mix
      const before = { env: readFileSync(`${dir}/man8env.env`, "utf8"), nsp: readFileSync(`${dir}/container.nspawn`, "utf8") };
      k2.close();
      await a2.stop();
      const a3 = await startAgent({ root, socket: sock, env: { MAN8S_AGENT_FAULT: `install:${step}` } });
      const k3 = await client(a3.socket);
      expect(await errorCode(k3.request("install", { ...base(name), env: { NEW: "1" }, stopTimeout: 30, force: true }))).not.toBe("no error");
      expect(await a3.proc.exited).toBe(137);
      k3.close();
      const a4 = await startAgent({ root, socket: sock });
      const env = readFileSync(`${dir}/man8env.env`, "utf8");
      const nsp = readFileSync(`${dir}/container.nspawn`, "utf8");
      if (step === "after-switch") {
        expect(env).toContain("\nNEW=1\n");
        expect(env).toContain("\nMAN8S_STOP_TIMEOUT=30\n");
      } else {
        expect({ env, nsp }).toEqual(before);
      }
      expect(tree(dir).filter((p) => p.includes(".tmp-"))).toEqual([]);
      expect(tree(`${dir}/generations`).filter((p) => p.endsWith("/"))).toEqual([readlinkSync(`${dir}/current`).replace("generations/", "") + "/"]);
      const k4 = await client(a4.socket);
      expect(await errorCode(k4.request("status", { name }))).toBe("no error");
      expect(await errorCode(k4.request("install", base(name)))).toBe("E_EXISTS");
      k4.close();
      await a4.stop();
    }, 30_000);
  }

  test("kill -9 in the middle of a copy (the /run copy, a volume seed): the restarted agent removes the half copies", async () => {
    const f = fx.get("user-app")!;
    for (const what of ["run", "volume"] as const) {
      const root = tmp("cp-root");
      const sock = `${tmp("cp-sock")}/agent.sock`;
      const rootfs = tmp("rootfs");
      Bun.spawnSync(["cp", "-a", `${f.rootfs}/.`, rootfs]);
      // without /run and /tmp content, the first copy of the install is the seed of /data
      if (what === "volume") Bun.spawnSync(["sh", "-c", `rm -rf '${rootfs}'/run/* '${rootfs}'/tmp/*`]);
      const a1 = await startAgent({ root, socket: sock, env: { MAN8S_AGENT_FAULT: "install:copy-before-rename" } });
      const k1 = await client(a1.socket);
      expect(await errorCode(k1.request("install", { name: "cp", rootfs, configPath: f.imageConfig, privateNetwork: true }))).not.toBe("no error");
      expect(await a1.proc.exited).toBe(137);
      k1.close();
      const leftover = what === "run" ? tree(rootfs).filter((p) => /^\.run\.man8sprotected\.tmp-[0-9a-f]+\/$/.test(p)) : tree(`${root}/var/lib/man8machine_storage/cp`).filter((p) => /^\.data\.tmp-[0-9a-f]+\/$/.test(p));
      expect([what, leftover.length]).toEqual([what, 1]); // the kill really hit a copy in progress
      const a2 = await startAgent({ root, socket: sock });
      const rest = what === "run" ? tree(rootfs).filter((p) => p.startsWith(".run.man8sprotected.")) : tree(`${root}/var/lib/man8machine_storage/cp`).filter((p) => p.startsWith(".data."));
      expect([what, rest]).toEqual([what, []]);
      expect(existsSync(cfgDir(root, "cp"))).toBe(false);
      expect(existsSync(`${root}/var/lib/man8machine_storage/cp`)).toBe(false);
      const k2 = await client(a2.socket);
      expect(await errorCode(k2.request("status", { name: "cp" }))).toBe("E_NOT_FOUND");
      await k2.request("install", { name: "cp", rootfs, configPath: f.imageConfig, privateNetwork: true });
      expect(readFileSync(`${root}/var/lib/man8machine_storage/cp/data/seed.txt`, "utf8")).toBe("seeded-from-image\n");
      k2.close();
      await a2.stop();
    }
  }, 30_000);

  test("a failed first install leaves nothing behind: no directory it made, not even the volume it seeded", async () => {
    // the settings link cannot be made (its directory is a file), after the configs were written
    const root = tmp("ff-root");
    mkdirSync(`${root}/etc/systemd`, { recursive: true });
    writeFileSync(`${root}/etc/systemd/nspawn`, "not a directory");
    const a = await startAgent({ root, socket: `${tmp("ff-sock")}/agent.sock` });
    const k = await client(a.socket);
    expect(await errorCode(k.request("install", base("failfirst")))).toBe("E_IO");
    expect(readdirSync(root).sort()).toEqual(["etc"]);
    expect(await errorCode(k.request("status", { name: "failfirst" }))).toBe("E_NOT_FOUND");
    // a volume was already seeded when a later one fails: it goes too
    const f = fx.get("user-app")!;
    const rootfs = tmp("rootfs");
    Bun.spawnSync(["cp", "-a", `${f.rootfs}/.`, rootfs]);
    const r = c.request("install", { name: "failfirst", rootfs, configPath: f.imageConfig, volumes: { "/zz": "/dev/null/sub" } });
    expect(await errorCode(r)).toBe("E_IO");
    expect(existsSync(cfgDir(agent.root, "failfirst"))).toBe(false);
    expect(existsSync(`${agent.root}/var/lib/man8machine_storage/failfirst`)).toBe(false);
    expect(existsSync(`${agent.root}/etc/systemd/nspawn/failfirst.nspawn`)).toBe(false);
    k.close();
    await a.stop();
  });

  test("install --force on a full disk fails and leaves the old pair intact, with no temporary files", async () => {
    const mnt = tmp("fulldisk");
    expect(Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=2m", "m8g-full", mnt]).exitCode).toBe(0);
    let a: Agent | undefined;
    try {
      a = await startAgent({ root: `${mnt}/root`, socket: `${tmp("fd-sock")}/agent.sock` });
      const k = await client(a.socket);
      const name = "full";
      const dir = cfgDir(a.root, name);
      await k.request("install", { ...base(name), env: { A: "1" } });
      const before = { env: readFileSync(`${dir}/man8env.env`, "utf8"), nsp: readFileSync(`${dir}/container.nspawn`, "utf8") };
      // fill the filesystem but for 64 KiB: room for a new man8env.env, not for a .nspawn with a 200 KB PATH
      const avail = Number(Bun.spawnSync(["df", "--output=avail", "-B4096", mnt]).stdout.toString().split("\n")[1]);
      Bun.spawnSync(["dd", "if=/dev/zero", `of=${mnt}/filler`, "bs=4096", `count=${avail - 16}`], { stderr: "ignore" });
      const cfg = JSON.parse(readFileSync(base(name).configPath, "utf8"));
      cfg.config.Env = [`PATH=/bin:${"x".repeat(200_000)}`];
      const { configPath: _, ...rest } = base(name);
      const code = await errorCode(k.request("install", { ...rest, config: cfg, env: { A: "2" }, force: true }));
      expect(code).toBe("E_IO");
      expect({ env: readFileSync(`${dir}/man8env.env`, "utf8"), nsp: readFileSync(`${dir}/container.nspawn`, "utf8") }).toEqual(before);
      expect(tree(dir).filter((p) => p.includes(".tmp-"))).toEqual([]);
      expect(tree(`${dir}/generations`).filter((p) => p.endsWith("/")).length).toBe(1);
      expect(await errorCode(k.request("status", { name }))).toBe("no error");
      k.close();
    } finally {
      await a?.stop(); // its report socket keeps the mount busy
      if (Bun.spawnSync(["umount", mnt]).exitCode !== 0) Bun.spawnSync(["umount", "-l", mnt]);
    }
  });
});
