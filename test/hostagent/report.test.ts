// Containers report through their own socket: the socket names the container, so a container can only
// report about itself and can call nothing else. status and watch show what was reported.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync } from "node:fs";
import type { AgentClient } from "../../hostagent/client.ts";
import { encodeFrame } from "../../hostagent/protocol.ts";
import { Reporter, type ReportRecord, reportFromStatus, sendReport } from "../../common/report-client.ts";
import { newRecord } from "../../init/status.ts";
import type { ContainerStatus, StateEvent } from "../../hostagent/state.ts";
import { fixtures, releaseFixtures } from "./fixtures.ts";
import { type Agent, BIN, client, startAgent, tmp, stopAgentAndClient } from "./helpers.ts";
import { Raw } from "./raw.ts";
import { waitFor } from "../wait.ts";

let agent: Agent;
let c: AgentClient;
const sockOf = (name: string) => `${agent.root}/var/lib/man8machine_configs/${name}/agent/report.sock`;

beforeAll(async () => {
  const fx = await fixtures();
  agent = await startAgent();
  c = await client(agent.socket);
  const f = fx.get("busybox-app")!;
  for (const name of ["alpha", "beta"]) await c.request("install", { name, rootfs: f.rootfs, configPath: f.imageConfig });
}, 60_000);
afterAll(async () => {
  await stopAgentAndClient(c, agent);
  releaseFixtures();
});

describe("report socket", () => {
  test("reports update status; watch streams the changes in order", async () => {
    const w = await client(agent.socket);
    const events: StateEvent[] = [];
    w.eventHandler = (_id, e) => events.push(e as StateEvent);
    const ack = await w.request<{ watching: string }>("watch", { name: "alpha" });
    expect(ack.watching).toBe("alpha");
    expect(await sendReport(sockOf("alpha"), { phase: "starting", initPid: 2, pid1: false })).toBe(true);
    expect(await sendReport(sockOf("alpha"), { phase: "running", appPid: 42, addresses: { yggdrasil: "300::1", ipv4: ["10.0.0.2"] }, health: "starting" })).toBe(true);
    expect(await sendReport(sockOf("beta"), { phase: "running", appPid: 7 })).toBe(true);
    let s = (await c.request<{ container: ContainerStatus }>("status", { name: "alpha" })).container;
    expect(s).toMatchObject({ name: "alpha", installed: true, phase: "running", appPid: 42, initPid: 2, health: "starting", addresses: { yggdrasil: "300::1", ipv4: ["10.0.0.2"] } });
    // the reporter's host pid comes from the socket's peer credentials, not from the record
    expect([s.hostPid, s.initAlive]).toEqual([process.pid, true]);
    expect(await sendReport(sockOf("alpha"), { phase: "exited", exit: { code: 3, reason: "app exited" } })).toBe(true);
    s = (await c.request<{ container: ContainerStatus }>("status", { name: "alpha" })).container;
    expect(s.phase).toBe("exited");
    expect(s.exit).toEqual({ code: 3, reason: "app exited" });
    expect(s.history.map((h) => h.phase)).toEqual(["starting", "running", "exited"]);
    // beta's report never touched alpha, and the watcher on alpha never saw beta
    expect((await c.request<{ container: ContainerStatus }>("status", { name: "beta" })).container).toMatchObject({ phase: "running", appPid: 7 });
    await waitFor("the watcher's third event", () => events.length >= 3, 5000, 10);
    expect(events.map((e) => [e.name, e.phase])).toEqual([["alpha", "starting"], ["alpha", "running"], ["alpha", "exited"]]);
    // a new run clears the previous run's fields
    await sendReport(sockOf("alpha"), { phase: "starting" });
    s = (await c.request<{ container: ContainerStatus }>("status", { name: "alpha" })).container;
    expect(s.exit).toBeUndefined();
    expect(s.appPid).toBeUndefined();
    const all = await c.request<{ containers: ContainerStatus[] }>("status");
    expect(all.containers.map((x) => x.name)).toEqual(["alpha", "beta"]);
    w.close();
    // the CLI shows the same
    const cli = Bun.spawnSync([BIN, "agent", "--socket", agent.socket, "status", "beta"]);
    expect(cli.stdout.toString()).toContain("beta: running, app pid 7");
  });

  test("an init that vanished without an exit report is shown as gone", async () => {
    const child = Bun.spawn([process.execPath, "-e", `import { sendReport } from "${import.meta.dir}/../../common/report-client.ts"; process.exit((await sendReport(process.argv[1], { phase: "running", appPid: 5 })) ? 0 : 1)`, sockOf("beta")]);
    expect(await child.exited).toBe(0);
    const s = (await c.request<{ container: ContainerStatus }>("status", { name: "beta" })).container;
    expect([s.phase, s.hostPid, s.initAlive]).toEqual(["running", child.pid, false]);
    const cli = Bun.spawnSync([BIN, "agent", "--socket", agent.socket, "status", "beta"]);
    expect(cli.stdout.toString()).toContain("beta: running (its init is gone without an exit report)");
    expect(await sendReport(sockOf("beta"), { phase: "running", appPid: 7 })).toBe(true);
  });

  test("a container can neither speak for another nor call any other command", async () => {
    const r = await Raw.connect(sockOf("alpha"));
    r.write(encodeFrame({ id: 1, cmd: "report", args: { name: "beta", phase: "failed" } }));
    r.write(encodeFrame({ id: 2, cmd: "ping" }));
    r.write(encodeFrame({ id: 3, cmd: "install", args: { name: "evil" } }));
    r.write(encodeFrame({ id: 4, cmd: "status" }));
    r.write(encodeFrame({ id: 5, cmd: "report", args: { phase: "dancing" } }));
    r.write(encodeFrame({ id: 6, cmd: "report", args: { phase: "running", appPid: "7" } }));
    r.write(encodeFrame({ id: 7, cmd: "report", args: { name: "alpha", phase: "running" } }));
    await r.waitFrames(7);
    expect(r.frames.map((f) => [f.id, f.ok ? "ok" : (f.error as { code: string }).code])).toEqual([
      [1, "E_FORBIDDEN"], [2, "E_FORBIDDEN"], [3, "E_FORBIDDEN"], [4, "E_FORBIDDEN"], [5, "E_BAD_ARGS"], [6, "E_BAD_ARGS"], [7, "ok"],
    ]);
    r.end();
    expect((await c.request<{ container: ContainerStatus }>("status", { name: "beta" })).container.phase).toBe("running");
    // and report is refused on the admin socket
    await expect(c.request("report", { phase: "running" })).rejects.toMatchObject({ code: "E_FORBIDDEN" });
  });

  test("a non-root process of the host's own pid namespace may not report", async () => {
    // the agent keeps the config directory root's alone (harden.test.ts); opened here to test the peer check
    chmodSync(agent.root.replace(/\/root$/, ""), 0o755);
    chmodSync(`${agent.root}/var/lib/man8machine_configs/beta`, 0o755);
    const py = Bun.spawnSync([
      "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c",
      "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); sys.stdout.buffer.write(s.recv(4096))",
      sockOf("beta"),
    ]);
    expect(py.exitCode).toBe(0);
    expect(py.stdout.toString()).toContain("E_FORBIDDEN");
    expect(py.stdout.toString()).toContain("uid 65534 on the host");
    chmodSync(`${agent.root}/var/lib/man8machine_configs/beta`, 0o700);
  });

  test("Reporter: the init's own status records, in order, never blocking; flush gets the exit out", async () => {
    const rec = newRecord("pid2");
    const rep = new Reporter(sockOf("alpha"));
    const seen: string[] = [];
    const w = await client(agent.socket);
    w.eventHandler = (_id, e) => seen.push((e as StateEvent).phase);
    await w.request("watch", { name: "alpha" });
    const t = performance.now();
    for (const phase of ["signals", "env", "network", "app", "running"] as const) {
      rec.phase = phase;
      if (phase === "network") rec.network = { iface: "host0", addresses: { ipv4: "10.1.0.5", yggdrasil: "300::5" } };
      if (phase === "running") rec.app = { argv: ["/bin/x"], pid: 31, startedAt: "", group: false, startedAfterMs: 1 };
      rep.send(reportFromStatus(rec));
    }
    expect(performance.now() - t).toBeLessThan(20); // send() never waits for the agent
    await rep.flush(500);
    let s = (await c.request<{ container: ContainerStatus }>("status", { name: "alpha" })).container;
    expect(s).toMatchObject({ phase: "running", appPid: 31, initPid: rec.pid, pid1: false, addresses: { ipv4: "10.1.0.5", yggdrasil: "300::5" } });
    expect(s.ready).toBeUndefined();
    // the app turns ready (MAN8S_READY): the report says so, for units the agent does not run itself
    rec.ready = { via: "start", status: "app started", afterMs: 1, at: Date.now(), attempts: 1 };
    rep.send(reportFromStatus(rec));
    await rep.flush(500);
    s = (await c.request<{ container: ContainerStatus }>("status", { name: "alpha" })).container;
    expect(s.ready).toBe(true);
    // a ready that is not a boolean is refused whole
    expect(await sendReport(sockOf("alpha"), { phase: "running", ready: "yes" } as unknown as ReportRecord)).toBe(false);
    rec.phase = "exited";
    rec.exit = { code: 143, reason: "app killed by SIGTERM", app: { code: null, signal: "SIGTERM" }, killedAfterTimeout: false, drained: 0, orphansReaped: 0, at: "" };
    rep.send(reportFromStatus(rec));
    await rep.flush();
    s = (await c.request<{ container: ContainerStatus }>("status", { name: "alpha" })).container;
    expect(s.exit).toEqual({ code: 143, reason: "app killed by SIGTERM", signal: "SIGTERM" });
    // first and last always arrive, in order; intermediate snapshots may be coalesced
    await waitFor("the watcher to see exited", () => seen.at(-1) === "exited", 5000, 10);
    expect(seen[0]).toBe("signals");
    expect(seen.at(-1)).toBe("exited");
    expect(seen.indexOf("running")).toBeGreaterThan(0);
    expect(rep.failed).toBe(0);
    w.close();
    // nothing listening: send and flush still return promptly
    const none = new Reporter(`${tmp("norep")}/report.sock`);
    none.send({ phase: "running" });
    const t2 = performance.now();
    await none.flush();
    expect(performance.now() - t2).toBeLessThan(150);
  });

  test("sendReport is best effort: false, never a throw, within its time budget", async () => {
    const dir = tmp("rc");
    let t = performance.now();
    expect(await sendReport(`${dir}/missing.sock`, { phase: "running" })).toBe(false);
    // a listener that accepts and never answers
    const silent = Bun.listen({ unix: `${dir}/silent.sock`, socket: { data() {} } });
    t = performance.now();
    expect(await sendReport(`${dir}/silent.sock`, { phase: "running" })).toBe(false);
    const took = performance.now() - t;
    expect(took).toBeGreaterThanOrEqual(45);
    expect(took).toBeLessThan(250);
    silent.stop(true);
    // a stale socket file with nobody behind it
    t = performance.now();
    expect(await sendReport(`${dir}/silent.sock`, { phase: "running" })).toBe(false);
    expect(performance.now() - t).toBeLessThan(250);
    // a record the agent refuses is not an exception either
    expect(await sendReport(sockOf("beta"), { phase: "bogus" } as never)).toBe(false);
  });
});
