// End to end: an OCI image built with umoci (busybox-static app), classified, rendered, injected and
// installed by the agent into a temporary root, then run under real systemd-nspawn with the rendered
// .nspawn file; the init reports to the agent and `man8s agent status` shows it running, then stopped.
// The second test needs the init to call common/report-client.ts (see docs/hostagent.md).
import { afterAll, describe, expect, test } from "bun:test";
import { decode, encode } from "@msgpack/msgpack";
import { chmodSync, mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from "node:fs";
import type { ContainerStatus, StateEvent } from "../../hostagent/state.ts";
import { imageConfigBlob } from "./fixtures.ts";
import { BIN, cleanup, client, startAgent, tmp } from "./helpers.ts";

afterAll(cleanup);

function run(argv: string[]): string {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")} → ${r.exitCode}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

const APP = `#!/bin/sh
echo "app-started pid=$$ stop=$MAN8S_STOP_SIGNAL greeting=$GREETING"
test -S "$MAN8S_REPORT_SOCKET" && echo report-socket-bound
sleep 2
echo app-done
exit 7
`;

/** What the container run saw; the status test asserts on it (it needs the init's reports). */
const seen: { name: string; rc: unknown; sawRunning: ContainerStatus | null; final: ContainerStatus | null; human: string; events: StateEvent[]; afterRestart: ContainerStatus | null; humanAfterRestart: string } = {
  name: "", rc: null, sawRunning: null, final: null, human: "", events: [], afterRestart: null, humanAfterRestart: "",
};

describe("end to end under systemd-nspawn", () => {
  test("umoci image → classify → inject → install → runs under nspawn with the rendered files, exit 7", async () => {
    const dir = tmp("e2e");
    const name = `m8a-e2e-${process.pid}`;
    // 1. the image
    const layout = `${dir}/layout`;
    run(["umoci", "init", "--layout", layout]);
    run(["umoci", "new", "--image", `${layout}:app`]);
    run(["umoci", "unpack", "--image", `${layout}:app`, `${dir}/work`]);
    const r0 = `${dir}/work/rootfs`;
    for (const d of ["bin", "usr", "etc", "tmp"]) mkdirSync(`${r0}/${d}`, { recursive: true });
    run(["cp", "/bin/busybox", `${r0}/bin/busybox`]);
    for (const a of ["sh", "sleep", "echo"]) symlinkSync("busybox", `${r0}/bin/${a}`);
    writeFileSync(`${r0}/app.sh`, APP);
    chmodSync(`${r0}/app.sh`, 0o755);
    run(["umoci", "repack", "--image", `${layout}:app`, `${dir}/work`]);
    run(["umoci", "config", "--image", `${layout}:app`, "--config.entrypoint=/app.sh", "--config.stopsignal=SIGINT", "--config.env=GREETING=hi there"]);
    run(["umoci", "unpack", "--image", `${layout}:app`, `${dir}/bundle`]);
    mkdirSync(`${dir}/machines`);
    const rootfs = `${dir}/machines/${name}`;
    renameSync(`${dir}/bundle/rootfs`, rootfs);

    // 2. the agent, through its CLI
    const agent = await startAgent({ root: `${dir}/root` });
    const cli = (...args: string[]) => run([BIN, "agent", "--socket", agent.socket, ...args]);
    const cls = JSON.parse(cli("classify", "--json", "--rootfs", rootfs, "--config", imageConfigBlob(layout, "app")));
    expect(cls).toMatchObject({ kind: "script-noexec", processTwo: true, killSignal: "SIGRTMIN+3", stopSignal: "SIGINT" });
    cli("inject", "--rootfs", rootfs, "--copy");
    const inst = JSON.parse(
      cli("install", name, "--json", "--rootfs", rootfs, "--config", imageConfigBlob(layout, "app"), "--private-network", "--no-private-users", "--bundle-mode", "copy", "--env", "MAN8S_NETWORK=none", "--stop-timeout", "5"),
    );
    expect(inst.files.length).toBe(2);
    // nspawn reads <machine>.nspawn from the directory holding the rootfs when --settings=trusted
    symlinkSync(`${agent.root}/var/lib/man8machine_configs/${name}/container.nspawn`, `${dir}/machines/${name}.nspawn`);

    const watcher = await client(agent.socket);
    const events: StateEvent[] = [];
    watcher.eventHandler = (_id, e) => events.push(e as StateEvent);
    await watcher.request("watch", { name });

    // 3. the container
    const nspawn = Bun.spawn(["systemd-nspawn", "--register=no", "--keep-unit", "-q", "--settings=trusted", "-D", rootfs, "--console=pipe"], {
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, SYSTEMD_LOG_LEVEL: "warning" },
    });
    let sawRunning: ContainerStatus | null = null;
    const t0 = Date.now();
    while (Date.now() - t0 < 15_000 && nspawn.exitCode === null) {
      const s = JSON.parse(cli("status", name, "--json")).container as ContainerStatus;
      if (s.phase === "running") {
        sawRunning = s;
        break;
      }
      await Bun.sleep(50);
    }
    const rc = await Promise.race([nspawn.exited, Bun.sleep(20_000).then(() => "timeout" as const)]);
    if (rc === "timeout") nspawn.kill("SIGKILL");
    const out = await new Response(nspawn.stdout).text();
    const err = await new Response(nspawn.stderr).text();
    if (rc !== 7) console.log(`nspawn rc ${String(rc)}\nstdout:\n${out}\nstderr:\n${err}`);
    expect(out).toContain("app-started");
    expect(out).toContain("stop=SIGINT greeting=hi there");
    expect(out).toContain("report-socket-bound");
    expect(rc).toBe(7);
    Object.assign(seen, {
      name, rc, sawRunning, events,
      final: JSON.parse(cli("status", name, "--json")).container as ContainerStatus,
      human: cli("status", name),
    });
    watcher.close();
    await agent.stop();
    // the durable record: in the container's config directory after the stop, and shown by a new agent
    // whose state directory is empty (another socket directory, as after a reboot)
    const durable = JSON.parse(readFileSync(`${agent.root}/var/lib/man8machine_configs/${name}/status.json`, "utf8")) as ContainerStatus;
    expect([durable.name, durable.phase, durable.exit?.code, durable.exit?.reason]).toEqual([name, "exited", 7, seen.final!.exit!.reason]);
    const again = await startAgent({ root: agent.root });
    const after = JSON.parse(run([BIN, "agent", "--socket", again.socket, "status", name, "--json"])).container as ContainerStatus;
    Object.assign(seen, { afterRestart: after, humanAfterRestart: run([BIN, "agent", "--socket", again.socket, "status", name]) });
    await again.stop();
  }, 60_000);

  test("the init's reports: `man8s agent status` showed it running, then exited with the app's code 7", () => {
    expect(seen.rc).toBe(7);
    expect(seen.sawRunning?.appPid).toBeGreaterThan(0);
    expect(seen.final?.phase).toBe("exited");
    expect(seen.final?.exit?.code).toBe(7);
    expect(seen.human).toContain(`${seen.name}: exited`);
    expect(seen.human).toContain("exit code 7");
    expect(seen.events.map((e) => e.phase)).toContain("running");
    expect(seen.events.at(-1)?.phase).toBe("exited");
  });

  test("the durable record: after the stop and an agent restart, `man8s agent status` shows the exit code and reason", () => {
    expect(seen.afterRestart).toMatchObject({ name: seen.name, installed: true, phase: "exited", exit: { code: 7 } });
    expect(seen.afterRestart?.exit?.reason).toBeTruthy();
    expect(seen.humanAfterRestart).toContain(`${seen.name}: exited`);
    expect(seen.humanAfterRestart).toContain("exit code 7");
  });

  // Independent of the init: a tiny static client run as the container's command (PID 2 under the stub,
  // private users on) talks to the report socket that the rendered .nspawn bound into the container.
  test("from inside a user-namespaced container: report about itself works, anything else is refused", async () => {
    const dir = tmp("e2e-rep");
    const name = `m8a-rep-${process.pid}`;
    const layout = `${dir}/layout`;
    run(["umoci", "init", "--layout", layout]);
    run(["umoci", "new", "--image", `${layout}:rep`]);
    run(["umoci", "unpack", "--image", `${layout}:rep`, `${dir}/work`]);
    const r0 = `${dir}/work/rootfs`;
    for (const d of ["bin", "usr", "etc"]) mkdirSync(`${r0}/${d}`, { recursive: true });
    run(["cp", "/bin/busybox", `${r0}/bin/busybox`]);
    symlinkSync("busybox", `${r0}/bin/sh`);
    symlinkSync("busybox", `${r0}/bin/cat`);
    run(["musl-gcc", "-static", "-Os", "-o", `${r0}/reporter`, `${import.meta.dir}/reporter.c`]);
    run(["umoci", "repack", "--image", `${layout}:rep`, `${dir}/work`]);
    // values nspawn's Environment= must carry exactly: backslash, %, $, spaces, a double quote
    run(["umoci", "config", "--image", `${layout}:rep`, "--config.cmd=/reporter", '--config.env=LANG=a\\b %n $X "q"', "--config.env=HOME=/home/with space\\x"]);
    run(["umoci", "unpack", "--image", `${layout}:rep`, `${dir}/bundle`]);
    mkdirSync(`${dir}/machines`);
    const rootfs = `${dir}/machines/${name}`;
    renameSync(`${dir}/bundle/rootfs`, rootfs);
    const agent = await startAgent({ root: `${dir}/root` });
    const k = await client(agent.socket);
    await k.request("inject", { rootfs, mode: "bind" });
    await k.request("install", { name, rootfs, configPath: imageConfigBlob(layout, "rep"), privateNetwork: true, privateUsers: true });
    await k.request("install", { name: `${name}-other`, rootfs, configPath: imageConfigBlob(layout, "rep"), privateNetwork: true });
    symlinkSync(`${agent.root}/var/lib/man8machine_configs/${name}/container.nspawn`, `${dir}/machines/${name}.nspawn`);
    const hex = (v: unknown) => Buffer.from(encode(v)).toString("hex");
    const sock = "/run/man8s-agent/report.sock";
    const script = [
      `/reporter ${sock} ${hex({ id: 1, cmd: "report", args: { phase: "running", appPid: 99, message: "from inside" } })}`,
      `/reporter ${sock} ${hex({ id: 2, cmd: "report", args: { name: `${name}-other`, phase: "failed" } })}`,
      `/reporter ${sock} ${hex({ id: 3, cmd: "ping" })}`,
      `/reporter ${sock} ${hex({ id: 4, cmd: "install", args: { name: "x" } })}`,
      "echo UIDMAP $(cat /proc/self/uid_map)",
      'echo "ENV [$LANG] [$HOME]"',
      "test -x /man8s-init/init && test -L /man8s-init/00-init.sh && echo BUNDLE-BOUND",
    ].join("; ");
    // the command line overrides Parameters=; everything else (binds, ProcessTwo, users) comes from the file
    const nspawn = Bun.spawnSync(["systemd-nspawn", "--register=no", "--keep-unit", "-q", "--settings=trusted", "-D", rootfs, "--console=pipe", "/bin/sh", "-c", script], {
      stdout: "pipe",
      stderr: "pipe",
      timeout: 30_000,
    });
    const out = nspawn.stdout.toString();
    if (nspawn.exitCode !== 0) console.log(out, nspawn.stderr.toString());
    expect(nspawn.exitCode).toBe(0);
    const replies = out.split("\n").filter((l) => l.startsWith("REPLY ")).map((l) => {
      const [, uid, , payload] = l.split(" ");
      return { uid, reply: decode(Buffer.from(payload!, "hex")) as { id: number; ok: boolean; error?: { code: string } } };
    });
    expect(replies.length).toBe(4);
    expect(replies[0]!.uid).toBe("uid=0"); // root inside, a mapped uid on the host:
    expect(out).toContain('ENV [a\\b %n $X "q"] [/home/with space\\x]');
    expect(out).toContain("BUNDLE-BOUND"); // the host bundle, bound read-only (render's default bundleMode)
    const map = /UIDMAP (\d+) (\d+) (\d+)/.exec(out)!;
    expect([map[1], Number(map[2]) > 0]).toEqual(["0", true]);
    expect(replies.map((r) => [r.reply.id, r.reply.ok ? "ok" : r.reply.error!.code])).toEqual([[1, "ok"], [2, "E_FORBIDDEN"], [3, "E_FORBIDDEN"], [4, "E_FORBIDDEN"]]);
    const me = (await k.request<{ container: ContainerStatus }>("status", { name })).container;
    expect(me).toMatchObject({ phase: "running", appPid: 99, message: "from inside" });
    const other = (await k.request<{ container: ContainerStatus }>("status", { name: `${name}-other` })).container;
    expect(other.phase).toBe("unknown");
    k.close();
    await agent.stop();
  }, 60_000);
});
