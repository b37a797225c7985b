// Loaded before every test file (bunfig.toml): after the last test of the run, remove this process's
// scratch directory (test/scratch.ts; bun test fires no process "exit" event to do it from there).
import { afterAll } from "bun:test";
import { removeScratch } from "./scratch.ts";

afterAll(removeScratch);
