// The production path with the agent's default settings (PrivateUsers=pick, :idmap binds, the bundle bound
// read-only) and nspawn started exactly as systemd-nspawn@.service starts a machine: the settings file in
// /run/systemd/nspawn/ (trusted, like /etc/systemd/nspawn/), read with --settings=override, so the file's
// Boot=no, PrivateUsers=pick and Private=yes win over the unit's --boot and -U. The image is the umoci
// user-app fixture (USER app = 1000, VOLUME /data owned by 1000, /run/app content, EXPOSE 8080).
// Asserted from inside: the image's user writes the Volume bind, /run content came back with its owners,
// the status record is writable (/run/man8s is the init's, not nspawn's), the report socket is bound at
// /run/man8s-agent; from outside: READY=1 reaches nspawn's NOTIFY_SOCKET only after port 8080 opens
// (MAN8S_READY defaulted to tcp://127.0.0.1:8080), and the data is on the host, owned by the mapped uid 1000.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { NotifyListener } from "../probes/helpers.ts";
import { fixtures, releaseFixtures, type Fixture } from "./fixtures.ts";
import { type Agent, client, startAgent, stopAgentAndClient, tmp } from "./helpers.ts";
import type { AgentClient } from "../../hostagent/client.ts";

const canRun = process.getuid?.() === 0 && Bun.which("systemd-nspawn") !== null;
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

// runs as whatever user the init gives it: as root it drops to the image's user itself (su), so the bind
// is proven writable by uid 1000 either way
const APP = `#!/bin/sh
echo "APP-ID $(id -u):$(id -g)"
if [ "$(id -u)" = 0 ]; then
  su -s /bin/sh app -c 'echo "$(id -u):$(id -g)" > /data/written-by-app' && echo WRITE-DONE
else
  echo "$(id -u):$(id -g)" > /data/written-by-app && echo WRITE-DONE
fi
echo "RUN $(cat /run/app/marker) $(stat -c %u:%g:%a /run/app/marker) $(stat -c %u:%g:%a /run/app) $(readlink /run/app/link)"
echo "VARRUN $(cat /var/run/app/marker)"
echo "TMP $(cat /tmp/keep.txt)"
echo "DATA $(stat -c %u:%g:%a /data) $(cat /data/seed.txt)"
test -s /run/man8s/status.json && echo STATUS-RECORD-WRITTEN
test -S /run/man8s-agent/report.sock && echo REPORT-SOCKET-BOUND
sleep 1
touch /data/port-opening
nc -l -p 8080 >/dev/null &
sleep 3
kill $! 2>/dev/null
exit 0
`;

describe("nspawn as systemd-nspawn@.service runs it, agent defaults", () => {
  test.skipIf(!canRun)("Volume bind writable by the image's user, /run content restored, status record written, READY=1 after the port opens", async () => {
    const dir = tmp("nsp");
    const name = `m8g-${process.pid}`;
    const rootfs = `${dir}/machines/${name}`;
    mkdirSync(`${dir}/machines`);
    expect(Bun.spawnSync(["cp", "-a", fx.get("user-app")!.rootfs, rootfs]).exitCode).toBe(0);
    writeFileSync(`${rootfs}/app.sh`, APP);
    chmodSync(`${rootfs}/app.sh`, 0o755);
    for (const a of ["nc", "readlink"]) symlinkSync("busybox", `${rootfs}/bin/${a}`);
    const cfg = JSON.parse(readFileSync(fx.get("user-app")!.imageConfig, "utf8"));
    cfg.config.Entrypoint = ["/app.sh"];
    cfg.config.Cmd = null;

    await c.request("inject", { rootfs, mode: "bind" });
    // defaults: private users, idmap, bundle bound; no bridge of ours here, so a private network
    const inst = await c.request<{ files: string[]; ready: { value: string } }>("install", { name, rootfs, config: cfg, privateNetwork: true });
    expect(inst.ready.value).toBe("tcp://127.0.0.1:8080");
    const settings = `/run/systemd/nspawn/${name}.nspawn`;
    mkdirSync("/run/systemd/nspawn", { recursive: true });
    symlinkSync(`${agent.root}/var/lib/man8machine_configs/${name}/container.nspawn`, settings);
    const listener = new NotifyListener(`${dir}/notify.sock`);
    const storage = `${agent.root}/var/lib/man8machine_storage/${name}/data`;
    try {
      const nspawn = Bun.spawn(
        ["systemd-nspawn", "--quiet", "--keep-unit", "--boot", "--link-journal=try-guest", "-U", "--settings=override", `--machine=${name}`, "--register=no", "-D", rootfs],
        { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, NOTIFY_SOCKET: `${dir}/notify.sock`, SYSTEMD_LOG_LEVEL: "warning" } },
      );
      const ready = await listener.waitFor((m) => m.text.split("\n").includes("READY=1"), 20_000);
      const portOpenedBeforeReady = existsSync(`${storage}/port-opening`);
      const rc = await Promise.race([nspawn.exited, Bun.sleep(30_000).then(() => "timeout" as const)]);
      if (rc === "timeout") nspawn.kill("SIGKILL");
      const out = await new Response(nspawn.stdout).text();
      const err = await new Response(nspawn.stderr).text();
      if (rc !== 0) console.log(`nspawn rc ${String(rc)}\n${out}\n${err}`);
      expect(rc).toBe(0);
      expect(out).toContain("WRITE-DONE");
      expect(out).toContain("RUN image-run-content 1000:1000:640 1000:1000:750 marker");
      expect(out).toContain("VARRUN image-run-content");
      expect(out).toContain("TMP tmp-content");
      expect(out).toContain("DATA 1000:1000:700 seeded-from-image");
      expect(out).toContain("STATUS-RECORD-WRITTEN");
      expect(out).toContain("REPORT-SOCKET-BOUND");
      // on the host: written by uid 1000 inside, stored as uid 1000 (idmap maps it back), in the storage dir
      expect(readFileSync(`${storage}/written-by-app`, "utf8")).toBe("1000:1000\n");
      expect([statSync(`${storage}/written-by-app`).uid, statSync(`${storage}/written-by-app`).gid]).toEqual([1000, 1000]);
      // readiness: nspawn forwarded READY=1, and only once the app was opening its port
      expect(ready).not.toBeNull();
      expect(portOpenedBeforeReady).toBe(true);
    } finally {
      listener.close();
      rmSync(settings, { force: true });
    }
  }, 90_000);
});
