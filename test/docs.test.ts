// The documentation holds together: every relative link in README.md and docs/*.md reaches a file (and a
// heading, for #anchors); every reference in the code and the docs to the design ("DESIGN §N"), to a docs
// file ("docs/FILE.md", "docs/notes.md §N") resolves to a file and a numbered section that exist; nothing
// cites the lab notes that live outside the repository; the agent's error codes are all documented; and the
// README stays an operator's page that still names the test command CI runs.
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");
const SKIP_DIRS = new Set(["node_modules", "dist", ".git"]);
const CODE_EXT = /\.(ts|c|sh)$/;
const SELF = relative(ROOT, import.meta.path);

/** GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens. */
export function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, "")
    .replace(/ /g, "-");
}

/** Lines outside fenced code blocks, with their 1-based numbers. */
function prose(md: string): [number, string][] {
  const out: [number, string][] = [];
  let fenced = false;
  md.split("\n").forEach((line, i) => {
    if (/^\s*```/.test(line)) fenced = !fenced;
    else if (!fenced) out.push([i + 1, line]);
  });
  return out;
}

/** A markdown file's anchors (with GitHub's -1, -2 suffixes for repeats) and its section numbers. */
export function headings(md: string): { anchors: Set<string>; sections: Set<string> } {
  const anchors = new Set<string>();
  const sections = new Set<string>();
  const seen = new Map<string, number>();
  for (const [, line] of prose(md)) {
    const m = /^#{1,6}\s+(.*)$/.exec(line);
    if (!m) continue;
    const base = slug(m[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n ? `${base}-${n}` : base);
    const num = /^(\d+(?:\.\d+)*)\.?\s/.exec(m[1]!);
    if (num) sections.add(num[1]!);
  }
  return { anchors, sections };
}

type Reader = (path: string) => string | null;
const readRepo: Reader = (p) => (existsSync(join(ROOT, p)) ? readFileSync(join(ROOT, p), "utf8") : null);
const isMarkdown = (p: string) => p.endsWith(".md");

/** The target of a repository path: null when it exists (with its anchor, if any), else the problem. */
function checkTarget(path: string, anchor: string | null, read: Reader): string | null {
  if (!existsSync(join(ROOT, path)) && read(path) === null) return `${path} does not exist`;
  if (anchor === null || !isMarkdown(path)) return null;
  const text = read(path);
  if (text === null) return `${path} cannot be read`;
  return headings(text).anchors.has(anchor) ? null : `${path} has no heading #${anchor}`;
}

/** Relative links of a markdown file (`[text](target)`) that do not resolve. */
export function linkProblems(file: string, md: string, read: Reader = readRepo): string[] {
  const problems: string[] = [];
  for (const [n, line] of prose(md)) {
    for (const m of line.matchAll(/\[[^\]]*\]\(([^)\s]+)\)/g)) {
      const target = m[1]!;
      if (/^[a-z]+:/i.test(target)) continue; // http:, https:, mailto:
      const [p, anchor] = target.split("#", 2) as [string, string | undefined];
      const path = p === "" ? file : relative(ROOT, resolve(ROOT, dirname(file), p));
      const problem = checkTarget(path, anchor ?? null, read);
      if (problem) problems.push(`${file}:${n}: link ${target}: ${problem}`);
    }
  }
  return problems;
}

/**
 * References in a line of code or docs: "DESIGN §N" (docs/design.md), "docs/FILE.md[#anchor]", a "§N" after a
 * docs file (or inside a markdown link's text, resolved against the link's target), and any "notes/FILE"
 * (the lab notes are not in the repository: cite docs/notes.md). RFC sections are left alone; a "§N"
 * with no document before it on its line is a problem.
 */
export function referenceProblems(file: string, text: string, read: Reader = readRepo): string[] {
  const problems: string[] = [];
  const lines: [number, string][] = isMarkdown(file) ? prose(text) : text.split("\n").map((l, i) => [i + 1, l]);
  const docOf = (token: string): string | null => {
    if (token === "DESIGN") return "docs/design.md";
    if (/^RFC/.test(token) || token.startsWith("notes/")) return null; // external; notes/ is reported above
    if (token.startsWith("docs/")) return token;
    return relative(ROOT, resolve(ROOT, dirname(file), token)); // a bare FILE.md inside docs/
  };
  for (const [n, line] of lines) {
    const at = `${file}:${n}`;
    for (const m of line.matchAll(/(?<![\w/.])notes\/[\w.-]+/g)) problems.push(`${at}: cites ${m[0]}, which is not in the repository (use docs/notes.md §N)`);
    for (const m of line.matchAll(/\bdocs\/([\w.-]+\.md)(?:#([\w-]+))?/g)) {
      const problem = checkTarget(`docs/${m[1]}`, m[2] ?? null, read);
      if (problem) problems.push(`${at}: ${m[0]}: ${problem}`);
    }
    for (const m of line.matchAll(/§\s?(\d+(?:\.\d+)*)/g)) {
      const before = line.slice(0, m.index);
      const tokens = [...before.matchAll(/DESIGN|RFC\s?\d+|notes\/[\w.-]+|(?:docs\/)?[\w.-]+\.md\b/g)].map((t) => t[0]);
      let doc: string | null | undefined = tokens.length ? docOf(tokens.at(-1)!) : undefined;
      // "[notes §2](notes.md#...)": the document is the link's target
      const link = /^[^\]]*\]\(([^)#\s]+\.md)/.exec(line.slice(m.index));
      if (link && isMarkdown(file)) doc = docOf(link[1]!);
      if (doc === null) continue; // an RFC's section
      if (doc === undefined) {
        problems.push(`${at}: §${m[1]} names no document (write "DESIGN §N", "docs/FILE.md §N" or "RFC N §N")`);
        continue;
      }
      const body = read(doc);
      if (body === null) problems.push(`${at}: §${m[1]}: ${doc} does not exist`);
      else if (!headings(body).sections.has(m[1]!)) problems.push(`${at}: §${m[1]}: ${doc} has no section ${m[1]}`);
    }
  }
  return problems;
}

function repoFiles(dir = ""): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
    const p = dir ? `${dir}/${e.name}` : e.name;
    if (e.isDirectory()) {
      if (!SKIP_DIRS.has(e.name)) out.push(...repoFiles(p));
    } else if (CODE_EXT.test(e.name) || isMarkdown(e.name)) out.push(p);
  }
  return out;
}

const markdown = ["README.md", ...readdirSync(join(ROOT, "docs")).filter(isMarkdown).map((f) => `docs/${f}`)];

describe("the checker finds what is broken", () => {
  const files: Record<string, string> = {
    "docs/a.md": "# A\n\n## 2. Two\n\n## Same\n\n## Same\n",
  };
  const read: Reader = (p) => files[p] ?? readRepo(p);
  test("links: a missing file, a missing heading; repeated headings get -1", () => {
    const md = "[ok](a.md#2-two) [dup](a.md#same-1) [gone](nothing.md) [bad](a.md#three) [web](https://x.y/z)\n```\n[in code](nowhere.md)\n```\n";
    const p = linkProblems("docs/b.md", md, read);
    expect(p).toHaveLength(2);
    expect(p[0]).toContain("docs/nothing.md does not exist");
    expect(p[1]).toContain("docs/a.md has no heading #three");
  });
  test("references: sections, docs files, notes/, unattributed §, RFC sections", () => {
    const code = [
      "// DESIGN §3.1 step 2, docs/a.md §2, docs/a.md#same",
      "// DESIGN §9.9",
      "// see notes/bun-lab.md §2",
      "// (§4.1: no document)",
      "// RFC 2131 §4.4.1, then §3.1.5",
      "// docs/gone.md",
    ].join("\n");
    const p = referenceProblems("x/y.ts", code, read);
    expect(p).toEqual([
      "x/y.ts:2: §9.9: docs/design.md has no section 9.9",
      "x/y.ts:3: cites notes/bun-lab.md, which is not in the repository (use docs/notes.md §N)",
      expect.stringContaining("x/y.ts:4: §4.1 names no document"),
      "x/y.ts:6: docs/gone.md: docs/gone.md does not exist",
    ]);
    expect(referenceProblems("docs/b.md", "[notes §2](a.md#2-two) and [x §3](a.md)\n", read)).toEqual([
      "docs/b.md:1: §3: docs/a.md has no section 3",
    ]);
  });
  test("GitHub anchors", () => {
    expect(slug("`MAN8S_WAIT_FOR`: dependencies")).toBe("man8s_wait_for-dependencies");
    expect(slug("Start-up: exec → app")).toBe("start-up-exec--app");
    expect(slug("3.1 Phases (each logged)")).toBe("31-phases-each-logged");
  });
});

describe("this repository", () => {
  test("every relative link in README.md and docs/*.md resolves", () => {
    expect(markdown.flatMap((f) => linkProblems(f, readFileSync(join(ROOT, f), "utf8")))).toEqual([]);
  });

  test("every DESIGN §, docs/ and notes reference in the code and the docs resolves", () => {
    const files = repoFiles().filter((f) => f !== SELF);
    expect(files.length).toBeGreaterThan(50);
    expect(files.flatMap((f) => referenceProblems(f, readFileSync(join(ROOT, f), "utf8")))).toEqual([]);
  });

  test("the README's documentation table links every docs file", () => {
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    expect(markdown.filter((f) => f !== "README.md" && !readme.includes(`](${f})`))).toEqual([]);
  });

  test("the design keeps its section numbers", () => {
    const { sections } = headings(readFileSync(join(ROOT, "docs/design.md"), "utf8"));
    for (const s of ["1", "2", "3", "3.1", "3.2", "3.3", "3.4", "3.5", "3.6", "4", "5", "6", "7", "8"]) expect(sections).toContain(s);
  });

  test("every error code of the agent is documented in docs/protocol.md", () => {
    const codes = [...readFileSync(join(ROOT, "hostagent/errors.ts"), "utf8").matchAll(/"(E_[A-Z_]+)"/g)].map((m) => m[1]!);
    expect(codes.length).toBeGreaterThan(10);
    const doc = readFileSync(join(ROOT, "docs/protocol.md"), "utf8");
    expect(codes.filter((c) => !doc.includes(`\`${c}\``))).toEqual([]);
  });

  test("the README is an operator's page of at most 250 lines that names the test command CI runs", () => {
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    expect(readme.split("\n").length).toBeLessThanOrEqual(250);
    expect(readme).toContain("npm run check");
    expect(readFileSync(join(ROOT, ".ci/run"), "utf8")).toMatch(/npm run (--silent )?check/);
    expect(JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).scripts.check).toBe("bash scripts/check.sh");
  });
});
