// Issue 9 item 9: `inject --copy` into a rootfs whose "/" a container process can write. A racer (a real
// process, test/fixtures/inject-racer.c) swaps the agent's temporary copy directory for a symlink to a host
// directory during the copy. Through the agent's socket, every round: nothing may appear in, or change
// under, the host directory (which holds a symlink to a "host binary"), and the inject either fails with a
// clear code or leaves a verified copy inside the rootfs.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import type { AgentClient } from "../../hostagent/client.ts";
import { type Agent, client, REPO, startAgent, stopAgentAndClient, tmp } from "./helpers.ts";

let agent: Agent;
let c: AgentClient;
let racer: string;
let bundle: string;

beforeAll(async () => {
  agent = await startAgent();
  c = await client(agent.socket);
  const d = tmp("race");
  racer = `${d}/inject-racer`;
  const cc = Bun.spawnSync(["cc", "-O2", "-Wall", "-Werror", "-o", racer, `${REPO}/test/fixtures/inject-racer.c`], { stderr: "pipe" });
  if (cc.exitCode !== 0) throw new Error(`cc: ${cc.stderr.toString()}`);
  // a bundle whose first file is large enough that the copy is still running when the racer strikes
  bundle = `${d}/bundle`;
  mkdirSync(`${bundle}/lib`, { recursive: true });
  writeFileSync(`${bundle}/big`, randomBytes(24 * 1024 * 1024));
  writeFileSync(`${bundle}/init`, "#!/bin/sh\necho bundle init\n");
  chmodSync(`${bundle}/init`, 0o755);
  for (let i = 0; i < 8; i++) writeFileSync(`${bundle}/lib/lib${i}.so`, randomBytes(64 * 1024));
  symlinkSync("init", `${bundle}/00-init.sh`);
}, 60_000);
afterAll(async () => {
  await stopAgentAndClient(c, agent);
});

/** What a host directory holds: each entry's type, mode, size and a content hash, so any write shows. */
function snapshot(dir: string): string {
  return readdirSync(dir).sort().map((n) => {
    const st = lstatSync(`${dir}/${n}`);
    if (st.isSymbolicLink()) return `${n}:link`;
    if (st.isDirectory()) return `${n}:dir:${readdirSync(`${dir}/${n}`).length}`;
    const h = new Bun.CryptoHasher("sha256").update(readFileSync(`${dir}/${n}`)).digest("hex").slice(0, 12);
    return `${n}:${(st.mode & 0o7777).toString(8)}:${st.size}:${h}`;
  }).join(" ");
}

describe("inject --copy against a racing container", () => {
  test("the racer never gets the bundle written outside the rootfs", async () => {
    let swapped = 0;
    for (let round = 0; round < 6; round++) {
      const d = tmp("round");
      const rootfs = `${d}/rootfs`;
      const host = `${d}/host-bin`;
      mkdirSync(rootfs);
      mkdirSync(host);
      // a "host binary" the racer wants overwritten: the bundle's init would be copied through this link;
      // and a host file with the name of the bundle's first file
      writeFileSync(`${d}/victim`, "host binary\n");
      symlinkSync(`${d}/victim`, `${host}/init`);
      writeFileSync(`${host}/big`, "host file\n", { mode: 0o600 });
      const before = snapshot(host);

      const r = Bun.spawn([racer, rootfs, host, "20"], { stdout: "pipe", stderr: "inherit" });
      const out = (async () => {
        let text = "";
        for await (const chunk of r.stdout as ReadableStream<Uint8Array>) text += new TextDecoder().decode(chunk);
        return text;
      })();
      // the racer is polling before the copy starts
      while (!existsSync(`/proc/${r.pid}`)) await Bun.sleep(1);
      await Bun.sleep(20);
      let reply: { code?: string; message?: string; verified?: boolean } = {};
      try {
        reply = await c.request<{ verified: boolean }>("inject", { rootfs, mode: "copy", bundle });
      } catch (e) {
        reply = { code: String((e as { code?: string }).code), message: (e as Error).message };
      }
      if (r.exitCode === null) r.kill("SIGKILL");
      await r.exited;
      const said = await out;
      if (said.includes("swapped")) swapped++;

      const what = { round, racer: said.trim(), reply };
      // nothing written in the host directory, the host binary untouched
      expect({ ...what, host: snapshot(host) }).toEqual({ ...what, host: before });
      expect({ ...what, victim: readFileSync(`${d}/victim`, "utf8") }).toEqual({ ...what, victim: "host binary\n" });
      if (reply.code === undefined) {
        // the copy won: it is a real directory inside the rootfs with the bundle in it
        expect(lstatSync(`${rootfs}/man8s-init`).isDirectory()).toBe(true);
        expect(readFileSync(`${rootfs}/man8s-init/init`, "utf8")).toBe("#!/bin/sh\necho bundle init\n");
      } else {
        expect(what.reply.code).toBe("E_VERIFY_FAILED");
        // the temporary name is gone (the racer's symlink removed, never followed)
        expect(readdirSync(rootfs).filter((n) => n.startsWith(".man8s-init.tmp-") && !n.endsWith(".moved"))).toEqual([]);
      }
    }
    console.log(`the racer swapped the directory in ${swapped} of 6 rounds`);
    // the test only proves something when the racer struck
    expect(swapped).toBeGreaterThan(0);
  }, 120_000);

  test("without a racer the copy is complete and verified, and replaces an old one", async () => {
    const rootfs = `${tmp("plain")}/rootfs`;
    mkdirSync(rootfs);
    // something planted at the destination by the image: a symlink out of the rootfs
    symlinkSync("/usr/bin", `${rootfs}/man8s-init`);
    const r = await c.request<{ verified: boolean; files: { path: string }[] }>("inject", { rootfs, mode: "copy", bundle });
    expect(r.verified).toBe(true);
    expect(r.files.map((f) => f.path)).toEqual(["00-init.sh", "big", "init", "lib", ...Array.from({ length: 8 }, (_, i) => `lib/lib${i}.so`)]);
    expect(lstatSync(`${rootfs}/man8s-init`).isDirectory()).toBe(true);
    expect((lstatSync(`${rootfs}/man8s-init/init`).mode & 0o777).toString(8)).toBe("755");
    const again = await c.request<{ verified: boolean }>("inject", { rootfs, mode: "copy", bundle });
    expect(again.verified).toBe(true);
    // no temporary or old copies left behind; /usr/bin untouched (only the link was replaced)
    expect(readdirSync(rootfs)).toEqual(["man8s-init"]);
    expect(existsSync("/usr/bin/big")).toBe(false);
  }, 60_000);
});
