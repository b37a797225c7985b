// The one build step of the tests: every test that runs dist/ calls ensureBuilt(), which rebuilds when the
// binary is missing or ANY source is newer than it: *.ts outside node_modules/, test/ and dist/, *.c outside
// test/ (init/launcher.c), build.ts and package.json. MAN8S_TEST_REBUILD=1 rebuilds anyway.
// Run as a script (`bun test/build.ts`) it does the same under a lock, so two test processes of one clone
// never build over each other.
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { resolve } from "node:path";

export const ROOT = resolve(import.meta.dir, "..");
export const BIN = `${ROOT}/dist/man8s`;
export const BUNDLE = `${ROOT}/dist/man8s-init`;
/** what build.ts writes, relative to the root; the oldest of them dates the build */
const OUTPUTS = ["dist/man8s", "dist/man8s-init/man8s", "dist/man8s-init/init"];
const SKIP = new Set(["node_modules", "test", "dist", ".git"]);

function isSource(rel: string, name: string): boolean {
  if (rel === "build.ts" || rel === "package.json") return true;
  return name.endsWith(".ts") || name.endsWith(".c");
}

/** The first source file (relative path) newer than the build, or null; "" when there is no build. */
export function staleBecause(root = ROOT): string | null {
  let built = Infinity;
  for (const f of OUTPUTS) {
    if (!existsSync(`${root}/${f}`)) return "";
    built = Math.min(built, statSync(`${root}/${f}`).mtimeMs);
  }
  const walk = (dir: string, rel: string): string | null => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        if (e.name === "node_modules" || (!rel && SKIP.has(e.name))) continue;
        const found = walk(`${dir}/${e.name}`, r);
        if (found !== null) return found;
      } else if (e.isFile() && isSource(r, e.name) && statSync(`${dir}/${e.name}`).mtimeMs > built) return r;
    }
    return null;
  };
  return walk(root, "");
}

function buildNow(): void {
  const r = Bun.spawnSync([process.execPath, `${ROOT}/build.ts`], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`build failed (${r.exitCode}): ${r.stderr.toString().slice(-2000)}`);
}

let checked = false;
/** Builds dist/ when it is missing or stale; checked once per test process (the tests then run one build). */
export function ensureBuilt(): void {
  if (checked) return;
  if (process.env.MAN8S_TEST_REBUILD === "1" || staleBecause() !== null) {
    // the lock serialises test processes of this clone; the script checks again under it
    mkdirSync(`${ROOT}/dist`, { recursive: true });
    const r = Bun.spawnSync(["flock", `${ROOT}/dist/.build.lock`, process.execPath, import.meta.path], {
      cwd: ROOT,
      stdout: "pipe",
      stderr: "pipe",
    });
    if (r.exitCode !== 0) throw new Error(`build failed (${r.exitCode}): ${r.stderr.toString().slice(-2000)}`);
  }
  checked = true;
}

if (import.meta.main) {
  if (process.env.MAN8S_TEST_REBUILD === "1" || staleBecause() !== null) buildNow();
}
