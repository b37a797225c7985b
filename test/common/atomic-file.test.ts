// The one atomic-write helper (common/atomic-file.ts) on a real filesystem: content and mode, the temp
// file beside the target and gone afterwards (also when the rename fails), symlink replacement, and the
// resolv.conf writer's fallback for a bind-mounted target (rename onto a mount point is EBUSY).
import { afterAll, expect, test } from "bun:test";
import { $ } from "bun";
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { scratchDir } from "../scratch.ts";
import { join } from "node:path";
import { replaceFile, replaceSymlink, tempSibling, writeFileAtomic } from "../../common/atomic-file.ts";
import { removeStaleTemps } from "../../hostagent/copytree.ts";
import { writeResolvConf } from "../../netctl/resolvconf.ts";

const WORK = scratchDir("m8l-atomic");
afterAll(() => rmSync(WORK, { recursive: true, force: true }));
let seq = 0;
const freshDir = () => {
  const d = join(WORK, `d${++seq}`);
  mkdirSync(d);
  return d;
};

test("replaces content with the exact mode, leaving nothing beside it", () => {
  const dir = freshDir();
  const f = `${dir}/state.json`;
  writeFileSync(f, "old");
  const mask = process.umask(0o077);
  try {
    writeFileAtomic(f, "new content", { mode: 0o644, durable: true });
  } finally {
    process.umask(mask);
  }
  expect(readFileSync(f, "utf8")).toBe("new content");
  expect(statSync(f).mode & 0o777).toBe(0o644);
  expect(readdirSync(dir)).toEqual(["state.json"]);
  writeFileAtomic(f, new Uint8Array([1, 2, 3]));
  expect([...readFileSync(f)]).toEqual([1, 2, 3]);
});

test("a failed rename keeps the old entry and removes the temp file; replaceFile reports instead of throwing", () => {
  const dir = freshDir();
  mkdirSync(`${dir}/target`); // rename(file, non-empty dir) fails
  writeFileSync(`${dir}/target/keep`, "x");
  expect(() => writeFileAtomic(`${dir}/target`, "data")).toThrow(expect.objectContaining({ code: "EISDIR" }));
  const err = replaceFile(`${dir}/target`, "data");
  expect(err?.code).toBe("EISDIR");
  expect(readdirSync(dir)).toEqual(["target"]);
  expect(readdirSync(`${dir}/target`)).toEqual(["keep"]);
  expect(replaceFile(`${dir}/absent-dir/f`, "data")?.code).toBe("ENOENT");
});

test("temp names are hidden siblings that removeStaleTemps recognises", () => {
  const dir = freshDir();
  const t = tempSibling(`${dir}/file.json`);
  expect(t).toMatch(new RegExp(`^${dir}/\\.file\\.json\\.tmp-[0-9a-f]{12}$`));
  expect(tempSibling(`${dir}/file.json`)).not.toBe(t);
  writeFileSync(t, "left by a killed writer");
  expect(removeStaleTemps(`${dir}/file.json`)).toEqual([t]);
  expect(readdirSync(dir)).toEqual([]);
});

test("replaceSymlink points an existing link elsewhere in one step", () => {
  const dir = freshDir();
  replaceSymlink(`${dir}/current`, "gen-0");
  replaceSymlink(`${dir}/current`, "gen-1");
  expect(lstatSync(`${dir}/current`).isSymbolicLink()).toBe(true);
  expect(readlinkSync(`${dir}/current`)).toBe("gen-1");
  expect(readdirSync(dir)).toEqual(["current"]);
});

test.skipIf(process.getuid!() !== 0)("resolv.conf bind-mounted over: the rename is refused (EBUSY) and the file is written in place", async () => {
  const dir = freshDir();
  const target = `${dir}/resolv.conf`;
  writeFileSync(target, "# before\n");
  writeFileSync(`${dir}/source`, "# host copy\n");
  await $`mount --bind ${dir}/source ${target}`;
  try {
    writeResolvConf(target, "nameserver 10.0.0.1\n");
    expect(readFileSync(target, "utf8")).toBe("nameserver 10.0.0.1\n");
    expect(readdirSync(dir).sort()).toEqual(["resolv.conf", "source"]);
  } finally {
    await $`umount ${target}`.nothrow();
  }
});
