// Classification of real images built with umoci, through the daemon, with both kinds of config the host
// has: the OCI image config (Entrypoint/Cmd split) and umoci's runtime config.json (merged args).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Classification } from "../../hostagent/classify.ts";
import type { AgentClient } from "../../hostagent/client.ts";
import { fixtures, releaseFixtures, type Fixture } from "./fixtures.ts";
import { type Agent, client, startAgent, stopAgentAndClient } from "./helpers.ts";

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

const classify = (tag: string, which: "image" | "runtime" = "image") => {
  const f = fx.get(tag)!;
  return c.request<Classification>("classify", { rootfs: f.rootfs, configPath: which === "image" ? f.imageConfig : f.runtimeConfig });
};

// tag → kind, mode, ProcessTwo, KillSignal, StopSignal, signal group
const EXPECT: [string, string, string, boolean, string, string, boolean][] = [
  ["busybox-app", "app", "pid2", true, "SIGRTMIN+3", "SIGTERM", false],
  ["no-entrypoint", "app", "pid2", true, "SIGRTMIN+3", "SIGTERM", false],
  ["tini", "tini", "pid2", true, "SIGRTMIN+3", "SIGTERM", false],
  ["dumb-init", "dumb-init", "pid2", true, "SIGRTMIN+3", "SIGTERM", false],
  ["catatonit", "catatonit", "pid2", true, "SIGRTMIN+3", "SIGTERM", false],
  ["systemd", "systemd", "pid1-exec", false, "SIGRTMIN+3", "SIGRTMIN+3", false],
  ["busybox-init", "busybox-init", "pid1-exec", false, "SIGUSR2", "SIGTERM", false],
  ["s6-overlay-v3", "s6-overlay-v3", "pid1-exec", false, "SIGTERM", "SIGTERM", false],
  ["nginx-like", "script-exec", "pid2", true, "SIGRTMIN+3", "SIGQUIT", false],
  ["shell-form", "shell-form", "pid2-group", true, "SIGRTMIN+3", "SIGTERM", true],
  ["script-exec-tini", "tini", "pid2", true, "SIGRTMIN+3", "SIGTERM", false],
  ["script-calls-tini", "tini", "pid2", true, "SIGRTMIN+3", "SIGTERM", false],
  ["script-noexec", "script-noexec", "pid2-group", true, "SIGRTMIN+3", "SIGTERM", true],
  ["symlink-entrypoint", "catatonit", "pid2", true, "SIGRTMIN+3", "SIGTERM", false],
  ["host-escape", "app", "pid2", true, "SIGRTMIN+3", "SIGTERM", false],
];

describe("classify fixture images", () => {
  for (const [tag, kind, mode, p2, kill, stop, group] of EXPECT) {
    test(`${tag} → ${kind}`, async () => {
      for (const which of ["image", "runtime"] as const) {
        const r = await classify(tag, which);
        expect([which, r.kind, r.mode, r.processTwo, r.killSignal, r.stopSignal, r.signalGroup]).toEqual([which, kind, mode, p2, kill, stop, group]);
        // the final decision always cites the table and is preceded by the facts it rests on
        expect(r.evidence.at(-1)!.source).toBe("DESIGN §5 table");
        expect(r.evidence.length).toBeGreaterThanOrEqual(3);
        if (mode === "pid1-exec") expect(r.execInit).toEqual(r.argv);
        else expect(r.execInit).toBeUndefined();
      }
    });
  }

  test("evidence names the files and fields behind each decision", async () => {
    const tini = await classify("tini");
    expect(tini.nestedInit).toEqual({ kind: "tini", path: "/usr/bin/tini", flags: ["-g", "-e", "143"], child: ["/bin/sleep", "1000"] });
    expect(tini.evidence.some((e) => e.source === "file /usr/bin/tini" && e.detail.includes("TINI_SUBREAPER"))).toBe(true);
    const nginx = await classify("nginx-like");
    expect(nginx.argv).toEqual(["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]);
    expect(nginx.evidence.some((e) => e.source === "config.StopSignal" && e.decision === "StopSignal SIGQUIT")).toBe(true);
    expect(nginx.evidence.some((e) => e.decision === "script ends in exec" && e.detail === 'exec "$@"')).toBe(true);
    const nginxRt = await classify("nginx-like", "runtime");
    expect(nginxRt.evidence.some((e) => e.source === "annotation org.opencontainers.image.stopSignal")).toBe(true);
    const s6 = await classify("s6-overlay-v3");
    expect(s6.evidence.some((e) => e.source === "file /init" && e.detail.includes("s6-overlay-suexec"))).toBe(true);
    expect(s6.evidence.some((e) => e.weak && e.source === "file /command/s6-overlay-suexec")).toBe(true);
    expect(s6.evidence.some((e) => e.weak && e.source === "config.Env" && e.detail === "S6_KEEP_ENV=1")).toBe(true);
    const sd = await classify("systemd");
    expect(sd.executable).toMatchObject({ argv0: "/sbin/init", path: "/lib/systemd/systemd", links: ["/sbin/init -> /lib/systemd/systemd"], type: "elf" });
    const viaScript = await classify("script-exec-tini");
    expect(viaScript.nestedInit?.flags).toEqual(["-s"]);
    expect(viaScript.evidence.some((e) => e.decision === "classify the Cmd the script execs")).toBe(true);
    const calls = await classify("script-calls-tini");
    expect(calls.nestedInit?.flags).toEqual(["-g"]);
  });

  test("symlinks resolve inside the rootfs: absolute, '..'-escaping, and host-only targets", async () => {
    const sym = await classify("symlink-entrypoint");
    expect(sym.executable?.path).toBe("/opt/init/catatonit-bin");
    expect(sym.executable?.links).toEqual(["/entry -> /usr/local/bin/start", "/usr/local/bin/start -> ../../../../../../../opt/init/catatonit-bin"]);
    // /entry -> /usr/bin/dumb-init exists on this host but not in the image: it must not count
    const esc = await classify("host-escape");
    expect(esc.kind).toBe("app");
    expect(esc.warnings.join(" ")).toContain("not found in the rootfs");
    const esc2 = await c.request<Classification>("classify", { rootfs: fx.get("host-escape")!.rootfs, config: { config: { Entrypoint: ["/entry2"] } } });
    expect(esc2.kind).toBe("app");
  });

  test("a PID-1 init behind sh -c still gets PID 1; Config.Shell is honoured", async () => {
    const sd = fx.get("systemd")!;
    const r = await c.request<Classification>("classify", { rootfs: sd.rootfs, config: { config: { Cmd: ["/bin/sh", "-c", "exec /sbin/init --log-level=info"] } } });
    expect([r.kind, r.mode, r.shellForm, r.processTwo]).toEqual(["systemd", "pid1-exec", true, false]);
    expect(r.execInit).toEqual(["/bin/sh", "-c", "exec /sbin/init --log-level=info"]);
    const bb = fx.get("busybox-app")!;
    const sh = await c.request<Classification>("classify", { rootfs: bb.rootfs, config: { config: { Shell: ["/bin/busybox", "sh", "-c"], Cmd: ["/bin/busybox", "sh", "-c", "sleep 1 | cat"] } } });
    expect([sh.kind, sh.signalGroup]).toEqual(["shell-form", true]);
  });

  test("shell form has one rule with the init's: options before -c, other shells, Config.Shell", async () => {
    const bb = fx.get("busybox-app")!;
    const as = (cmd: string[], shell?: string[]) =>
      c.request<Classification>("classify", { rootfs: bb.rootfs, config: { config: { Cmd: cmd, ...(shell ? { Shell: shell } : {}) } } });
    // before: only argv[1] === "-c" after sh/bash counted, so these were plain apps the init signalled as a group
    for (const cmd of [["/bin/sh", "-e", "-c", "sleep 1 | cat"], ["/bin/sh", "-ec", "sleep 1 | cat"], ["/bin/ash", "-c", "sleep 1 | cat"]]) {
      const r = await as(cmd);
      expect([cmd, r.kind, r.mode, r.signalGroup, r.shellForm]).toEqual([cmd, "shell-form", "pid2-group", true, true]);
    }
    const custom = await as(["/bin/ash", "-o", "pipefail", "-c", "sleep 1 | cat"], ["/bin/ash", "-o", "pipefail", "-c"]);
    expect([custom.kind, custom.signalGroup]).toEqual(["shell-form", true]);
    const notShell = await as(["/bin/sh", "/etc/profile", "-c"]);
    expect(notShell.kind).not.toBe("shell-form");
  });

  test("an image with no command at all, and a bad StopSignal", async () => {
    const e = await classify("empty");
    expect(e.kind).toBe("none");
    expect(e.warnings.join(" ")).toContain("nothing to run");
    const bad = await c.request<Classification>("classify", { rootfs: fx.get("busybox-app")!.rootfs, config: { config: { Cmd: ["/bin/sleep", "1"], StopSignal: "SIGBOGUS" } } });
    expect(bad.stopSignal).toBe("SIGTERM");
    expect(bad.warnings.join(" ")).toContain("SIGBOGUS");
    const num = await c.request<Classification>("classify", { rootfs: fx.get("busybox-app")!.rootfs, config: { config: { Cmd: ["/bin/sleep", "1"], StopSignal: "37" } } });
    expect(num.stopSignal).toBe("SIGRTMIN+3");
  });
});
