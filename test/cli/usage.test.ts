// Every command of the built binary, run with a flag it does not know, a missing value and a stray
// argument: exit 64 and the one usage-error format of common/cli.ts on stderr, nothing on stdout. And
// --help on every command and subcommand: exit 0, its usage on stdout.
import { beforeAll, describe, expect, test } from "bun:test";
import { BIN, ensureBuilt } from "../build.ts";

beforeAll(ensureBuilt, 120_000);

// no agent is listening here: a usage error must come before any connection attempt
const env = { ...process.env, MAN8S_YGGDRASIL_PREFIX: "", MAN8S_CHECK_TARGETS: "", LISTEN_FDS: "", LISTEN_PID: "" };
function run(args: string[]) {
  const r = Bun.spawnSync([BIN, ...args], { stdout: "pipe", stderr: "pipe", env, timeout: 20_000 });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

/** [the command as the message names it, the argv before the bad flag] */
const COMMANDS: [string, string[]][] = [
  ["init", ["init"]],
  ["netctl up", ["netctl", "up"]],
  ["netctl status", ["netctl", "status"]],
  ["netctl check", ["netctl", "check"]],
  ["netctl address", ["netctl", "address", "n"]],
  ["netctl probe", ["netctl", "probe", "tcp://127.0.0.1:1"]],
  ["hostagent serve", ["hostagent", "serve"]],
  ...["ping", "version", "classify", "render", "plan", "install", "inject", "address", "status", "watch"].map((c): [string, string[]] => ["agent", ["agent", c]]),
  ...["pull", "list", "remove", "shell", "exec", "renew", "rollback", "start", "stop", "restart"].map((c): [string, string[]] => ["machines", ["machines", c]]),
  ["oci", ["oci", "download"]],
  ["oci", ["oci", "man8init"]],
  ["cache", ["cache", "prune"]],
  ["address", ["address", "getsuffix"]],
  ["host setup", ["host", "setup"]],
  ["host check", ["host", "check"]],
];

const format = (cmd: string, problem: string) => `man8s${cmd ? ` ${cmd}` : ""}: ${problem}\nrun 'man8s${cmd ? ` ${cmd}` : ""} --help' for usage\n`;

describe("usage errors: one format, exit 64", () => {
  test.each(COMMANDS)("%s (%p) --no-such-flag", (cmd, argv) => {
    const r = run([...argv, "--no-such-flag"]);
    expect(r).toEqual({ code: 64, out: "", err: format(cmd, "unknown option '--no-such-flag'") });
  });

  test("a value flag without its value, a boolean flag with one", () => {
    expect(run(["agent", "status", "--socket"])).toEqual({ code: 64, out: "", err: format("agent", "--socket needs a value") });
    expect(run(["machines", "list", "--socket"])).toEqual({ code: 64, out: "", err: format("machines", "--socket needs a value") });
    expect(run(["netctl", "probe", "tcp://127.0.0.1:1", "--timeout"])).toEqual({ code: 64, out: "", err: format("netctl probe", "--timeout needs a value") });
    expect(run(["netctl", "address", "n", "--prefix"])).toEqual({ code: 64, out: "", err: format("netctl address", "--prefix needs a value") });
    expect(run(["hostagent", "serve", "--root"])).toEqual({ code: 64, out: "", err: format("hostagent serve", "--root needs a value") });
    expect(run(["host", "check", "--bridge"])).toEqual({ code: 64, out: "", err: format("host check", "--bridge needs a value") });
    expect(run(["netctl", "status", "--json=yes"])).toEqual({ code: 64, out: "", err: format("netctl status", "--json takes no value") });
    // a value that looks like a flag is refused, not swallowed: it is given as --flag=-VALUE
    expect(run(["agent", "render", "n", "--env", "--json"]).err).toBe(format("agent", "--env needs a value (one starting with '-' is given as --env=-VALUE)"));
  });

  test("stray arguments and unknown commands", () => {
    expect(run(["netctl", "status", "extra"])).toEqual({ code: 64, out: "", err: format("netctl status", "unexpected argument 'extra'") });
    expect(run(["netctl", "up", "extra"])).toEqual({ code: 64, out: "", err: format("netctl up", "unexpected argument 'extra'") });
    expect(run(["hostagent", "serve", "extra"])).toEqual({ code: 64, out: "", err: format("hostagent serve", "unexpected argument 'extra'") });
    expect(run(["host", "setup", "extra"])).toEqual({ code: 64, out: "", err: format("host setup", "unexpected argument 'extra'") });
    expect(run(["init", "extra"])).toEqual({ code: 64, out: "", err: format("init", "unexpected argument 'extra' (use -- CMD ARGS... to give the command)") });
    expect(run(["no-such-command"])).toEqual({ code: 64, out: "", err: format("", "unknown command 'no-such-command'") });
    expect(run([])).toEqual({ code: 64, out: "", err: format("", "no command") });
    expect(run(["netctl", "frob"])).toEqual({ code: 64, out: "", err: format("netctl", "unknown command 'frob'") });
    expect(run(["agent", "frob"])).toEqual({ code: 64, out: "", err: format("agent", "unknown command 'frob'") });
    expect(run(["machines", "frob"])).toEqual({ code: 64, out: "", err: format("machines", "unknown command 'frob'") });
    expect(run(["hostagent", "frob"])).toEqual({ code: 64, out: "", err: format("hostagent", "unknown command 'frob' (serve)") });
    expect(run(["host", "frob"])).toEqual({ code: 64, out: "", err: format("host", "unknown command 'frob' (setup or check)") });
  });
});

describe("--help on every command and subcommand", () => {
  const all: string[][] = [[], ["netctl"], ["hostagent"], ["agent"], ["machines"], ["host"], ...COMMANDS.map(([, argv]) => argv)];
  test.each(all)("%p --help", (...argv) => {
    for (const h of ["--help", "-h"]) {
      const r = run([...argv, h]);
      expect({ code: r.code, err: r.err }).toEqual({ code: 0, err: "" });
      expect(r.out).toContain("usage:");
    }
  });
});
