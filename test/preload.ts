// Loaded before every test file (bunfig.toml): after the last test, remove the scratch directory the
// init harness made for this run (bun test fires no process "exit" event to do it from there).
import { afterAll } from "bun:test";
import { readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";

afterAll(() => {
  for (const name of readdirSync(tmpdir())) {
    if (name.startsWith(`m8i-${process.pid}-`)) rmSync(`${tmpdir()}/${name}`, { recursive: true, force: true });
  }
});
