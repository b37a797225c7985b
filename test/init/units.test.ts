// Pure logic: signal names, shell form, the env-file parser (the word splitter is tested in
// test/common/shellwords.test.ts). (Behaviour in real processes is in the other init tests.)
import { describe, expect, test } from "bun:test";
import { parseSignal, signalName } from "../../common/signals.ts";
import { isShellForm } from "../../common/shell-form.ts";
import { parseEnv } from "../../init/env.ts";

describe("signal names", () => {
  test.each([
    ["SIGQUIT", 3], ["QUIT", 3], ["quit", 3], ["3", 3], ["SIGRTMIN+3", 37], ["RTMIN+3", 37], ["SIGRTMIN", 34],
    ["SIGRTMAX-1", 63], ["RTMAX", 64], ["SIGWINCH", 28], ["64", 64],
  ])("%s is %i", (name, n) => expect(parseSignal(name as string)).toBe(n as number));
  test.each(["SIGBOGUS", "0", "65", "RTMIN+31", "RTMAX+1", "", "SIG"])("%p is refused", (name) => expect(parseSignal(name)).toBeNull());
  test("names round-trip", () => {
    for (let n = 1; n <= 64; n++) expect(parseSignal(signalName(n))).toBe(n);
  });
});

describe("shell form", () => {
  test.each([
    [["sh", "-c", "x"], true], [["/bin/bash", "-ec", "x"], true], [["/usr/bin/nginx", "-c", "x"], false],
    [["sh", "script.sh"], false], [["python3"], false],
    // one rule with the agent's classify (common/shell-form.ts): options before -c, busybox's applet
    [["/bin/sh", "-e", "-c", "x"], true], [["bash", "-o", "pipefail", "-c", "x"], true], [["busybox", "sh", "-c", "x"], true],
    [["dash", "--", "script.sh", "-c"], false], [["bash", "script.sh", "-c", "x"], false],
  ])("%p → %p", (argv, want) => expect(isShellForm(argv as string[])).toBe(want as boolean));
});

describe("env parser", () => {
  test("keys, values, comments, CR, duplicates", () => {
    const e = parseEnv("# c\n\n  A=1\nB= x = y \r\nA=2\n", "f");
    expect([...e.vars]).toEqual([["A", "2"], ["B", " x = y "]]);
    expect([...e.duplicates]).toEqual([["A", 2]]);
  });
  test("errors name file and line", () => {
    expect(() => parseEnv("A=1\n\nB\n", "/x.env")).toThrow("/x.env:3: expected KEY=VALUE");
    expect(() => parseEnv("1A=1\n", "/x.env")).toThrow('/x.env:1: invalid key "1A"');
  });
});
