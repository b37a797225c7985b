// The one word splitter (common/shellwords.ts) and its inverse, Python's shlex.quote (mbctl).
import { describe, expect, test } from "bun:test";
import { shlexJoin, shlexQuote, splitWords } from "../../common/shellwords.ts";

describe("word splitter", () => {
  // the lines are what Python's shlex.quote (mbctl) produces
  test.each([
    ["/entrypoint.sh /etc/x.yml 'it'\"'\"'s $HOME'", ["/entrypoint.sh", "/etc/x.yml", "it's $HOME"]],
    ["a  b\tc", ["a", "b", "c"]],
    ["'' x", ["", "x"]],
    ['"a \\" \\\\ b"', ['a " \\ b']],
    ["a\\ b", ["a b"]],
    ["x # comment", ["x"]],
    ["a#b", ["a#b"]],
    ["", []],
  ])("%p", (line, argv) => expect(splitWords(line as string)).toEqual({ ok: true, argv: argv as string[] }));
  test.each(["a | b", "a; b", "echo $HOME", "echo `x`", "'open", '"open', "x > y", 'echo "$X"'])("%p needs a shell", (line) => {
    expect(splitWords(line).ok).toBe(false);
  });

  test("list mode: the same quoting, and the shell's special characters are ordinary", () => {
    expect(splitWords(`a 'b c' "d \\"e\\" $f" g\\ h`, "list")).toEqual({ ok: true, argv: ["a", "b c", 'd "e" $f', "g h"] });
    expect(splitWords("''", "list")).toEqual({ ok: true, argv: [""] });
    expect(splitWords("http://a/?x=1&y=2;z #frag", "list")).toEqual({ ok: true, argv: ["http://a/?x=1&y=2;z", "#frag"] });
    for (const bad of ["'open", '"open', "trailing\\"]) expect(splitWords(bad, "list").ok).toBe(false);
  });

  test("refusals say why", () => {
    expect(splitWords("test -f /x | grep y")).toEqual({ ok: false, reason: "shell operator '|' needs a shell" });
    expect(splitWords("true; false")).toEqual({ ok: false, reason: "shell operator ';' needs a shell" });
    expect(splitWords("'open")).toEqual({ ok: false, reason: "unterminated single quote at offset 0" });
    expect(splitWords("x\\")).toEqual({ ok: false, reason: "trailing backslash" });
  });

  test("quoted operators are plain words; backslash-newline joins lines", () => {
    expect(splitWords(`grep 'a|b' "c;d" e\\&f`)).toEqual({ ok: true, argv: ["grep", "a|b", "c;d", "e&f"] });
    expect(splitWords("a \\\n b")).toEqual({ ok: true, argv: ["a", "b"] });
  });
});

describe("shlex", () => {
  const words = ["", "plain", "a b", "it's $HOME", "daemon off;", "é", "-g", "a=b,c:d/e.f@g%h+i", "'", '"', "`x`", "tab\there", "*", "~/x", "a\\b", "!x"];

  test("matches Python's shlex.quote on tricky words", () => {
    const py = Bun.spawnSync(["python3", "-c", "import sys,json,shlex;print(json.dumps([shlex.quote(w) for w in json.load(sys.stdin)]))"], {
      stdin: new TextEncoder().encode(JSON.stringify(words)),
    });
    expect(py.exitCode).toBe(0);
    expect(words.map(shlexQuote)).toEqual(JSON.parse(py.stdout.toString()));
    // and a real shell splits the joined line back into the same words
    const sh = Bun.spawnSync(["/bin/busybox", "sh", "-c", `for w in ${shlexJoin(words)}; do printf '%s\\0' "$w"; done`]);
    expect(sh.stdout.toString().split("\0").slice(0, -1)).toEqual(words);
  });

  test("our splitter undoes shlexJoin exactly (the path without /bin/sh)", () => {
    expect(splitWords(shlexJoin(words))).toEqual({ ok: true, argv: words });
  });
});
