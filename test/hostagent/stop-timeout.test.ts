// The agent waits for a machine's stop as long as its init will take: MAN8S_STOP_TIMEOUT from the
// machine's env file, read with the init's own parser (common/settings.ts), so default and cap agree.
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { scratchDir } from "../scratch.ts";
import { dirname } from "node:path";
import { stopTimeout } from "../../hostagent/commands/machines.ts";
import { envFile } from "../../hostagent/layout.ts";
import { DEFAULT_STOP_TIMEOUT_S, MAX_STOP_TIMEOUT_S } from "../../common/settings.ts";

const root = scratchDir("m8l-stop");
afterAll(() => rmSync(root, { recursive: true, force: true }));

test.each([
  ["absent", null, DEFAULT_STOP_TIMEOUT_S],
  ["not set", "A=1\n", DEFAULT_STOP_TIMEOUT_S],
  ["whole seconds", "A=1\nMAN8S_STOP_TIMEOUT=25\n", 25],
  ["a fraction, as the init reads it", "MAN8S_STOP_TIMEOUT=2.5\n", 2.5],
  ["above the cap: the init's cap", "MAN8S_STOP_TIMEOUT=200\n", MAX_STOP_TIMEOUT_S],
  ["refused by the init: the default", "MAN8S_STOP_TIMEOUT=ten\n", DEFAULT_STOP_TIMEOUT_S],
] as const)("%s", (_what, env, seconds) => {
  const name = `m8l${Math.random().toString(36).slice(2, 8)}`;
  if (env !== null) {
    mkdirSync(dirname(envFile(root, name)), { recursive: true });
    writeFileSync(envFile(root, name), env);
  }
  expect(stopTimeout(root, name)).toBe(seconds);
});
