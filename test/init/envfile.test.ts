// The env file as the app sees it: every case of docs/notes.md §9, with DESIGN §3.1's
// literal semantics (the original loader expanded $… and ran `…`; we must not).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { ensureBuilt, killLeftovers, MODES, runInit, type Mode } from "./harness.ts";

beforeAll(ensureBuilt, 120_000);
afterAll(killLeftovers);

const VALID = [
  "# a comment",
  "   # an indented comment",
  "",
  "   ",
  "\r",
  "PLAIN=value",
  "SPACES=a b  c",
  "TRAIL=x   ",
  "  LEADKEY=lead",
  "EQ=a=b=c",
  'DQ="double quoted"',
  "SQ='single quoted'",
  'INNERDQ=say "hi"',
  "DOLLAR=$HOME/x",
  "BRACE=${HOME}",
  "BT=`echo injected`",
  "CMDSUB=$(echo sub)",
  "BS=back\\slash",
  "BS2=a\\\\b",
  'BSDQ=a\\"b',
  "AFTERBSDQ=kept",
  "ENDBS=abc\\",
  "INLINE=val # x",
  "DUP=first",
  "DUP=second",
  "EMPTY=",
  "CRLF=v\r",
  "UNI=容器1",
  "GLOB=*",
  "TILDE=~/x",
  "SEMI=a;echo X",
  "LAST=no newline at the end",
].join("\n");

const EXPECTED: Record<string, string> = {
  PLAIN: "value", SPACES: "a b  c", TRAIL: "x   ", LEADKEY: "lead", EQ: "a=b=c", DQ: '"double quoted"',
  SQ: "'single quoted'", INNERDQ: 'say "hi"', DOLLAR: "$HOME/x", BRACE: "${HOME}", BT: "`echo injected`",
  CMDSUB: "$(echo sub)", BS: "back\\slash", BS2: "a\\\\b", BSDQ: 'a\\"b', AFTERBSDQ: "kept", ENDBS: "abc\\",
  INLINE: "val # x", DUP: "second", EMPTY: "", CRLF: "v", UNI: "容器1", GLOB: "*", TILDE: "~/x", SEMI: "a;echo X",
  LAST: "no newline at the end",
};

function decodeEnv(out: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of out.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) m.set(line.slice(0, eq), Buffer.from(line.slice(eq + 1), "hex").toString("utf8"));
  }
  return m;
}

describe.each(MODES)("env file, init as %s", (mode: Mode) => {
  test("every line of the reference table gets its literal value, exported to the app", async () => {
    const r = await runInit(mode, ({ bin }) => [bin("sigapp"), "env"], { envFile: VALID });
    const e = await r.exited;
    expect(e.code).toBe(0);
    const env = decodeEnv(r.stdout());
    for (const [k, v] of Object.entries(EXPECTED)) expect([k, env.get(k)]).toEqual([k, v]);
    expect(env.has("export")).toBe(false);
    expect(r.stderr()).toContain("DUP defined twice; the last value wins");
  }, 30_000);

  test("MAN8S_APPLICATION_ARGV from the env file is run exactly, and ARGS through /bin/sh", async () => {
    const argv = await runInit(mode, () => [], {
      envFile: `MAN8S_APPLICATION_ARGV=["sh","-c","echo \\"[$1]\\"","zero","one  two $HOME"]\n`,
    });
    expect((await argv.exited).code).toBe(0);
    expect(argv.stdout()).toContain("[one  two $HOME]");
    const args = await runInit(mode, () => [], { envFile: "MAN8S_APPLICATION_ARGS=echo 'it'\"'\"'s' \"quoted  twice\"\n" });
    expect((await args.exited).code).toBe(0);
    expect(args.stdout()).toContain("it's quoted  twice");
  }, 30_000);
});

describe("bad env files exit 65 naming file and line, and start nothing", () => {
  const cases: Array<[string, string, RegExp]> = [
    ["no '='", "OK=1\nNOEQUALS\n", /env:2: expected KEY=VALUE/],
    ["space before '='", "SPKEY =v\n", /env:1: invalid key "SPKEY "/],
    ["dash in the key", "A=1\n\nBAD-KEY=1\n", /env:3: invalid key "BAD-KEY"/],
    ["export prefix", "export EXP=1\n", /env:1: invalid key "export EXP"/],
    ["invalid UTF-8", "A=1\nB=2\nC=\xff\xfe\n", /env:3: not valid UTF-8/],
    ["unusable stop signal", "MAN8S_STOP_SIGNAL=SIGBOGUS\n", /MAN8S_STOP_SIGNAL: 'SIGBOGUS'/],
    ["stop timeout not a number", "MAN8S_STOP_TIMEOUT=ten\n", /MAN8S_STOP_TIMEOUT: 'ten'/],
    ["argv not strings", "MAN8S_APPLICATION_ARGV=[1,2]\n", /MAN8S_APPLICATION_ARGV: must be a non-empty JSON array of strings/],
    ["argv not JSON", "MAN8S_APPLICATION_ARGV=[sh\n", /MAN8S_APPLICATION_ARGV: not valid JSON/],
  ];
  test.each(cases)("%s", async (_name, text, message) => {
    // a command on the init's command line would override MAN8S_APPLICATION_ARGV, so give none there
    const cmd = text.includes("APPLICATION_ARGV") ? () => [] : ({ bin }: { bin: (n: string) => string }) => [bin("sigapp")];
    const r = await runInit("subreaper", cmd, { envFile: Buffer.from(text, "latin1") });
    expect((await r.exited).code).toBe(65);
    expect(r.stderr()).toMatch(message);
    expect(r.stdout()).not.toContain("ready");
    expect(r.status()?.exit?.code).toBe(65);
  }, 30_000);

  test("in a container too", async () => {
    const r = await runInit("nspawn", ({ bin }) => [bin("sigapp")], { envFile: "GOOD=1\nBAD KEY=2\n" });
    const e = await r.exited;
    expect(e.code).toBe(65);
    expect(r.stderr()).toMatch(/\/man8env\.env:2: invalid key "BAD KEY"/);
    expect(r.status()?.exit?.code).toBe(65);
  }, 30_000);
});

describe("only spaces and tabs may indent a key (DESIGN §3.1 step 2); duplicates are summarised", () => {
  const odd: Array<[string, string]> = [["NBSP", "\u00a0"], ["VT", "\v"], ["FF", "\f"], ["U+2028", "\u2028"], ["ideographic space", "\u3000"]];
  test.each(odd)("%s before a key: 65 naming the line and the character", async (_name, ch) => {
    const r = await runInit("subreaper", ({ bin }) => [bin("sigapp")], { envFile: Buffer.from(`GOOD=1\n${ch}KEY=1\n`, "utf8") });
    // before the fix: accepted, KEY exported
    expect((await r.exited).code).toBe(65);
    const cp = `U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;
    expect(r.stderr()).toContain(`env:2: ${cp} before the key: only spaces and tabs may indent a line`);
    expect(r.stdout()).not.toContain("ready");
  }, 30_000);

  test("a line of odd whitespace alone is an error too; spaces and tabs still indent", async () => {
    const bad = await runInit("subreaper", ({ bin }) => [bin("sigapp")], { envFile: Buffer.from("A=1\n\u00a0\n", "utf8") });
    expect((await bad.exited).code).toBe(65);
    expect(bad.stderr()).toContain("env:2: U+00A0 before the key");
    const good = await runInit("subreaper", ({ bin }) => [bin("sigapp"), "env"], { envFile: " \t TABKEY=tab\n\t# comment\n \t \n" });
    expect((await good.exited).code).toBe(0);
    expect(decodeEnv(good.stdout()).get("TABKEY")).toBe("tab");
  }, 30_000);

  test("a key repeated 1M times: the last value wins, and the log says so in one line", async () => {
    const text = "REP=x\n".repeat(999_999) + "REP=last\n" + Array.from({ length: 30 }, (_, i) => `K${i}=1\nK${i}=2\n`).join("");
    const r = await runInit("subreaper", ({ bin }) => [bin("sigapp"), "env"], { envFile: text });
    expect((await r.exited).code).toBe(0);
    expect(decodeEnv(r.stdout()).get("REP")).toBe("last");
    const lines = r.stderr().split("\n").filter((l) => l.includes("defined"));
    // before the fix: 1,000,029 log lines
    expect(lines[0]).toContain("REP defined 1000000 times; the last value wins");
    expect(lines.length).toBe(11); // ten keys named, then "21 more keys"
    expect(lines[10]).toContain("21 more keys defined more than once");
  }, 60_000);
});
