// Issue 9 item 8: render must refuse what the init refuses, with E_BAD_CONFIG naming the field, because both
// run the same validator (common/validate-env.ts). Over the real socket; then a property test that renders
// random image configs and runs the real init (a subreaper in its own empty network namespace, so the
// network phase touches nothing) on every env file the agent accepted: the init must never exit 64/65 on it.
// Needs root (unshare -n): run under the shared lock.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import type { AgentClient } from "../../hostagent/client.ts";
import { validateEnv } from "../../common/validate-env.ts";
import { settingKey } from "../../common/settings.ts";
import { type Agent, BIN, client, startAgent, stopAgentAndClient, tmp } from "./helpers.ts";

let agent: Agent;
let c: AgentClient;
let rootfs: string;

beforeAll(async () => {
  agent = await startAgent();
  c = await client(agent.socket);
  rootfs = tmp("vroot");
}, 60_000);
afterAll(async () => {
  await stopAgentAndClient(c, agent);
});

async function refusal(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return { code: String((e as { code?: string }).code), message: (e as Error).message };
  }
  return { code: "no error", message: "" };
}

const base = (name: string) => ({ name, rootfs, privateNetwork: true, privateUsers: false });

describe("render and install refuse what the init refuses", () => {
  const cases: { what: string; args: Record<string, unknown>; field: RegExp }[] = [
    { what: "StopSignal SIGSTOP", args: { config: { config: { Cmd: ["/bin/true"], StopSignal: "SIGSTOP" } } }, field: /^StopSignal: .*SIGSTOP/ },
    { what: "StopSignal that is no signal", args: { config: { config: { Cmd: ["/bin/true"], StopSignal: "SIGBOGUS" } } }, field: /^StopSignal: / },
    { what: "Healthcheck Timeout -5", args: { config: { config: { Cmd: ["/bin/true"], Healthcheck: { Test: ["CMD", "true"], Timeout: -5 } } } }, field: /^Healthcheck: .*Timeout/ },
    { what: "Healthcheck Test 5", args: { config: { config: { Cmd: ["/bin/true"], Healthcheck: { Test: 5 } } } }, field: /^Healthcheck: .*Test/ },
    { what: "--ygg-address not-an-address", args: { config: { config: { Cmd: ["/bin/true"] } }, yggdrasilAddress: "not-an-address" }, field: /^yggdrasilAddress \(--ygg-address\): .*not-an-address/ },
    { what: "an empty program name", args: { config: { config: { Entrypoint: [""], Cmd: ["x"] } } }, field: /^Entrypoint\/Cmd: / },
    { what: "env MAN8S_WAIT_FOR with a bad URL", args: { config: { config: { Cmd: ["/bin/true"] } }, env: { MAN8S_WAIT_FOR: "bogus://x" } }, field: /^env MAN8S_WAIT_FOR: / },
    // before: accepted, and the init's network phase failed later with 69 (a failed check, not a bad setting)
    { what: "env MAN8S_CHECK_TARGETS with a bad target", args: { config: { config: { Cmd: ["/bin/true"] } }, env: { MAN8S_NETWORK: "v4", MAN8S_CHECK_TARGETS: "10.0.0.1,db:99999" } }, field: /^env MAN8S_CHECK_TARGETS: .*db:99999/ },
    { what: "env MAN8S_NETWORK v5", args: { config: { config: { Cmd: ["/bin/true"] } }, env: { MAN8S_NETWORK: "v5" } }, field: /^env MAN8S_NETWORK: / },
    { what: "env MAN8S_APPLICATION_USER a:b:c", args: { config: { config: { Cmd: ["/bin/true"] } }, env: { MAN8S_APPLICATION_USER: "a:b:c" } }, field: /^env MAN8S_APPLICATION_USER: / },
    { what: "User a:b:c", args: { config: { config: { Cmd: ["/bin/true"], User: "a:b:c" } } }, field: /^User: .*a:b:c/ },
    { what: "image Env MAN8S_READY_INTERVAL", args: { config: { config: { Cmd: ["/bin/true"], Env: ["MAN8S_READY_INTERVAL=soon"] } } }, field: /^Env MAN8S_READY_INTERVAL: / },
  ];
  for (const [i, k] of cases.entries()) {
    test(k.what, async () => {
      const name = `bad-${i}`;
      const r = await refusal(c.request("render", { ...base(name), ...k.args }));
      expect(r.code).toBe("E_BAD_CONFIG");
      expect(r.message).toMatch(k.field);
      const inst = await refusal(c.request("install", { ...base(name), ...k.args }));
      expect(inst.code).toBe("E_BAD_CONFIG");
      // refused before anything was written
      expect(existsSync(`${agent.root}/var/lib/man8machine_configs/${name}`)).toBe(false);
    });
  }

  test("Shell [x] with Entrypoint [x, -c]: classify, render and install answer, no E_INTERNAL", async () => {
    const config = { config: { Entrypoint: ["x", "-c"], Shell: ["x"] } };
    const cls = await c.request<{ kind: string }>("classify", { rootfs, config });
    expect(cls.kind).toBe("shell-form");
    await c.request("render", { ...base("shell-x"), config });
    await c.request("install", { ...base("shell-x"), config });
    expect(existsSync(`${agent.root}/var/lib/man8machine_configs/shell-x/man8env.env`)).toBe(true);
  });

  test("a SIGSTOP the caller's env replaces is fine", async () => {
    await c.request("render", { ...base("stop-ok"), config: { config: { Cmd: ["/bin/true"], StopSignal: "SIGSTOP" } }, env: { MAN8S_STOP_SIGNAL: "SIGINT" } });
  });
});

// ---- property: whatever render accepts, the real init accepts ----

/** mulberry32: a seeded generator, so a failure can be replayed with MAN8S_TEST_SEED. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const U = undefined;
/** Each setting: values the init takes, and values it refuses (picked with probability BAD). */
type Choice<T> = { good: T[]; bad: T[] };
const BAD = 0.08;
const CHOICES = {
  StopSignal: <Choice<string | undefined>>{ good: [U, U, "SIGTERM", "9", "RTMIN+3", "QUIT", " SIGINT ", "sigusr1"], bad: ["SIGSTOP", "SIGBOGUS", "SIGRTMAX+1", "32", "0"] },
  Healthcheck: <Choice<object | undefined>>{
    good: [U, U, { Test: ["CMD", "true"] }, { Test: ["NONE"] }, { Test: "exit 0", Interval: "2s" }, { Test: ["BOGUS"] }, { test: ["CMD", "true"], interval: 500 }],
    bad: [{ Test: 5 }, { Test: ["CMD-SHELL", "true"], Timeout: -5 }, { Test: ["CMD"] }, { Test: ["CMD", "true"], Interval: "5x" }, { Test: ["CMD", "true"], Retries: -1 },
      { Test: ["CMD", "true"], StartPeriod: 1.5 }, { Test: ["CMD", "true"], Retries: 2.5 }],
  },
  argv: <Choice<string[]>>{ good: [["/bin/true"], ["/bin/sh", "-c", "exit 0"], ["true"], ["/bin/true", "a b", "'\"$x"], ["/bin/sh", "-c"]], bad: [["", "x"]] },
  ygg: <Choice<string | undefined>>{ good: [U, U, U, "300:2e98:a4b0:1789::5", "300:2e98:a4b0:1789::5/64"], bad: ["not-an-address", "::1", "fe80::1", "200::1/48"] },
  env: {
    MAN8S_NETWORK: { good: ["", "dual", "v4", "v6", "none", " none"], bad: ["v5"] },
    // always present, so that a network phase in the empty namespace ends quickly (exit 69)
    MAN8S_NETWORK_TIMEOUT: { good: ["0.3", "300ms"], bad: ["x", "0", "-1", "1e2"] },
    MAN8S_WAIT_FOR: { good: [U, "exec:true", "'exec:true' \"exec:true\""], bad: ["bogus://x", "tcp://h", "exec:", "icmp://127.0.0.1:5"] },
    MAN8S_WAIT_TIMEOUT: { good: [U, "0.5", "100ms"], bad: ["abc", "-1", "2 x"] },
    MAN8S_CHECK_TARGETS: { good: [U, "127.0.0.1", "127.0.0.1:1,[::1]:2 tcp://db:5"], bad: ["db:99999", "bogus://x", "tcp://db"] },
    MAN8S_READY: { good: [U, "healthy", "start", "none", "http://127.0.0.1:1/"], bad: ["nope", "tcp://[::1]:99999"] },
    MAN8S_READY_INTERVAL: { good: [U, "50ms", "1.5s"], bad: ["x"] },
    MAN8S_STOP_TIMEOUT: { good: [U, "5", "90", "2.5"], bad: ["1e3", "-1"] },
    MAN8S_YGGDRASIL_PREFIX: { good: [U, "300:2e98:a4b0:1789::/64"], bad: ["300::/48", "zz", "fd00::/64"] },
    MAN8S_YGGDRASIL_GATEWAY: { good: [U, "300:2e98:a4b0:1789::1"], bad: ["gw"] },
    MAN8S_APPLICATION_USER: { good: [U, "root", "0:0", ""], bad: ["a:b:c", "x y", "4294967295"] },
    MAN8S_HOST_IFACE: { good: [U, "eth0"], bad: ["bad/if"] },
    MAN8S_EXEC_INIT: { good: [U, U, U, "[\"/bin/true\"]"], bad: ["[]", "{"] },
  } as Record<string, Choice<string | undefined>>,
};

function chooser(r: () => number) {
  return <T>(c: Choice<T>): T => {
    const xs = r() < BAD ? c.bad : c.good;
    return xs[Math.floor(r() * xs.length)]!;
  };
}

/** Image config fields, request arguments and env variables, each valid or (rarely) not. */
function genCase(r: () => number) {
  const pick = chooser(r);
  const cfg: Record<string, unknown> = { Cmd: pick(CHOICES.argv) };
  const stop = pick(CHOICES.StopSignal);
  if (stop !== U) cfg.StopSignal = stop;
  const hc = pick(CHOICES.Healthcheck);
  if (hc !== U) cfg.Healthcheck = hc;
  const env: Record<string, string> = {};
  for (const [k, c] of Object.entries(CHOICES.env)) {
    // a few variables per case, the network timeout always
    if (k !== "MAN8S_NETWORK_TIMEOUT" && r() < 0.6) continue;
    const v = pick(c);
    if (v !== U) env[k] = v;
  }
  const ygg = pick(CHOICES.ygg);
  return { config: { config: cfg }, env, ...(ygg !== U ? { yggdrasilAddress: ygg } : {}) };
}

const scratch = () => {
  const d = tmp("vinit");
  mkdirSync(d, { recursive: true });
  return d;
};

/** The real init as a subreaper in a new, empty network namespace; the exit code and its stderr. */
async function runInit(envText: string): Promise<{ code: number; stderr: string }> {
  const d = scratch();
  // the agent's report socket is not bound here: point the init elsewhere (the last value wins)
  writeFileSync(`${d}/env`, `${envText}MAN8S_REPORT_SOCKET=${d}/no-agent.sock\n`);
  const proc = Bun.spawn(["unshare", "-n", "--", BIN, "init"], {
    env: { PATH: "/usr/bin:/bin:/usr/sbin:/sbin", MAN8S_ENV_FILE: `${d}/env`, MAN8S_STATUS_FILE: `${d}/status.json` },
    stdin: "ignore", stdout: "ignore", stderr: "pipe",
  });
  // whatever the case, the init stops within the network timeout or the app's exit; a generous bound
  const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
  const [code, stderr] = await Promise.all([proc.exited, new Response(proc.stderr as ReadableStream).text()]);
  clearTimeout(timer);
  return { code, stderr };
}

// unshare -n needs root
describe.skipIf(process.getuid?.() !== 0)("property: the init accepts every env file render produces", () => {
  const seed = Number(process.env.MAN8S_TEST_SEED ?? Date.now() % 1_000_000);
  const N = Number(process.env.MAN8S_TEST_CASES ?? 60);

  test(`${N} random image configs (seed ${seed})`, async () => {
    const r = rng(seed);
    let accepted = 0, refused = 0;
    const codes = new Map<number, number>();
    for (let i = 0; i < N; i++) {
      const k = genCase(r);
      const what = `case ${i} (seed ${seed}): ${JSON.stringify(k)}`;
      let rendered: { env: string } | null = null;
      try {
        rendered = await c.request<{ env: string }>("render", { ...base(`p${i}`), ...k });
      } catch (e) {
        // refusals are configuration errors naming a field, never internal errors
        expect({ what, code: (e as { code?: string }).code }).toEqual({ what, code: "E_BAD_CONFIG" });
        refused++;
        continue;
      }
      accepted++;
      const run = await runInit(rendered.env);
      codes.set(run.code, (codes.get(run.code) ?? 0) + 1);
      expect({ what, code: run.code, exitedOnSettings: run.code === 64 || run.code === 65, stderr: run.stderr.slice(-600) })
        .toMatchObject({ what, exitedOnSettings: false });
    }
    console.log(`render accepted ${accepted}, refused ${refused}; the init's exit codes on the accepted: ${JSON.stringify(Object.fromEntries(codes))}`);
    // the generator must exercise both sides
    expect(accepted).toBeGreaterThan(3);
    expect(refused).toBeGreaterThan(3);
  }, 240_000);

  test("and the converse on raw env files: validateEnv refuses exactly when the init exits 65 naming that key", async () => {
    const r = rng(seed + 1);
    for (let i = 0; i < Math.ceil(N / 2); i++) {
      // the env render would write for a random case (the request's env last, as render does)
      const k = genCase(r);
      const cfg = k.config.config;
      const env: Record<string, string> = { MAN8S_APPLICATION_ARGV: JSON.stringify(cfg.Cmd) };
      if (cfg.StopSignal !== U) env.MAN8S_STOP_SIGNAL = String(cfg.StopSignal);
      if (cfg.Healthcheck !== U) env.MAN8S_HEALTHCHECK = JSON.stringify(cfg.Healthcheck);
      if (k.yggdrasilAddress !== U) env.MAN8S_YGGDRASIL_ADDRESS = k.yggdrasilAddress;
      Object.assign(env, k.env);
      let key: string | null = null;
      try {
        validateEnv(env);
      } catch (e) {
        key = settingKey(e);
        if (key === null) throw e;
      }
      const text = Object.entries(env).map(([k, v]) => `${k}=${v}\n`).join("");
      const run = await runInit(text);
      const what = `case ${i} (seed ${seed}): ${JSON.stringify(env)}`;
      if (key === null) expect({ what, code: run.code, stderr: run.stderr.slice(-600) }).not.toMatchObject({ code: 65 });
      else {
        expect({ what, code: run.code }).toMatchObject({ what, code: 65 });
        expect({ what, stderr: run.stderr }).toMatchObject({ what, stderr: expect.stringContaining(key) });
      }
    }
  }, 240_000);
});

describe("classify and render never fail with E_INTERNAL on odd commands", () => {
  test("random Entrypoint, Cmd and Shell from shell-like words", async () => {
    const seed = Number(process.env.MAN8S_TEST_SEED ?? Date.now() % 1_000_000);
    const r = rng(seed + 2);
    const words = ["x", "-c", "sh", "/bin/sh", "", "exec x", "\"$@\"", "--", "/sbin/init"];
    const list = () => Array.from({ length: Math.floor(r() * 4) }, () => words[Math.floor(r() * words.length)]!);
    const codes = new Map<string, number>();
    for (let i = 0; i < 2000; i++) {
      const cfg: Record<string, unknown> = { Entrypoint: list(), Cmd: list() };
      if (r() < 0.5) {
        const shell = list();
        cfg.Shell = shell;
        // shell-form commands start with the Shell's words (Docker writes [...Shell, "script"])
        if (r() < 0.6) cfg.Entrypoint = [...shell, ...list().slice(0, 1)];
      }
      for (const cmd of ["classify", "render"]) {
        let code = "ok";
        try {
          await c.request(cmd, { ...base(`odd${i}`), config: { config: cfg } });
        } catch (e) {
          code = String((e as { code?: string }).code);
        }
        codes.set(code, (codes.get(code) ?? 0) + 1);
        expect({ seed, cmd, cfg, code }).not.toMatchObject({ code: "E_INTERNAL" });
      }
    }
    expect(codes.get("ok")).toBeGreaterThan(0);
  }, 60_000);
});
