// `man8s machines pull | list | remove` and `man8s oci download` against a real registry (Debian's
// docker-registry on loopback), through the real agent and the real CLI. Blob fetches are counted in the
// registry's access log. Paths under /tmp/m8m-*.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync } from "node:fs";
import { BIN, cleanup, startAgent, type Agent } from "../hostagent/helpers.ts";
import { authFile, buildImages, makeSecure, Registry, run, SlowProxy, tmpDir, type Images } from "./registry.ts";
import { oneLine } from "../../hostagent/image-store.ts";

let reg: Registry;
let img: Images;
let agent: Agent;
let dir: string;

interface Cli {
  code: number;
  out: string;
  err: string;
}

async function cli(args: string[], socket = agent.socket): Promise<Cli> {
  const p = Bun.spawn([BIN, args[0]!, "--socket", socket, ...args.slice(1)], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

/** a registry image's layers, from its manifest */
function sizes(ref: string): { digest: string; size: number }[] {
  const m = JSON.parse(run(["skopeo", "inspect", "--raw", "--tls-verify=false", `docker://${ref}`])) as { layers: { digest: string; size: number }[] };
  return m.layers;
}

const pull = (src: string, name: string, ...more: string[]) => cli(["machines", "pull", "--tls-verify=false", src, name, ...more]);

function machinePaths(root: string, name: string): string[] {
  return [
    `${root}/var/lib/man8machines/${name}`,
    `${root}/var/lib/machines/${name}`,
    `${root}/etc/systemd/nspawn/${name}.nspawn`,
    `${root}/var/lib/man8machine_configs/${name}`,
    `${root}/var/lib/man8machine_storage/${name}`,
  ].filter((p) => {
    try {
      lstatSync(p);
      return true;
    } catch {
      return false;
    }
  });
}

beforeAll(async () => {
  dir = tmpDir("pull");
  img = buildImages(dir);
  reg = await Registry.start(dir);
  reg.push(img.layout, "app", "m8m/app:v1");
  reg.push(img.layout, "app2", "m8m/app2:v1");
  reg.push(img.layout, "big", "m8m/big:v1");
  agent = await startAgent();
}, 120_000);

afterAll(async () => {
  await agent?.stop();
  await reg?.stop();
  Bun.spawnSync(["rm", "-rf", dir]);
  cleanup(); // the agents' temporary roots
});

describe("machines pull", () => {
  test("pull installs the machine in mbctl's layout with the digest recorded; list shows it", async () => {
    const t0 = performance.now();
    const r = await pull(`${reg.host}/m8m/app:v1`, "m8m-web");
    const secs = (performance.now() - t0) / 1000;
    expect(r.err).toContain("pull: ");
    expect(r.code).toBe(0);
    const root = agent.root;
    const digest = reg.digest("m8m/app:v1");
    expect(r.out).toContain(digest);
    expect(readFileSync(`${root}/var/lib/man8machines/m8m-web/srv/index.html`, "utf8")).toBe("hello from m8m app v1\n");
    expect(readlinkSync(`${root}/var/lib/machines/m8m-web`)).toBe("../man8machines/m8m-web");
    expect(existsSync(`${root}/var/lib/man8machines/m8m-web/man8s-init`)).toBe(true); // the bind's mount point
    const env = readFileSync(`${root}/var/lib/man8machine_configs/m8m-web/man8env.env`, "utf8");
    expect(env).toContain(`MAN8S_OCI_IMAGE_DIGEST=${digest}\n`);
    expect(env).toContain(`MAN8S_OCI_IMAGE_URL=${reg.host}/m8m/app:v1\n`);
    expect(env).toContain("MAN8S_APPLICATION_ARGV=[\"/bin/busybox\",\"httpd\",\"-f\",\"-p\",\"8080\",\"-h\",\"/srv\"]");
    expect(readFileSync(`${root}/etc/systemd/nspawn/m8m-web.nspawn`, "utf8")).toContain("[Exec]");
    // nothing of the pull's temporaries is left
    expect(readdirSync(`${root}/var/lib/man8machines`).filter((n) => n.startsWith("."))).toEqual([]);
    expect(readdirSync(`${root}/var/lib/man8s/pulls`)).toEqual([]);
    // the shared base layer and the app layer were each fetched once
    expect(reg.blobGets(img.baseLayer).length).toBe(1);
    expect(reg.blobGets(img.appLayer).length).toBe(1);
    const list = await cli(["machines", "--json", "list"]);
    expect(list.code).toBe(0);
    const res = JSON.parse(list.out.trim().split("\n").at(-1)!) as { result: { machines: { name: string; digest: string; source: string; running: boolean }[] } };
    const m = res.result.machines.find((x) => x.name === "m8m-web")!;
    expect(m.digest).toBe(digest);
    expect(m.source).toBe(`${reg.host}/m8m/app:v1`);
    expect(m.running).toBe(false);
    const human = await cli(["machines", "list"]);
    expect(human.out).toMatch(/^NAME\s+IMAGE\s+DIGEST\s+STATE\s+ADDRESS$/m);
    expect(human.out).toMatch(/^m8m-web\s+127\.0\.0\.1:\d+\/m8m\/app:v1\s+sha256:[0-9a-f]{12}\s+stopped/m);
    console.log(`first pull (2 layers, cold store): ${secs.toFixed(2)} s`);
  }, 60_000);

  test("a second image sharing the base layer fetches only its new layer; the same digest again fetches no layer", async () => {
    const r = await pull(`${reg.host}/m8m/app2:v1`, "m8m-web2");
    expect(r.code).toBe(0);
    expect(reg.blobGets(img.baseLayer).length).toBe(1); // not fetched again
    expect(reg.blobGets(img.app2Layer).length).toBe(1);
    expect(r.out).toMatch(/2 layers, 1 already stored, \d+ bytes fetched/);
    // by digest, to another name: no layer crosses the wire
    const digest = reg.digest("m8m/app:v1");
    const before = reg.blobGets().length;
    const again = await pull(`${reg.host}/m8m/app@${digest}`, "m8m-web3");
    expect(again.code).toBe(0);
    expect(again.out).toMatch(/2 layers, 2 already stored, 0 bytes fetched/);
    const fetched = reg.blobGets().slice(before);
    expect(fetched.filter((h) => h === img.baseLayer || h === img.appLayer)).toEqual([]);
    expect(readFileSync(`${agent.root}/var/lib/man8machine_configs/m8m-web3/man8env.env`, "utf8")).toContain(`MAN8S_OCI_IMAGE_DIGEST=${digest}\n`);
  }, 60_000);

  test("two pulls of one NAME at once are serialised: one installs, the other is refused, nothing is mixed", async () => {
    const [a, b] = await Promise.all([pull(`${reg.host}/m8m/app:v1`, "m8m-race"), pull(`${reg.host}/m8m/app2:v1`, "m8m-race")]);
    expect([a.code, b.code].sort()).toEqual([0, 1]);
    const loser = a.code === 1 ? a : b;
    expect(loser.err).toContain("E_EXISTS: machine 'm8m-race' already exists");
    const winner = a.code === 0 ? "hello from m8m app v1\n" : "hello from m8m app2\n";
    expect(readFileSync(`${agent.root}/var/lib/man8machines/m8m-race/srv/index.html`, "utf8")).toBe(winner);
    expect((await cli(["machines", "remove", "m8m-race"])).code).toBe(0);
  }, 60_000);

  test("--json: progress events, then the result, one JSON object per line", async () => {
    const r = await pull(`${reg.host}/m8m/app:v1`, "m8m-json", "--json");
    expect(r.code).toBe(0);
    const lines = r.out.trim().split("\n").map((l) => JSON.parse(l) as { type: string; step?: string; result?: { digest: string } });
    expect(lines.at(-1)!.type).toBe("result");
    expect(lines.at(-1)!.result!.digest).toBe(reg.digest("m8m/app:v1"));
    const steps = lines.filter((l) => l.type === "progress").map((l) => l.step);
    expect(steps).toContain("pull");
    expect(steps.indexOf("unpack")).toBeGreaterThan(steps.indexOf("pull"));
    expect(steps.indexOf("install")).toBeGreaterThan(steps.indexOf("unpack"));
    const bad = await pull(`${reg.host}/m8m/app:nope`, "m8m-json2", "--json");
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.out.trim().split("\n").at(-1)!)).toMatchObject({ type: "error", code: "E_PULL" });
    expect((await cli(["machines", "remove", "m8m-json"])).code).toBe(0);
  }, 30_000);

  test("an existing NAME is refused and left as it was", async () => {
    const r = await pull(`${reg.host}/m8m/app2:v1`, "m8m-web");
    expect(r.code).toBe(1);
    expect(r.err).toContain("E_EXISTS: machine 'm8m-web' already exists");
    expect(readFileSync(`${agent.root}/var/lib/man8machines/m8m-web/srv/index.html`, "utf8")).toBe("hello from m8m app v1\n");
  }, 30_000);

  test("an unknown tag is one line naming the reference, and no machine path is made", async () => {
    const ref = `${reg.host}/m8m/app:nope`;
    const r = await pull(ref, "m8m-nope");
    expect(r.code).toBe(1);
    const errLines = r.err.split("\n").filter((l) => l.startsWith("man8s machines:"));
    expect(errLines.length).toBe(1);
    expect(errLines[0]).toContain(`E_PULL: pulling ${ref}:`);
    expect(errLines[0]).toContain("manifest unknown");
    expect(machinePaths(agent.root, "m8m-nope")).toEqual([]);
  }, 30_000);

  test("SOURCE forms: oci:DIR:TAG, oci-archive:FILE, docker://REF; a bad one is refused before any work", async () => {
    const a = await cli(["machines", "pull", `oci:${img.layout}:app2`, "m8m-oci"]);
    expect(a.code).toBe(0);
    expect(readFileSync(`${agent.root}/var/lib/man8machines/m8m-oci/srv/index.html`, "utf8")).toBe("hello from m8m app2\n");
    const archive = `${dir}/app.tar`;
    Bun.spawnSync(["skopeo", "copy", `oci:${img.layout}:app`, `oci-archive:${archive}`]);
    const b = await cli(["machines", "pull", `oci-archive:${archive}`, "m8m-arch"]);
    expect(b.code).toBe(0);
    const c = await pull(`docker://${reg.host}/m8m/app:v1`, "m8m-dock");
    expect(c.code).toBe(0);
    const bad = await cli(["machines", "pull", "not a ref", "m8m-bad"]);
    expect(bad.code).toBe(1);
    expect(bad.err).toContain("E_BAD_ARGS");
    const badName = await pull(`${reg.host}/m8m/app:v1`, "../etc");
    expect(badName.code).toBe(1);
    expect(badName.err).toContain("E_BAD_NAME");
  }, 60_000);

  test("--template overrides the classification with mbctl's settings; an unknown one is refused before any work", async () => {
    const cfg = (n: string) => ({
      nspawn: readFileSync(`${agent.root}/var/lib/man8machine_configs/${n}/container.nspawn`, "utf8"),
      env: readFileSync(`${agent.root}/var/lib/man8machine_configs/${n}/man8env.env`, "utf8"),
    });
    expect((await pull(`${reg.host}/m8m/app:v1`, "m8m-tpl-init", "--template", "netns-init")).code).toBe(0);
    let c = cfg("m8m-tpl-init");
    expect(c.nspawn).toContain("ProcessTwo=no\nKillSignal=SIGTERM\n");
    expect(c.env).toContain("MAN8S_CONTAINER_TEMPLATE=netns-init\n");
    expect(c.env).not.toContain("MAN8S_EXEC_INIT=");
    expect((await pull(`${reg.host}/m8m/app:v1`, "m8m-tpl-sd", "--template", "netns-systemd")).code).toBe(0);
    c = cfg("m8m-tpl-sd");
    expect(c.nspawn).toContain("ProcessTwo=no\nKillSignal=SIGRTMIN+3\n");
    expect(c.env).toContain('MAN8S_EXEC_INIT=["/bin/busybox","httpd","-f","-p","8080","-h","/srv"]\n');
    // the default (no --template) for this image is the classification's: PID 2 under our init
    expect(cfg("m8m-web").nspawn).toContain("ProcessTwo=yes\n");
    const bad = await pull(`${reg.host}/m8m/app:v1`, "m8m-tpl-bad", "--template", "netns-bogus");
    expect(bad.code).toBe(1);
    expect(bad.err).toContain("E_BAD_ARGS: template must be one of");
    expect(bad.err).not.toContain("pull: "); // refused before any pull
    expect(machinePaths(agent.root, "m8m-tpl-bad")).toEqual([]);
    for (const n of ["m8m-tpl-init", "m8m-tpl-sd"]) expect((await cli(["machines", "remove", n])).code).toBe(0);
  }, 60_000);

  test("oci download pulls and unpacks only", async () => {
    const target = `${dir}/dl-rootfs`;
    const r = await cli(["oci", "download", "--tls-verify=false", `${reg.host}/m8m/app2:v1`, target]);
    expect(r.code).toBe(0);
    expect(readFileSync(`${target}/srv/index.html`, "utf8")).toBe("hello from m8m app2\n");
    expect(existsSync(`${target}.config.json`)).toBe(true);
    expect(existsSync(`${target}/man8s-init`)).toBe(false); // no init installed
    expect(readdirSync(dir).filter((n) => n.includes(".pull-"))).toEqual([]);
  }, 30_000);

  test("remove: reports each part, keeps storage with --keep-data, refuses an unknown name", async () => {
    const r = await cli(["machines", "remove", "m8m-web3"]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^removed rootfs: .*\/var\/lib\/man8machines\/m8m-web3$/m);
    expect(r.out).toMatch(/^removed machines link: /m);
    expect(r.out).toMatch(/^removed nspawn link: /m);
    expect(r.out).toMatch(/^removed config: /m);
    expect(machinePaths(agent.root, "m8m-web3")).toEqual([]);
    // a volume's storage outlives the machine with --keep-data
    const v = await pull(`${reg.host}/m8m/app:v1`, "m8m-vol", "--volume", "/srv=data");
    expect(v.code).toBe(0);
    expect(readFileSync(`${agent.root}/var/lib/man8machine_storage/m8m-vol/srv/index.html`, "utf8")).toBe("hello from m8m app v1\n");
    const k = await cli(["machines", "remove", "--keep-data", "m8m-vol"]);
    expect(k.code).toBe(0);
    expect(k.out).toMatch(/^kept\s+storage: /m);
    expect(machinePaths(agent.root, "m8m-vol")).toEqual([`${agent.root}/var/lib/man8machine_storage/m8m-vol`]);
    const gone = await cli(["machines", "remove", "m8m-never"]);
    expect(gone.code).toBe(1);
    expect(gone.err).toContain("E_NOT_FOUND");
    const list = await cli(["machines", "list"]);
    expect(list.out).not.toContain("m8m-web3");
  }, 60_000);
});

describe("cache prune, oci man8init, address getsuffix", () => {
  test("cache prune removes the blobs no machine uses, keeps shared ones; the next pull fetches what went", async () => {
    // app2's layer is used by m8m-web2 and m8m-oci only
    for (const n of ["m8m-web2", "m8m-oci"]) expect((await cli(["machines", "remove", n])).code).toBe(0);
    const blobs = `${agent.root}/var/lib/man8s/images/blobs/sha256`;
    expect(existsSync(`${blobs}/${img.app2Layer}`)).toBe(true);
    // pulled minutes ago: the default prune keeps it (pulls of the last 60 minutes), with no machine using it
    const kept = await cli(["cache", "prune"]);
    expect(kept.code).toBe(0);
    expect(existsSync(`${blobs}/${img.app2Layer}`)).toBe(true);
    expect((await cli(["cache", "prune", "--recent", "x"])).code).toBe(64);
    // --recent 0: only what machines use stays
    const r = await cli(["cache", "prune", "--recent", "0"]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^pruned \d+ unused tags; blobs \d+ -> \d+, [1-9]\d* bytes freed$/m);
    expect(existsSync(`${blobs}/${img.app2Layer}`)).toBe(false);
    expect(existsSync(`${blobs}/${img.baseLayer}`)).toBe(true); // m8m-web still uses it
    expect(existsSync(`${blobs}/${img.appLayer}`)).toBe(true);
    const gets = reg.blobGets(img.app2Layer).length;
    expect((await pull(`${reg.host}/m8m/app2:v1`, "m8m-web2")).code).toBe(0);
    expect(reg.blobGets(img.app2Layer).length).toBe(gets + 1);
    expect(readFileSync(`${agent.root}/var/lib/man8machines/m8m-web/srv/index.html`, "utf8")).toBe("hello from m8m app v1\n");
  }, 60_000);

  test("oci man8init installs a verified copy of the init into a rootfs", async () => {
    const target = `${dir}/dl-rootfs`; // unpacked by the oci download test
    const r = await cli(["oci", "man8init", target]);
    expect(r.code).toBe(0);
    expect(existsSync(`${target}/man8s-init/init`)).toBe(true);
  }, 30_000);

  test("address getsuffix prints mbctl's two lines (the reference's vectors)", async () => {
    const r = Bun.spawnSync([BIN, "address", "getsuffix", "TestBWContainer3"], { stdout: "pipe" });
    expect(r.stdout.toString()).toBe("容器名字: TestBWContainer3\nIPv6 后缀地址: ::1d44:bc13:a177:c4d\n");
    expect(Bun.spawnSync([BIN, "address", "getsuffix", "容器1"], { stdout: "pipe" }).stdout.toString()).toContain("::43f:df2c:1e17:d67f");
  });
});

describe("interrupted renew", () => {
  for (const step of ["renew-after-swap-out", "renew-after-install"]) {
    test(`the agent killed at ${step}: the restarted agent puts the old rootfs and config back, edits kept`, async () => {
      const repo = `m8m/ren-${step}:1`;
      reg.push(img.layout, "app", repo);
      const v1 = reg.digest(repo);
      const a = await startAgent({ env: { MAN8S_AGENT_FAULT: `machines:${step}` } });
      const name = "m8m-renk";
      expect((await cli(["machines", "pull", "--tls-verify=false", "--env", "GREETING=rendered", `${reg.host}/${repo}`, name], a.socket)).code).toBe(0);
      const envPath = `${a.root}/var/lib/man8machine_configs/${name}/man8env.env`;
      await Bun.write(envPath, (await Bun.file(envPath).text()).replace("GREETING=rendered", "GREETING=edited"));
      reg.push(img.layout, "app2", repo);
      const r = await cli(["machines", "renew", "--tls-verify=false", name], a.socket);
      expect(r.code).not.toBe(0); // the agent died under it
      expect(await a.proc.exited).not.toBe(0);
      expect(existsSync(`${a.root}/var/lib/man8s/renews/${name}.json`)).toBe(true);
      const b = await startAgent({ root: a.root });
      expect(readFileSync(`${a.root}/var/lib/man8machines/${name}/srv/index.html`, "utf8")).toBe("hello from m8m app v1\n");
      const env = await Bun.file(envPath).text();
      expect(env).toContain("GREETING=edited\n");
      expect(env).toContain(`MAN8S_OCI_IMAGE_DIGEST=${v1}\n`);
      expect(JSON.parse(readFileSync(`${a.root}/var/lib/man8machine_configs/${name}/image.json`, "utf8")).digest).toBe(v1);
      expect(readdirSync(`${a.root}/var/lib/man8machines`).filter((n) => n.startsWith("."))).toEqual([]);
      expect(readdirSync(`${a.root}/var/lib/man8s/renews`)).toEqual([]);
      // and a renew now goes through
      const ok = await cli(["machines", "renew", "--tls-verify=false", name], b.socket);
      expect(ok.code).toBe(0);
      expect(readFileSync(`${a.root}/var/lib/man8machines/${name}/srv/index.html`, "utf8")).toBe("hello from m8m app2\n");
      expect(await Bun.file(envPath).text()).toContain("GREETING=edited\n");
      await b.stop();
    }, 60_000);
  }
});

describe("interrupted pulls", () => {
  let proxy: SlowProxy;
  beforeAll(async () => {
    proxy = await new SlowProxy(reg.port, 1024 * 1024).start(); // 8 MiB layer: ~8 s through it
  });
  afterAll(() => proxy.stop());

  /** waits until the big layer is on its way (its GET started: the proxy is trickling it) */
  async function midBlob(p: { exitCode: number | null; stderr: ReadableStream<Uint8Array> }, baseBefore: number): Promise<void> {
    const t0 = Date.now();
    // the base layer completes first (it is small); then only the big one is in flight
    while (reg.blobGets(img.baseLayer).length === baseBefore) {
      if (p.exitCode !== null || Date.now() - t0 > 20_000) throw new Error(`the pull did not get under way: ${await new Response(p.stderr).text()}`);
      await Bun.sleep(50);
    }
    await Bun.sleep(1500);
  }

  test("the agent killed mid-blob: a restarted agent leaves no path of the machine, and the next pull reuses the blobs", async () => {
    // a fresh agent with a fresh store, so the base layer is fetched (and stored) by this pull
    const a = await startAgent();
    const baseBefore = reg.blobGets(img.baseLayer).length;
    const p = Bun.spawn([BIN, "machines", "--socket", a.socket, "pull", "--tls-verify=false", `${proxy.host}/m8m/big:v1`, "m8m-big"], { stdout: "pipe", stderr: "pipe" });
    await midBlob(p, baseBefore);
    expect(p.exitCode).toBeNull();
    expect(existsSync(`${a.root}/var/lib/man8s/pulls/m8m-big.json`)).toBe(true);
    await a.stop("SIGKILL");
    expect(await p.exited).not.toBe(0);
    // its skopeo died with it (pdeathsig): nothing writes into the store any more
    const skopeos = Bun.spawnSync(["pgrep", "-f", `oci:${a.root}/var/lib/man8s/images`]).stdout.toString().trim();
    expect(skopeos).toBe("");
    // (the registry itself has sent the whole big blob into the proxy's queue: only skopeo never got it)
    const big = reg.blobGets(img.bigLayer).length;
    const b = await startAgent({ root: a.root });
    expect(machinePaths(a.root, "m8m-big")).toEqual([]);
    expect(readdirSync(`${a.root}/var/lib/man8s/pulls`)).toEqual([]);
    const base = reg.blobGets(img.baseLayer).length;
    expect(base).toBe(baseBefore + 1);
    const ok = await cli(["machines", "pull", "--tls-verify=false", `${reg.host}/m8m/big:v1`, "m8m-big"], b.socket);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/2 layers, 1 already stored/);
    expect(reg.blobGets(img.baseLayer).length).toBe(base); // reused, not fetched again
    expect(reg.blobGets(img.bigLayer).length).toBe(big + 1);
    await b.stop();
  }, 90_000);

  test("Ctrl-C in the CLI cancels the pull in the agent: no path of the machine remains", async () => {
    const p = Bun.spawn([BIN, "machines", "--socket", agent.socket, "pull", "--tls-verify=false", `${proxy.host}/m8m/big:v1`, "m8m-big2"], { stdout: "pipe", stderr: "pipe" });
    const t0 = Date.now();
    while (!existsSync(`${agent.root}/var/lib/man8s/pulls/m8m-big2.json`)) {
      if (p.exitCode !== null || Date.now() - t0 > 20_000) throw new Error("the pull did not get under way");
      await Bun.sleep(20);
    }
    await Bun.sleep(1500);
    p.kill("SIGINT");
    expect(await p.exited).toBe(130);
    const t1 = Date.now();
    while (machinePaths(agent.root, "m8m-big2").length > 0 || existsSync(`${agent.root}/var/lib/man8s/pulls/m8m-big2.json`)) {
      if (Date.now() - t1 > 10_000) throw new Error(`left behind: ${machinePaths(agent.root, "m8m-big2").join(", ")}`);
      await Bun.sleep(50);
    }
    // the agent is still serving
    expect((await cli(["machines", "list"])).code).toBe(0);
  }, 60_000);
});

describe("a registry with TLS from a test CA and basic auth", () => {
  let sec: Registry;
  let tls: Awaited<ReturnType<typeof makeSecure>>;
  beforeAll(async () => {
    tls = await makeSecure(dir, "m8muser", "s3cret");
    const d = `${dir}/secure`;
    Bun.spawnSync(["mkdir", "-p", d]);
    sec = await Registry.start(d, undefined, tls);
    run(["skopeo", "copy", "--dest-cert-dir", tls.certDir, "--dest-creds", "m8muser:s3cret", `oci:${img.layout}:app`, `docker://${sec.host}/m8m/app:v1`]);
  }, 60_000);
  afterAll(async () => {
    await sec?.stop();
  });

  test("--cert-dir + --authfile pull; no credentials, wrong ones, or no CA are one-line errors naming the reference", async () => {
    const ref = `${sec.host}/m8m/app:v1`;
    const good = authFile(`${dir}/auth.json`, sec.host, "m8muser", "s3cret");
    const bad = authFile(`${dir}/bad-auth.json`, sec.host, "m8muser", "wrong");
    const ok = await cli(["machines", "pull", "--cert-dir", tls.certDir, "--authfile", good, ref, "m8m-sec"]);
    expect(ok.err).not.toContain("E_");
    expect(ok.code).toBe(0);
    expect(readFileSync(`${agent.root}/var/lib/man8machines/m8m-sec/srv/index.html`, "utf8")).toBe("hello from m8m app v1\n");
    const oneLine = (r: Cli) => {
      const lines = r.err.split("\n").filter((l) => l.startsWith("man8s machines:"));
      expect(lines.length).toBe(1);
      expect(lines[0]).toContain(`E_PULL: pulling ${ref}:`);
      return lines[0]!;
    };
    const noAuth = await cli(["machines", "pull", "--cert-dir", tls.certDir, ref, "m8m-sec2"]);
    expect(noAuth.code).toBe(1);
    expect(oneLine(noAuth)).toMatch(/unauthorized|authentication required/i);
    const wrong = await cli(["machines", "pull", "--cert-dir", tls.certDir, "--authfile", bad, ref, "m8m-sec2"]);
    expect(wrong.code).toBe(1);
    expect(oneLine(wrong)).toMatch(/unauthorized|authentication required|invalid username\/password/i);
    const noCa = await cli(["machines", "pull", "--authfile", good, ref, "m8m-sec2"]);
    expect(noCa.code).toBe(1);
    expect(oneLine(noCa)).toMatch(/certificate|x509/i);
    expect(machinePaths(agent.root, "m8m-sec2")).toEqual([]);
  }, 60_000);
});

describe("pull progress", () => {
  // a fresh agent (empty store) behind an 8 MiB/s proxy: the 8 MiB layer takes about a second, so its
  // progress is seen while it grows
  let a: Agent;
  let fast: SlowProxy;
  beforeAll(async () => {
    a = await startAgent();
    fast = await new SlowProxy(reg.port, 8 * 1024 * 1024).start();
  });
  afterAll(async () => {
    fast?.stop();
    await a?.stop();
  });

  interface Ev {
    type: string;
    step?: string;
    layer?: { index: number; count: number; digest: string; size: number; bytes: number; state: string; rate: number; eta: number | null };
  }

  test("--json: per-layer events with bytes growing to the manifest's size while the layer is fetched", async () => {
    const layers = sizes(`${reg.host}/m8m/big:v1`);
    const r = await cli(["machines", "pull", "--json", "--tls-verify=false", `${fast.host}/m8m/big:v1`, "m8m-prog"], a.socket);
    expect(r.code).toBe(0);
    const evs = r.out.trim().split("\n").map((l) => JSON.parse(l) as Ev).filter((e) => e.step === "layer");
    for (const [i, l] of layers.entries()) {
      const mine = evs.filter((e) => e.layer!.digest === l.digest).map((e) => e.layer!);
      expect(mine.every((e) => e.index === i + 1 && e.count === layers.length && e.size === l.size)).toBe(true);
      expect(mine.at(-1)).toMatchObject({ state: "done", bytes: l.size });
      // bytes never go back
      expect(mine.map((e) => e.bytes)).toEqual(mine.map((e) => e.bytes).sort((x, y) => x - y));
    }
    const big = layers.reduce((x, y) => (x.size > y.size ? x : y));
    const growing = evs.map((e) => e.layer!).filter((e) => e.digest === big.digest && e.state === "fetching");
    expect(growing.some((e) => e.bytes > 0 && e.bytes < big.size && e.rate > 0 && e.eta !== null)).toBe(true);
  }, 60_000);

  test("on a terminal: the layer in flight is one line updated in place with bytes, %, rate and ETA", async () => {
    const b = await startAgent(); // an empty store: the big layer is fetched again
    try {
      // script(1) gives the CLI a pseudo-terminal; its output is what the terminal received
      const cmd = [BIN, "machines", "--socket", b.socket, "pull", "--tls-verify=false", `${fast.host}/m8m/big:v1`, "m8m-tty"].join(" ");
      const p = Bun.spawn(["script", "-qec", cmd, "/dev/null"], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
      const [out, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
      expect(code).toBe(0);
      const updates = out.split("\r\x1b[K").filter((l) => /^layer: layer \d\/2 [0-9a-f]{12} .*: [\d.]+ \w+ \d+%(, [\d.]+ \w+\/s)?, ETA (\d+ s|\?)/.test(l));
      expect(updates.length).toBeGreaterThan(0);
      expect(out).toMatch(/layer: layer \d\/2 [0-9a-f]{12} 8\.0 MiB \(\d+ bytes\): fetched/);
    } finally {
      await b.stop();
    }
  }, 60_000);

  test("not a terminal: one line per layer, with its size; a layer already stored says so", async () => {
    const layers = sizes(`${reg.host}/m8m/app:v1`);
    const r = await cli(["machines", "pull", "--tls-verify=false", `${fast.host}/m8m/app:v1`, "m8m-prog2"], a.socket);
    expect(r.code).toBe(0);
    const lines = r.err.split("\n").filter((l) => l.startsWith("layer: "));
    expect(lines.length).toBe(layers.length);
    for (const [i, l] of layers.entries()) {
      expect(lines[i]).toStartWith(`layer: layer ${i + 1}/${layers.length} ${l.digest.slice(7, 19)} `);
      expect(lines[i]).toContain(`(${l.size} bytes): `);
    }
    // the base layer came with the big image; the app's own layer is new
    expect(lines[0]).toEndWith("already stored");
    expect(lines[1]).toMatch(/fetched(, [\d.]+ \w+\/s)?$/);
    expect(r.err).not.toContain("Copying blob"); // skopeo's own lines are replaced
  }, 60_000);
});

describe("a full disk", () => {
  // the agent's whole root on a 4 MiB tmpfs: the 8 MiB layer cannot be stored
  let a: Agent;
  let mnt: string;
  beforeAll(async () => {
    mnt = tmpDir("full");
    run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "m8m-full", mnt]);
    a = await startAgent({ root: `${mnt}/root` });
  });
  afterAll(async () => {
    await a?.stop();
    Bun.spawnSync(["umount", mnt]);
    Bun.spawnSync(["rm", "-rf", mnt]);
  });

  test("a pull that fills the disk is one clear line naming the reference; no path of the machine and no partial blob remain", async () => {
    const ref = `${reg.host}/m8m/big:v1`;
    const r = await cli(["machines", "pull", "--tls-verify=false", ref, "m8m-full"], a.socket);
    expect(r.code).toBe(1);
    const lines = r.err.split("\n").filter((l) => l.startsWith("man8s machines:"));
    expect(lines.length).toBe(1);
    expect(lines[0]).toContain(`E_PULL: pulling ${ref}:`);
    expect(lines[0]).toMatch(/no space left on device/i);
    expect(machinePaths(a.root, "m8m-full")).toEqual([]);
    const store = `${a.root}/var/lib/man8s/images`;
    const leftovers = [...readdirSync(store), ...readdirSync(`${store}/blobs/sha256`)].filter((n) => /^oci-put-blob|^\.digest-/.test(n));
    expect(leftovers).toEqual([]);
    // the big layer never made it into the store; the disk has room again for a small image
    const big = sizes(`${reg.host}/m8m/big:v1`).reduce((x, y) => (x.size > y.size ? x : y));
    expect(existsSync(`${store}/blobs/sha256/${big.digest.slice(7)}`)).toBe(false);
    const ok = await cli(["machines", "pull", "--tls-verify=false", `${reg.host}/m8m/app:v1`, "m8m-full"], a.socket);
    expect(ok.code).toBe(0);
  }, 60_000);

  test("the disk filling up during the unpack (every blob already stored): one line, no path of the machine, no half-unpacked bundle", async () => {
    // leave 32 KiB free: the store already has app:v1, so only the unpack needs room
    const free = Number(run(["stat", "-f", "-c", "%a*%S", mnt]).trim().split("*").reduce((x, y) => String(Number(x) * Number(y))));
    run(["fallocate", "-l", String(Math.max(0, free - 32 * 1024)), `${mnt}/m8m-filler`]);
    try {
      const r = await cli(["machines", "pull", "--tls-verify=false", `${reg.host}/m8m/app:v1`, "m8m-full2"], a.socket);
      expect(r.code).toBe(1);
      const lines = r.err.split("\n").filter((l) => l.startsWith("man8s machines:"));
      expect(lines.length).toBe(1);
      expect(lines[0]).toMatch(/no space left on device/i);
      expect(lines[0]).toContain("E_UNPACK");
      expect(machinePaths(a.root, "m8m-full2")).toEqual([]);
      expect(readdirSync(`${a.root}/var/lib/man8machines`).filter((n) => n.includes("m8m-full2"))).toEqual([]);
    } finally {
      Bun.spawnSync(["rm", "-f", `${mnt}/m8m-filler`]);
    }
  }, 60_000);
});

test("oneLine: a tool's stack trace is summed up by its system error or its panic line", () => {
  const trace = (head: string) => `${head}\n\ngoroutine 7 [running]:\ngithub.com/klauspost/pgzip.(*Reader).doReadAhead()\n\tgithub.com/klauspost/pgzip/gunzip.go:379 +0x2aa\n`;
  expect(oneLine(trace("panic: write /x/rootfs/f: no space left on device"))).toBe("panic: write /x/rootfs/f: no space left on device");
  expect(oneLine(trace("panic: send on closed channel"))).toBe("panic: send on closed channel");
  expect(oneLine('time="t" level=fatal msg="manifest unknown"\n')).toBe("manifest unknown");
  expect(oneLine("a\nlast words\n")).toBe("last words");
});
