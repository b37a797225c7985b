// MAN8S_HEALTH_ON_FAILURE's actions reach the agent: the real init (a failing health check) reports each
// action over the real per-container report socket, and `man8s agent status` shows it (escaped; exact with
// --json). A hostile healthAction field is refused or bounded by the agent's validator.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import type { AgentClient } from "../../hostagent/client.ts";
import { sendReport } from "../../common/report-client.ts";
import type { ContainerStatus } from "../../hostagent/state.ts";
import { fixtures, releaseFixtures } from "./fixtures.ts";
import { type Agent, BIN, BUNDLE, client, startAgent, stopAgentAndClient, tmp } from "./helpers.ts";

const BB = "/bin/busybox";
const ns = (ms: number) => ms * 1_000_000;
/** fails from the start: unhealthy after Retries (2) failures, ~0.2-0.3 s in */
const FAILING = JSON.stringify({ Test: ["CMD", BB, "false"], Interval: ns(100), Timeout: ns(5000), Retries: 2 });
const NAMES = ["m8s-restart", "m8s-kill", "m8s-bad"];

let agent: Agent;
let c: AgentClient;
const sockOf = (name: string) => `${agent.root}/var/lib/man8machine_configs/${name}/agent/report.sock`;
const statusOf = async (name: string) => (await c.request<{ container: ContainerStatus }>("status", { name })).container;
const cli = (...args: string[]) => Bun.spawnSync([BIN, "agent", "--socket", agent.socket, ...args]).stdout.toString();

beforeAll(async () => {
  const image = (await fixtures()).get("busybox-app")!;
  agent = await startAgent();
  c = await client(agent.socket);
  for (const name of NAMES) await c.request("install", { name, rootfs: image.rootfs, configPath: image.imageConfig });
}, 60_000);
afterAll(async () => {
  await stopAgentAndClient(c, agent);
  releaseFixtures();
});

/** the real init (subreaper mode) reporting to `name`'s socket, with an app that exits 44 on SIGTERM */
function runInit(name: string, action: string) {
  const dir = tmp(name);
  writeFileSync(`${dir}/env`, `MAN8S_HEALTHCHECK=${FAILING}\nMAN8S_HEALTH_ON_FAILURE=${action}\nMAN8S_NETWORK=none\nMAN8S_STOP_TIMEOUT=10\n`);
  return Bun.spawn([`${BUNDLE}/init`, "--", BB, "sh", "-c", `trap 'exit 44' TERM; while :; do ${BB} sleep 1 & wait $!; done`], {
    env: { PATH: "/usr/bin:/bin", MAN8S_ENV_FILE: `${dir}/env`, MAN8S_STATUS_FILE: `${dir}/status.json`, MAN8S_REPORT_SOCKET: sockOf(name) },
    stdout: "ignore",
    stderr: "pipe",
  });
}

async function until(name: string, ok: (s: ContainerStatus) => boolean, ms = 10_000): Promise<ContainerStatus> {
  const t = Date.now();
  let s = await statusOf(name);
  while (!ok(s) && Date.now() - t < ms) {
    await Bun.sleep(50);
    s = await statusOf(name);
  }
  return s;
}

describe.skipIf(process.getuid?.() !== 0)("the health action in the agent's status", () => {
  test("restart: each restart is counted in the report and shown by `man8s agent status`", async () => {
    const init = runInit("m8s-restart", "restart");
    try {
      // unhealthy ~0.3 s, restart after 1 s; unhealthy again, restart after 2 s
      const s = await until("m8s-restart", (x) => (x.healthAction?.restarts ?? 0) >= 2, 12_000);
      expect(s.healthAction).toMatchObject({ policy: "restart", restarts: 2, last: "restart", lastDelayMs: 2000 });
      expect(Date.parse(s.healthAction!.at!)).toBeGreaterThan(Date.now() - 10_000);
      const json = JSON.parse(cli("--json", "status", "m8s-restart"));
      expect(json.container.healthAction).toEqual(s.healthAction);
      expect(cli("status", "m8s-restart")).toContain(`on unhealthy restart (2 restarts, last restart at ${s.healthAction!.at})`);
    } finally {
      init.kill("SIGTERM");
    }
    expect(await init.exited).toBe(44);
    const end = await until("m8s-restart", (x) => x.phase === "exited");
    expect(end.exit?.code).toBe(44);
    expect(end.healthAction?.restarts).toBeGreaterThanOrEqual(2);
  }, 30_000);

  test("kill: the action and the exit 79 are both in the agent's record", async () => {
    const init = runInit("m8s-kill", "kill");
    expect(await Promise.race([init.exited, Bun.sleep(10_000).then(() => "timeout")])).toBe(79);
    const s = await until("m8s-kill", (x) => x.phase === "exited");
    expect(s.exit?.code).toBe(79);
    expect(s.healthAction).toMatchObject({ policy: "kill", restarts: 0, last: "kill" });
    expect(typeof s.healthAction?.at).toBe("string");
    expect(cli("status", "m8s-kill")).toMatch(/on unhealthy kill \(acts once, last kill at \S+\)/);
  }, 20_000);

  test("hostile healthAction: refused or bounded; the text is escaped, --json exact", async () => {
    const sock = sockOf("m8s-bad");
    const good = { policy: "stop", restarts: 0, last: null, at: null };
    for (const bad of [
      { ...good, policy: "reboot" },
      { ...good, restarts: -1 },
      { ...good, restarts: 1e12 },
      { ...good, restarts: 1.5 },
      { ...good, last: "none" },
      { ...good, at: "x".repeat(41) },
      { ...good, at: 5 },
      { ...good, lastDelayMs: "1" },
      "restart",
      [good],
    ]) {
      expect(await sendReport(sock, { phase: "running", healthAction: bad as never }, 1000)).toBe(false);
    }
    expect((await statusOf("m8s-bad")).healthAction).toBeUndefined();
    const at = "\x1b[31m\u202eevil\n";
    expect(await sendReport(sock, { phase: "running", healthAction: { policy: "stop", restarts: 3, last: "stop", at } }, 1000)).toBe(true);
    expect(JSON.parse(cli("--json", "status", "m8s-bad")).container.healthAction).toEqual({ policy: "stop", restarts: 3, last: "stop", at });
    const human = cli("status", "m8s-bad");
    expect(human).toContain("last stop at \\x1b[31m\\u202eevil\\n)");
    expect(human).not.toContain("\x1b");
  }, 20_000);
});
