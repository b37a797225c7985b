// The bundle (/man8s-init: launcher, binary, glibc loader and libraries) runs as the init in any image:
// busybox-static only (the supervise tests), musl only, no shell at all, and a read-only root.
// Also the protected-dir restore, which needs nspawn's real tmpfs /run and /tmp.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { $ } from "zx";
import { lstatSync, mkdirSync, readFileSync, symlinkSync, utimesSync, writeFileSync, chownSync } from "node:fs";
import { BUNDLE, busyboxRootfs, childrenOf, ensureBuilt, killLeftovers, runInit, WORK } from "./harness.ts";

beforeAll(ensureBuilt, 120_000);
afterAll(killLeftovers);

test("a musl-only rootfs (no glibc, no busybox, no shell), with the bundle copied in", async () => {
  const r = `${WORK}/rootfs-musl`;
  mkdirSync(`${r}/lib`, { recursive: true });
  mkdirSync(`${r}/usr/lib`, { recursive: true });
  mkdirSync(`${r}/etc`, { recursive: true });
  writeFileSync(`${r}/usr/lib/os-release`, "ID=m8imusl\n");
  await $`cp -L /lib/ld-musl-x86_64.so.1 ${r}/lib/ld-musl-x86_64.so.1`;
  await $`musl-gcc -Os -o ${r}/hello ${import.meta.dir}/../fixtures/hello.c`;
  expect((await $`file ${r}/hello`).stdout).toContain("dynamically linked");
  await $`cp -a ${BUNDLE} ${r}/man8s-init`;
  const run = await runInit("nspawn", () => [], {
    rootfs: r,
    inject: "copy",
    envFile: "MAN8S_APPLICATION_ARGS='/hello' 'two words' plain\n",
  });
  const e = await run.exited;
  expect(run.stdout()).toContain("hello from musl: [two words] [plain]");
  expect(e.code).toBe(11);
  expect(run.stderr()).toContain("no /bin/sh: split by man8s");
}, 60_000);

test("a busybox rootfs without /bin/sh starts MAN8S_APPLICATION_ARGS with our own word splitter", async () => {
  const rootfs = await busyboxRootfs("rootfs-nosh", { withShell: false });
  const run = await runInit("nspawn", () => [], { rootfs, envFile: "MAN8S_APPLICATION_ARGS=/usr/local/bin/sigapp env\nX='a b'\n" });
  expect((await run.exited).code).toBe(0);
  expect(run.stdout()).toContain(`X=${Buffer.from("'a b'").toString("hex")}`);
  expect(run.status()?.app?.argv).toEqual(["/usr/local/bin/sigapp", "env"]);
  // and a line that needs a shell is refused clearly rather than run differently
  const bad = await runInit("nspawn", () => [], { rootfs, envFile: "MAN8S_APPLICATION_ARGS=sigapp env | head\n" });
  expect((await bad.exited).code).toBe(65);
  expect(bad.stderr()).toContain("MAN8S_APPLICATION_ARGS: shell operator '|' needs a shell, and the image has no /bin/sh");
}, 60_000);

test("a read-only root", async () => {
  const run = await runInit("nspawn", () => ["sh", "-c", "touch /x 2>/dev/null && echo writable || echo read-only; exit 5"], { readOnly: true });
  const code = (await run.exited).code;
  if (code !== 5) console.error(run.stderr());
  expect(code).toBe(5);
  expect(run.stdout()).toContain("read-only");
  expect(run.status()?.exit?.code).toBe(5);
}, 60_000);

test("protected dirs are restored into nspawn's fresh /run and /tmp with modes, owners, links and times", async () => {
  const rootfs = await busyboxRootfs("rootfs-protected");
  const p = `${rootfs}/run.man8sprotected`;
  mkdirSync(`${p}/sub`, { recursive: true, mode: 0o750 });
  writeFileSync(`${p}/a.conf`, "config\n", { mode: 0o640 });
  writeFileSync(`${p}/sub/f`, "deep\n");
  symlinkSync("a.conf", `${p}/link`);
  chownSync(`${p}/a.conf`, 1000, 100);
  chownSync(`${p}/sub`, 1001, 101);
  const t = new Date("2020-01-02T03:04:05Z");
  utimesSync(`${p}/a.conf`, t, t);
  utimesSync(`${p}/sub/f`, t, t);
  mkdirSync(`${rootfs}/tmp.man8sprotected`, { recursive: true });
  writeFileSync(`${rootfs}/tmp.man8sprotected/t.txt`, "tmp\n", { mode: 0o600 });
  const run = await runInit("nspawn", () => [
    "sh", "-c", "stat -c '%n %a %u %g %Y' /run/a.conf /run/sub /run/sub/f /tmp/t.txt; readlink /run/link; cat /run/sub/f",
  ], { rootfs });
  expect((await run.exited).code).toBe(0);
  const out = run.stdout();
  const secs = Math.floor(t.getTime() / 1000);
  expect(out).toContain(`/run/a.conf 640 1000 100 ${secs}`);
  expect(out).toMatch(new RegExp(`/run/sub 750 1001 101 \\d+`));
  expect(out).toContain(`/run/sub/f 644 0 0 ${secs}`);
  expect(out).toMatch(/\/tmp\/t\.txt 600 0 0 \d+/);
  expect(out).toContain("a.conf\ndeep");
  expect(lstatSync(`${p}/link`).isSymbolicLink()).toBe(true); // the source stays as it was
  expect(readFileSync(`${p}/a.conf`, "utf8")).toBe("config\n");
}, 60_000);

test("MAN8S_EXEC_INIT: as PID 1 the init prepares the container, then execs the image's init in its place", async () => {
  const run = await runInit("pid1", () => [], {
    envFile: `MAN8S_EXEC_INIT=["${WORK}/bin/sigapp","-x","15"]\nMAN8S_NETWORK=none\n`,
  });
  const m = await run.waitFor(/^ready pid=(\d+) ppid=\d+ pgid=\d+ sigblk=(\w+) sigign=(\w+)/m);
  expect(m[1]).toBe("1"); // the same process, now the image's init
  expect(m[2]).toBe("0000000000000000");
  expect(m[3]).toBe("0000000000000000"); // SIGPIPE is not left ignored
  expect(run.status()?.phase).toBe("exec");
  expect(run.status()?.app?.argv).toEqual([`${WORK}/bin/sigapp`, "-x", "15"]);
  // now the image's init handles it (sigapp logs it, then exits 100: as PID 1 it cannot die of its own raise)
  process.kill(childrenOf(run.outer)[0]!, "SIGTERM");
  expect((await run.exited).code).toBe(100);
  expect(run.stdout()).toContain("sig 15 from");
}, 30_000);

test("MAN8S_EXEC_INIT that is not JSON exits 65", async () => {
  const run = await runInit("subreaper", () => [], { envFile: "MAN8S_EXEC_INIT=/init\n" });
  expect((await run.exited).code).toBe(65);
  expect(run.stderr()).toContain("MAN8S_EXEC_INIT: not valid JSON");
}, 30_000);
