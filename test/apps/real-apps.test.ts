// Issue 8 end to end with real applications on the production path: images built from Debian's packages
// (test/apps/images.ts), installed through the agent's socket with its DEFAULT settings (PrivateUsers=pick,
// :idmap binds, the bundle bound read-only), started exactly as systemd-nspawn@.service starts a machine
// (test/apps/machine.ts) on a lab bridge with dnsmasq, stopped as systemd stops the unit (SIGTERM to nspawn).
// What each app did (times to ready, stop signal seen, exit codes) is printed as "real-apps:" lines.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { appendFileSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { cleanup as cleanupAgents, startAgent, type Agent, BIN } from "../hostagent/helpers.ts";
import { NotifyListener } from "../probes/helpers.ts";
import { appImages, type AppImage } from "./images.ts";
import { AppLab, Machine, sh, waitFor } from "./machine.ts";

/** per test: a machine start, its checks and its stop, on a shared 2-core machine */
const T = 120_000;
const isRoot = process.getuid?.() === 0;
const haveTools = isRoot && ["/usr/bin/systemd-nspawn", "/usr/bin/mmdebstrap", "/usr/bin/umoci", "/usr/sbin/dnsmasq"].every(existsSync);

let lab: AppLab;
let agent: Agent;
let images: Map<string, AppImage>;
const facts: string[] = [];
const note = (m: string) => {
  facts.push(m);
  console.log(`real-apps: ${m}`);
};
const debug = (m: Machine) => process.env.M8R_DEBUG && console.log(`--- ${m.name} log ---\n${m.log}`);
const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

beforeAll(async () => {
  if (!haveTools) return;
  const b = await appImages((m) => console.log(`real-apps build: ${m}`));
  images = b.images;
  note(`images: ${b.built.length ? `built ${b.built.join(", ")}` : "all from the cache"} in ${b.seconds.toFixed(1)} s`);
  lab = await new AppLab("a", 86).start();
  agent = await startAgent();
}, 600_000);

afterAll(async () => {
  await lab?.cleanup();
  await agent?.stop();
  if (process.env.M8R_DEBUG && agent) console.log(`--- agent stderr ---\n${await agent.stderr()}`);
  cleanupAgents();
  if (facts.length) console.log(`real-apps summary:\n  ${facts.join("\n  ")}`);
});

const cli = (...args: string[]) => sh([BIN, "agent", "--socket", agent.socket, ...args]).out;
const configDir = (name: string) => `${agent.root}/var/lib/man8machine_configs/${name}`;
const settingsLink = (name: string) => `${agent.root}/etc/systemd/nspawn/${name}.nspawn`;

/** umoci unpack of a cached image into this run's scratch dir; returns the rootfs */
function unpack(tag: string, name: string): string {
  const bundle = `${lab.dir}/bundle-${name}`;
  sh(["umoci", "unpack", "--image", `${images.get(tag)!.layout}:${tag}`, bundle]);
  return `${bundle}/rootfs`;
}

/** the lab bridge; DHCPv4 only (no yggdrasil prefix in the lab, so the network phase is asked for) */
const NET = () => ["--bridge", lab.bridge, "--env", "MAN8S_NETWORK=v4"];

/** inject (bind: only the mount point) + install with the defaults, on the lab bridge */
function install(tag: string, name: string, rootfs: string, extra: string[] = []): Record<string, unknown> {
  cli("inject", "--rootfs", rootfs, "--bind");
  return JSON.parse(cli("install", name, "--json", "--rootfs", rootfs, "--config", images.get(tag)!.config, ...NET(), ...extra));
}

/** the host side of the Bind= line whose container path is dst, from the installed .nspawn */
function bindSource(name: string, dst: string): string | undefined {
  for (const l of readFileSync(`${configDir(name)}/container.nspawn`, "utf8").split("\n")) {
    const m = /^Bind(?:ReadOnly)?=([^:]+):([^:]+)(?::.*)?$/.exec(l.trim());
    if (m && m[2] === dst) return m[1];
  }
  return undefined;
}

/**
 * Log assertions that print one line, not the whole console log, when they fail: the matching line, or
 * (when none matches) the log's last lines.
 */
function inLog(log: string) {
  const lines = log.replace(/\r/g, "").split("\n");
  const find = (what: string | RegExp) => lines.find((l) => (typeof what === "string" ? l.includes(what) : what.test(l)));
  return {
    has(what: string | RegExp) {
      const line = find(what) ?? `(no line matches; the log ends:)\n${lines.slice(-25).join("\n")}`;
      if (typeof what === "string") expect(line).toContain(what);
      else expect(line).toMatch(what);
    },
    lacks(what: string | RegExp) {
      expect(find(what) ?? null).toBeNull();
    },
  };
}

/** The lab's lease is infinite (RFC 2131 0xffffffff): the address stays for the whole run, never "expires". */
function expectLeaseKept(m: Machine, ip: string): void {
  inLog(m.log).has(/lease (infinite|4294967295s)/);
  inLog(m.log).lacks(/lease .* expired|renewing \(T1\)|rebinding \(T2\)/);
  expect(m.address()).toBe(ip);
}

function portOpen(m: Machine, port: number): boolean {
  return m.exec(["bash", "-c", `exec 3<>/dev/tcp/127.0.0.1/${port}`], { ok: false }).code === 0;
}

interface Readiness {
  readyAt: number | null;
  firstOpen: number | null;
  closedAfterReady: number;
  openAtReady: boolean;
}

/** Waits for READY=1 on nspawn's NOTIFY_SOCKET while polling the app's port from the machine's netns. */
async function watchReady(m: Machine, l: NotifyListener, port: number | null, timeoutMs: number): Promise<Readiness> {
  const r: Readiness = { readyAt: null, firstOpen: null, closedAfterReady: 0, openAtReady: false };
  const end = performance.now() + timeoutMs;
  while (performance.now() < end && m.running) {
    const ready = l.messages.find((x) => /^READY=1$/m.test(x.text));
    if (port !== null && m.leader()) {
      const t = performance.now();
      const open = portOpen(m, port);
      if (open && r.firstOpen === null) r.firstOpen = t;
      if (!open && ready && ready.t < t) r.closedAfterReady++;
    }
    if (ready) {
      r.readyAt = ready.t;
      r.openAtReady = port === null ? true : portOpen(m, port);
      break;
    }
    await Bun.sleep(50);
  }
  return r;
}

/**
 * The durable record: `man8s agent status NAME` and <configs>/NAME/status.json. The agent writes the file
 * shortly after the report (it batches writes), so this waits up to 5 s for one with an exit in it.
 */
async function hostRecord(name: string): Promise<{ cli: { phase?: string; exit?: { code?: number; reason?: string } }; human: string; file: Record<string, any> | null }> {
  const f = `${configDir(name)}/status.json`;
  const read = () => (existsSync(f) ? JSON.parse(readFileSync(f, "utf8")) : null);
  const file = await waitFor("the durable record", () => (fileExitCode(read()) !== undefined ? read() : null), 5000).catch(() => read());
  return { cli: JSON.parse(cli("status", name, "--json")).container, human: cli("status", name), file };
}

function fileExitCode(f: Record<string, any> | null): number | undefined {
  return f?.exit?.code ?? f?.container?.exit?.code ?? f?.record?.exit?.code;
}

describe.skipIf(!haveTools)("real applications on the production path (issue 8)", () => {
  // ---------------------------------------------------------------- postgres 15
  const pg = { name: "m8r-pg", rootfs: "", run1: "", run2: "", data: "", ready1: null as Readiness | null, ready2: null as Readiness | null, rc: [] as number[], inside: "" };
  const PW = "m8r-secret";
  const psqlHost = (sql: string, ip: string) =>
    sh(lab.inNs(["chroot", pg.rootfs, "/usr/lib/postgresql/15/bin/psql", "-X", "-tA", `postgresql://postgres:${PW}@${ip}:5432/postgres`, "-c", sql]), { env: { PGCONNECT_TIMEOUT: "5" }, ok: false });

  test("postgres: installed with the defaults, initdb runs as postgres, READY=1 only once it accepts connections", async () => {
    pg.rootfs = unpack("postgres", pg.name);
    const inst = install("postgres", pg.name, pg.rootfs, ["--env", `POSTGRES_PASSWORD=${PW}`]);
    expect(inst.name).toBe(pg.name);
    const nsp = readFileSync(`${configDir(pg.name)}/container.nspawn`, "utf8");
    expect(nsp).toContain("PrivateUsers=pick");
    expect(nsp).toMatch(/^BindReadOnly=.*:\/man8s-init$/m);
    const l = new NotifyListener(`${lab.dir}/notify-pg1`);
    const m = Machine.start(lab, pg.name, pg.rootfs, settingsLink(pg.name), l.path);
    try {
      pg.ready1 = await watchReady(m, l, 5432, 90_000);
      pg.run1 = m.log;
      note(`postgres first start: READY=1 after ${pg.ready1.readyAt ? secs(pg.ready1.readyAt - m.startedAt) : "never"}, port open after ${pg.ready1.firstOpen ? secs(pg.ready1.firstOpen - m.startedAt) : "never"}`);
      if (!pg.ready1.readyAt) console.log(m.log);
      inLog(m.log).has("initdb as postgres (999:999)");
      inLog(m.log).has('The files belonging to this database system will be owned by user "postgres"');
      inLog(m.log).lacks("cannot be run as root");
      expect(pg.ready1.readyAt).not.toBeNull();
      expect(pg.ready1.openAtReady).toBe(true);
      expect(pg.ready1.closedAfterReady).toBe(0);
      // a connection over the lab bridge, with the image's own psql, from the lab's host namespace
      const ip = await waitFor("postgres's address", () => m.address(), 20_000);
      expect(psqlHost("select current_user", ip).out.trim()).toBe("postgres");
      expect(psqlHost("create table kept (v text); insert into kept values ('written before the stop')", ip).code).toBe(0);
      // inside: the server runs as postgres and its socket lives in the image's /var/run/postgresql
      const inside = m.exec(["/usr/lib/postgresql/15/bin/psql", "-X", "-tA", "-h", "/var/run/postgresql", "-U", "postgres", "-c", "select count(*) from kept"], { all: true, uid: 999, gid: 999, ok: false });
      pg.inside = inside.out + inside.err;
      expect(inside.out.trim()).toBe("1");
      const procs = m.credsOf("postgres");
      expect(procs.length).toBeGreaterThan(0);
      expect(procs.every((c) => c.uid === 999 && c.gid === 999)).toBe(true);
      const stat = m.exec(["stat", "-c", "%U:%G %a", "/var/run/postgresql"], { all: true });
      expect(stat.out.trim()).toBe("postgres:postgres 3777");
      expectLeaseKept(m, ip);
    } finally {
      l.close();
      const t0 = performance.now();
      pg.rc.push(await m.stop());
      debug(m);
      note(`postgres stop: nspawn rc ${pg.rc[0]} after ${secs(performance.now() - t0)}; ${/received fast shutdown request/.test(m.log) ? "postgres saw SIGINT (fast shutdown)" : "no fast shutdown line"}`);
      pg.run1 = m.log;
    }
    inLog(pg.run1).has("received fast shutdown request");
    inLog(pg.run1).has("database system is shut down");
  }, T);

  test("postgres: its data is in the PGDATA volume on the host, owned by the image's postgres uid through :idmap", () => {
    const src = bindSource(pg.name, "/var/lib/postgresql/data");
    expect(src).toBe(`${agent.root}/var/lib/man8machine_storage/${pg.name}/var/lib/postgresql/data`);
    pg.data = src!;
    const v = statSync(`${pg.data}/PG_VERSION`);
    expect(readFileSync(`${pg.data}/PG_VERSION`, "utf8").trim()).toBe("15");
    // on disk the owner is the uid that the idmapped bind maps to postgres (999) inside the container
    expect([v.uid, v.gid]).toEqual([999, 999]);
    expect(statSync(`${pg.data}/base`).uid).toBe(999);
    expect(statSync(pg.data).mode & 0o777).toBe(0o700);
    // and nothing of it went into the rootfs
    expect(existsSync(`${pg.rootfs}/var/lib/postgresql/data/PG_VERSION`)).toBe(false);
  }, T);

  test("postgres: the durable record on the host after the stop has exit code 0", async () => {
    const r = await hostRecord(pg.name);
    note(`postgres record after stop: phase ${r.cli.phase}, exit ${JSON.stringify(r.cli.exit)}; file ${r.file ? "present" : "absent"}`);
    expect(r.cli.phase).toBe("exited");
    expect(r.cli.exit?.code).toBe(0);
    expect(fileExitCode(r.file)).toBe(0);
  }, T);

  test("postgres: restarted, the row survives and the log shows a clean start (no crash recovery)", async () => {
    const l = new NotifyListener(`${lab.dir}/notify-pg2`);
    const m = Machine.start(lab, pg.name, pg.rootfs, settingsLink(pg.name), l.path);
    try {
      pg.ready2 = await watchReady(m, l, 5432, 60_000);
      note(`postgres second start: READY=1 after ${pg.ready2.readyAt ? secs(pg.ready2.readyAt - m.startedAt) : "never"}`);
      expect(pg.ready2.readyAt).not.toBeNull();
      const ip = await waitFor("postgres's address", () => m.address(), 20_000);
      expect(psqlHost("select v from kept", ip).out.trim()).toBe("written before the stop");
      inLog(m.log).lacks("initdb as");
      inLog(m.log).has("database system was shut down at");
      inLog(m.log).lacks(/database system was interrupted|redo starts|automatic recovery in progress|not properly shut down/);
    } finally {
      l.close();
      pg.rc.push(await m.stop());
      pg.run2 = m.log;
    }
    inLog(pg.run2).has("received fast shutdown request");
  }, T);

  // ---------------------------------------------------------------- busybox, User 1000:1000
  const bb = { name: "m8r-bb", rootfs: "", run1: "", run2: "", extra: "", rc: [] as number[], record: "" };

  let bbMachine: Machine | undefined;

  test("busybox: runs as 1000:1000 (as Docker: no supplementary groups with an explicit group) and sees its /run content", async () => {
    bb.rootfs = unpack("busybox", bb.name);
    install("busybox", bb.name, bb.rootfs);
    const m = (bbMachine = Machine.start(lab, bb.name, bb.rootfs, settingsLink(bb.name)));
    await waitFor("the app's output", () => m.log.includes("app: data=") || !m.running, 30_000).catch(() => {});
    bb.run1 = m.log;
    const idLine = /app: id=(.*)/.exec(m.log)?.[1]?.trim() ?? "";
    note(`busybox id: ${idLine || "(no output)"}`);
    // as Docker's `--user 1000:1000`: an explicit group replaces the primary one and adds no supplementary
    // groups (the name form below gets them from the image's /etc/group)
    expect(idLine).toBe("uid=1000(app) gid=1000(app) groups=1000(app)");
    inLog(m.log).has("app: home=/home/app");
    inLog(m.log).has("app: run=hello from the image's /run");
    inLog(m.log).has("app: runlink=greeting");
    inLog(m.log).has("app: greeting=image default");
  }, T);

  test("busybox: the status record is readable inside the container while it runs", async () => {
    const m = bbMachine!;
    const read = () => m.exec(["cat", "/run/man8s/status.json"], { all: true, ok: false });
    const rec = await waitFor("a running record in /run/man8s/status.json", () => (read().out.includes('"running"') ? read().out : false), 15_000).catch(() => read().out || read().err);
    bb.record = rec;
    const j = JSON.parse(rec);
    expect(j.phase).toBe("running");
    expect(j.app?.pid).toBeGreaterThan(0);
  }, T);

  test("busybox: stopped as systemd stops the unit, the app gets its SIGTERM", async () => {
    const m = bbMachine!;
    bb.rc.push(await m.stop());
    debug(m);
    bb.run1 = m.log;
    inLog(bb.run1).has("app: got SIGTERM");
  }, T);

  test("busybox: its /data volume is seeded from the image and written as uid 1000 on the host", () => {
    const src = bindSource(bb.name, "/data");
    expect(src).toBe(`${agent.root}/var/lib/man8machine_storage/${bb.name}/data`);
    expect(readFileSync(`${src}/seed`, "utf8")).toBe("seeded by the image\n");
    expect(statSync(`${src}/last-start`).uid).toBe(1000);
    inLog(bb.run1).has(/app: data=.*1000 +1000 .*last-start/);
  }, T);

  test("busybox: the host's record after the stop has the app's real exit code 42", async () => {
    const r = await hostRecord(bb.name);
    note(`busybox stop: nspawn rc ${bb.rc[0]}; record phase ${r.cli.phase}, exit ${JSON.stringify(r.cli.exit)}; file ${r.file ? `exit ${fileExitCode(r.file)}` : "absent"}`);
    expect(r.cli.phase).toBe("exited");
    expect(r.cli.exit?.code).toBe(42);
    expect(r.human).toContain("exit code 42");
    expect(fileExitCode(r.file)).toBe(42);
  }, T);

  test("busybox: a hand-added Bind= and changed env values survive install --force; the app sees them (User by name: the image's groups)", async () => {
    bb.extra = `${lab.dir}/extra-bb`;
    mkdirSync(bb.extra, { recursive: true });
    writeFileSync(`${bb.extra}/hello`, "from a hand-added bind\n");
    const nspPath = `${configDir(bb.name)}/container.nspawn`;
    const envPath = `${configDir(bb.name)}/man8env.env`;
    appendFileSync(nspPath, `Bind=${bb.extra}:/mnt/extra\n`);
    const env = readFileSync(envPath, "utf8");
    expect(env).toContain("GREETING=image default\n");
    expect(env).toContain("MAN8S_APPLICATION_USER=1000:1000\n");
    writeFileSync(envPath, env.replace("GREETING=image default\n", "GREETING=edited by hand\n").replace("MAN8S_APPLICATION_USER=1000:1000\n", "MAN8S_APPLICATION_USER=app\n"));
    const again = JSON.parse(cli("install", bb.name, "--json", "--force", "--rootfs", bb.rootfs, "--config", images.get("busybox")!.config, ...NET()));
    expect(again.replaced).toBe(true);
    expect(readFileSync(nspPath, "utf8")).toContain(`Bind=${bb.extra}:/mnt/extra`);
    expect(readFileSync(envPath, "utf8")).toContain("GREETING=edited by hand\n");
    expect(readFileSync(envPath, "utf8")).not.toContain("GREETING=image default");
    expect(readFileSync(envPath, "utf8")).toContain("MAN8S_APPLICATION_USER=app\n");
    expect(lstatSync(settingsLink(bb.name)).isSymbolicLink()).toBe(true);
    const m = Machine.start(lab, bb.name, bb.rootfs, settingsLink(bb.name));
    try {
      await waitFor("the app's output", () => m.log.includes("app: data=") || !m.running, 30_000).catch(() => {});
      inLog(m.log).has("app: greeting=edited by hand");
      // the name form: supplementary groups are the image's /etc/group entries listing "app"
      const idLine = /app: id=(.*)/.exec(m.log)?.[1]?.trim() ?? "";
      note(`busybox as User app: ${idLine}`);
      expect(idLine).toMatch(/^uid=1000\(app\) gid=1000\(app\) groups=/);
      const groups = idLine.replace(/^.*groups=/, "").split(",");
      expect(groups).toEqual(expect.arrayContaining(["1000(app)", "29(audio)", "2001(shared)"]));
      expect(groups.some((g) => g.startsWith("2002(") || g.startsWith("0("))).toBe(false);
      expect(m.exec(["cat", "/mnt/extra/hello"], { all: true, ok: false }).out).toBe("from a hand-added bind\n");
      // the volume kept what the first run wrote
      inLog(m.log).has(/app: data=.*last-start.*seed/);
    } finally {
      bb.rc.push(await m.stop());
      bb.run2 = m.log;
    }
  }, T);

  // ---------------------------------------------------------------- nginx
  const ng = { name: "m8r-nginx", rootfs: "", log: "", ready: null as Readiness | null, rc: -1, stopMs: 0 };

  test("nginx: READY=1 reaches nspawn's NOTIFY_SOCKET only after port 80 answers (a 2 s configuration step first)", async () => {
    ng.rootfs = unpack("nginx", ng.name);
    // as an /docker-entrypoint.d script of the official image would (templates, certificates): slow to start
    writeFileSync(`${ng.rootfs}/docker-entrypoint.d/10-slow-config.sh`, "#!/bin/sh\necho 'slow configuration step'\nsleep 2\n", { mode: 0o755 });
    install("nginx", ng.name, ng.rootfs);
    const env = readFileSync(`${configDir(ng.name)}/man8env.env`, "utf8");
    expect(env).toContain("MAN8S_HEALTHCHECK=");
    expect(readFileSync(`${configDir(ng.name)}/container.nspawn`, "utf8")).toMatch(/^NotifyReady=yes$/m);
    const l = new NotifyListener(`${lab.dir}/notify-ng`);
    const m = Machine.start(lab, ng.name, ng.rootfs, settingsLink(ng.name), l.path);
    try {
      ng.ready = await watchReady(m, l, 80, 60_000);
      note(`nginx: port 80 first seen open (50 ms poll) after ${ng.ready.firstOpen ? secs(ng.ready.firstOpen - m.startedAt) : "never"}, READY=1 after ${ng.ready.readyAt ? secs(ng.ready.readyAt - m.startedAt) : "never"}`);
      if (!ng.ready.readyAt) console.log(m.log);
      inLog(m.log).has("slow configuration step");
      expect(ng.ready.readyAt).not.toBeNull();
      expect(ng.ready.openAtReady).toBe(true);
      expect(ng.ready.closedAfterReady).toBe(0);
      expect(ng.ready.firstOpen).not.toBeNull();
      expect(ng.ready.readyAt!).toBeGreaterThanOrEqual(ng.ready.firstOpen! - 60);
      expect(ng.ready.readyAt! - m.startedAt).toBeGreaterThan(2000);
      const ip = await waitFor("nginx's address", () => m.address(), 20_000);
      // the image's own curl from the lab's host namespace (the host's busybox wget crashes on bookworm)
      const page = sh(lab.inNs(["chroot", ng.rootfs, "curl", "-fsS", "--max-time", "5", `http://${ip}/`]), { ok: false });
      expect(page.out).toContain("man8s real-apps nginx");
      expectLeaseKept(m, ip);
    } finally {
      l.close();
      const t0 = performance.now();
      ng.rc = await m.stop();
      ng.stopMs = performance.now() - t0;
      ng.log = m.log;
    }
    note(`nginx stop: nspawn rc ${ng.rc} after ${secs(ng.stopMs)}; ${/signal 3 \(SIGQUIT\) received/.test(ng.log) ? "nginx saw SIGQUIT (graceful)" : "no SIGQUIT line"}`);
    inLog(ng.log).has(/signal 3 \(SIGQUIT\) received/);
  }, T);

  test("nginx: the host's record after the stop has exit code 0", async () => {
    const r = await hostRecord(ng.name);
    note(`nginx record: phase ${r.cli.phase}, exit ${JSON.stringify(r.cli.exit)}`);
    expect(r.cli.exit?.code).toBe(0);
    expect(fileExitCode(r.file)).toBe(0);
  }, T);

  // ---------------------------------------------------------------- redis
  test("redis: runs as its User with /data as a volume and answers PING over the bridge; a 30-day health Interval runs no check", async () => {
    const name = "m8r-redis";
    const rootfs = unpack("redis", name);
    // a Healthcheck whose Interval (30 days, in ns as Docker writes it) is beyond 2^31-1 ms: no check may run now
    const hc = { Test: ["CMD-SHELL", "echo health-check-ran; redis-cli ping"], Interval: 30 * 86400 * 1e9, Retries: 3 };
    install("redis", name, rootfs, ["--env", `MAN8S_HEALTHCHECK=${JSON.stringify(hc)}`]);
    const l = new NotifyListener(`${lab.dir}/notify-redis`);
    const m = Machine.start(lab, name, rootfs, settingsLink(name), l.path);
    let rc = -1;
    try {
      const r = await watchReady(m, l, 6379, 60_000);
      note(`redis: READY=1 after ${r.readyAt ? secs(r.readyAt - m.startedAt) : "never"}`);
      const ip = await waitFor("redis's address", () => m.address(), 20_000);
      const pong = sh(lab.inNs(["chroot", rootfs, "redis-cli", "-h", ip, "ping"]), { ok: false });
      expect(pong.out.trim()).toBe("PONG");
      const redisUid = Number(readFileSync(`${rootfs}/etc/passwd`, "utf8").match(/^redis:x:(\d+):/m)?.[1]);
      const creds = m.credsOf("redis-server");
      expect(creds.length).toBeGreaterThan(0);
      expect(creds.every((c) => c.uid === redisUid)).toBe(true);
      await Bun.sleep(2000);
      const rec = JSON.parse(m.exec(["cat", "/run/man8s/status.json"], { all: true }).out);
      expect(rec.health).toMatchObject({ status: "starting", failingStreak: 0, log: [] });
      inLog(m.log).lacks("health-check-ran");
      expect(r.readyAt).not.toBeNull();
    } finally {
      l.close();
      rc = await m.stop();
      debug(m);
    }
    note(`redis stop: nspawn rc ${rc}; ${/Redis is now ready to exit/.test(m.log) ? "saved and exited cleanly" : "no clean-exit line"}`);
    inLog(m.log).has("ready to exit");
    expect(readdirSync(`${agent.root}/var/lib/man8machine_storage/${name}/data`)).toContain("dump.rdb");
  }, T);
});
