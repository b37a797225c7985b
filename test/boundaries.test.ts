// The roles (init/, netctl/, hostagent/) do not import each other; the leaves (common/, probes/) import no
// role. Shared code lives in a leaf. Static imports, re-exports, import() and `typeof import()` all count;
// the init's lazy load() calls into another role must be the runtime edges lazy.ts declares.
import { describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { tmpdir } from "node:os";
import { LAZY, RUNTIME_EDGES } from "../lazy.ts";

const ROOT = resolve(import.meta.dir, "..");
const ROLES = ["init", "netctl", "hostagent"] as const;
const LEAVES = ["common", "probes"] as const;

function sources(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? sources(p) : /\.(ts|tsx|js|mjs)$/.test(n) ? [p] : [];
  });
}

/** Every relative module specifier in a source text (static, re-export, dynamic, type-level). */
function specifiers(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|\brequire\s*\(\s*)["']([^"']+)["']/g)) out.push(m[1]!);
  return out.filter((s) => s.startsWith("."));
}

const top = (root: string, file: string) => relative(root, file).split("/")[0]!;

/** "file -> target" for every import that crosses a boundary. */
function crossings(root: string): string[] {
  const bad: string[] = [];
  for (const folder of [...ROLES, ...LEAVES]) {
    for (const file of sources(join(root, folder))) {
      const text = readFileSync(file, "utf8");
      for (const spec of specifiers(text)) {
        const to = top(root, resolve(dirname(file), spec));
        const isRole = (ROLES as readonly string[]).includes(to);
        if (isRole && to !== folder) bad.push(`${relative(root, file)} -> ${relative(root, resolve(dirname(file), spec))}`);
      }
      // load("name") from lazy.ts: a runtime edge, allowed into another role only when lazy.ts declares it
      for (const m of text.matchAll(/\bload\(\s*["'](\w+)["']\s*\)/g)) {
        const name = m[1] as keyof typeof LAZY;
        const target = LAZY[name];
        if (target === undefined) continue;
        const to = target.split("/")[0]!;
        const declared = (RUNTIME_EDGES as Record<string, readonly string[]>)[folder]?.includes(name) ?? false;
        if ((ROLES as readonly string[]).includes(to) && to !== folder && !declared) bad.push(`${relative(root, file)} -> load("${name}") = ${target}`);
      }
    }
  }
  return bad;
}

describe("module boundaries", () => {
  test("no role imports another role; common/ and probes/ import no role", () => {
    expect(crossings(ROOT)).toEqual([]);
  });

  test("the scan finds a crossing import of every kind (so the check above can fail)", () => {
    const dir = join(tmpdir(), `m8p-bounds-${process.pid}`);
    const put = (p: string, text: string) => {
      mkdirSync(dirname(join(dir, p)), { recursive: true });
      writeFileSync(join(dir, p), text);
    };
    try {
      put("netctl/a.ts", `import { x } from "../init/x.ts";\n`);
      put("hostagent/sub/b.ts", `export * from "../../netctl/y.ts";\nconst m = await import("../../init/z.ts");\n`);
      put("init/c.ts", `type T = typeof import("../hostagent/w.ts");\nimport { ok } from "../common/fine.ts";\nimport { p } from "../probes/fine.ts";\n`);
      put("common/d.ts", `import type { Q } from "../hostagent/q.ts";\n`);
      put("probes/e.ts", `import { r } from "../init/reaper.ts";\nimport { s } from "./same.ts";\n`);
      put("netctl/f.ts", `const b = await load("agent");\n`);
      put("init/g.ts", `const b = await load("report");\nconst n = await load("network");\n`);
      expect(crossings(dir).sort()).toEqual([
        "common/d.ts -> hostagent/q.ts",
        "hostagent/sub/b.ts -> init/z.ts",
        "hostagent/sub/b.ts -> netctl/y.ts",
        "init/c.ts -> hostagent/w.ts",
        "netctl/a.ts -> init/x.ts",
        `netctl/f.ts -> load("agent") = ${LAZY.agent}`,
        "probes/e.ts -> init/reaper.ts",
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the agent's commands depend on its services interface, not on the server class", () => {
    const users = [...sources(join(ROOT, "hostagent/commands")), join(ROOT, "hostagent/renew.ts")];
    const onServer = users.filter((f) => specifiers(readFileSync(f, "utf8")).some((s) => resolve(dirname(f), s) === join(ROOT, "hostagent/server.ts")));
    expect(onServer.map((f) => relative(ROOT, f))).toEqual([]);
    expect(readFileSync(join(ROOT, "hostagent/server.ts"), "utf8")).toContain("class AgentServer implements AgentServices");
  });

  test("every declared runtime edge names a lazy module of another role", () => {
    for (const [from, names] of Object.entries(RUNTIME_EDGES)) {
      for (const n of names) {
        const target = LAZY[n];
        expect(target).toBeDefined();
        expect(target.split("/")[0]).not.toBe(from);
      }
    }
  });
});
