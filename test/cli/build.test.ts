// test/build.ts decides when the tests rebuild dist/: any product source newer than the build, and
// nothing else (issue 12: one of three former rules ignored hostagent/ and lazy.ts and ran a stale binary).
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { scratchDir } from "../scratch.ts";
import { dirname } from "node:path";
import { staleBecause } from "../build.ts";

const root = scratchDir("m8c-build");
afterAll(() => rmSync(root, { recursive: true, force: true }));

const OLD = new Date(Date.now() - 3_600_000);
const BUILT = new Date(Date.now() - 1_800_000);
const NEW = new Date();
function file(rel: string, when: Date): void {
  mkdirSync(dirname(`${root}/${rel}`), { recursive: true });
  writeFileSync(`${root}/${rel}`, "");
  utimesSync(`${root}/${rel}`, when, when);
}
const SOURCES = ["main.ts", "lazy.ts", "build.ts", "package.json", "hostagent/server.ts", "hostagent/commands/image.ts", "init/launcher.c", "common/cli.ts", "netctl/cli.ts"];
const NOT_SOURCES = ["test/x.test.ts", "test/fixtures/hello.c", "node_modules/a/b.ts", "netctl/node_modules/c.ts", "dist/x.ts", "README.md", "docs/cli.md", "package-lock.json"];

test("no build: stale; a build newer than every source: fresh", () => {
  expect(staleBecause(root)).toBe("");
  for (const f of [...SOURCES, ...NOT_SOURCES]) file(f, OLD);
  for (const f of ["dist/man8s", "dist/man8s-init/man8s", "dist/man8s-init/init"]) file(f, BUILT);
  expect(staleBecause(root)).toBeNull();
});

test("each product source newer than the build makes it stale; tests, docs and dependencies do not", () => {
  for (const f of NOT_SOURCES) {
    file(f, NEW);
    expect({ f, stale: staleBecause(root) }).toEqual({ f, stale: null });
    file(f, OLD);
  }
  for (const f of SOURCES) {
    file(f, NEW);
    expect({ f, stale: staleBecause(root) }).toEqual({ f, stale: f });
    file(f, OLD);
  }
});

test("a half-written build (one output older than a source) is stale", () => {
  file("dist/man8s-init/init", OLD);
  file("hostagent/server.ts", BUILT);
  expect(staleBecause(root)).toBe("hostagent/server.ts");
});
