// --health-on-failure: the agent renders MAN8S_HEALTH_ON_FAILURE into the env file, and refuses a value
// the init would refuse (so a container is never installed to exit 65).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import type { AgentClient } from "../../hostagent/client.ts";
import { fixtures, releaseFixtures, type Fixture } from "./fixtures.ts";
import { type Agent, client, errorCode, startAgent, stopAgentAndClient } from "./helpers.ts";

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

const render = (extra: Record<string, unknown>) => {
  const f = fx.get("nginx-like")!;
  const config = JSON.parse(readFileSync(f.imageConfig, "utf8"));
  config.config.Healthcheck = { Test: ["CMD", "true"] };
  return c.request<{ env: string }>("render", { name: "hof", rootfs: f.rootfs, config, privateNetwork: true, ...extra });
};

test("each action lands in the env file; absent: no line (the init's default, none)", async () => {
  for (const v of ["none", "restart", "stop", "kill"]) expect((await render({ healthOnFailure: v })).env).toMatch(new RegExp(`^MAN8S_HEALTH_ON_FAILURE=${v}$`, "m"));
  expect((await render({})).env).not.toContain("MAN8S_HEALTH_ON_FAILURE");
});

test("other values: E_BAD_ARGS naming the field", async () => {
  for (const v of ["reboot", "KILL", "stop\nMAN8S_X=1"]) {
    expect(await errorCode(render({ healthOnFailure: v }))).toBe("E_BAD_ARGS");
    const e = (await render({ healthOnFailure: v }).catch((x) => x)) as Error;
    expect(e.message).toContain("healthOnFailure must be one of none, restart, stop, kill");
  }
});
