// The one libc layer: a single dlopen in the product, and one errno error type that every FFI wrapper
// throws with the same fields (errno, code, what) and message, exercised through real failing calls.
import { expect, test } from "bun:test";
import { readFileSync, rmSync } from "node:fs";
import { scratchDir } from "../scratch.ts";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closeFd, EEXIST, EINVAL, ENOENT, ErrnoError, errnoName } from "../../common/libc.ts";
import { mkdirAt, openDirPath } from "../../common/libc-fs.ts";
import { AF_UNIX, SOCK_DGRAM } from "../../common/libc-net.ts";
import { openSocket, sendUnixDatagram } from "../../common/libc-notify.ts";

const ROOT = join(import.meta.dir, "../..");

test("libc.so.6 is opened in one place in the product", () => {
  const files = new Bun.Glob("**/*.ts").scanSync({ cwd: ROOT });
  const opening = [...files].filter((f) => !/^(node_modules|test|dist)\//.test(f) && /\bdlopen\(/.test(readFileSync(join(ROOT, f), "utf8")));
  expect(opening).toEqual(["common/libc.ts"]);
});

test("errno names come from libc", () => {
  expect(errnoName(ENOENT)).toBe("ENOENT");
  expect(errnoName(EEXIST)).toBe("EEXIST");
  expect(errnoName(40)).toBe("ELOOP");
  expect(errnoName(100_000)).toBe("errno 100000");
});

test("dirfd file calls throw ErrnoError with errno, code and what", () => {
  const dir = scratchDir("m8l-libc");
  try {
    const missing = (() => {
      try {
        openDirPath(`${dir}/absent`);
      } catch (e) {
        return e;
      }
    })();
    expect(missing).toBeInstanceOf(ErrnoError);
    expect(missing).toMatchObject({ errno: ENOENT, code: "ENOENT", what: `open ${dir}/absent` });
    expect((missing as Error).message).toBe(`open ${dir}/absent: No such file or directory (errno 2)`);

    const fd = openDirPath(dir);
    try {
      mkdirAt(fd, "x", 0o700);
      expect(() => mkdirAt(fd, "x", 0o700)).toThrow(expect.objectContaining({ errno: EEXIST, code: "EEXIST", what: "mkdirat x" }));
      expect(() => mkdirAt(fd, "a\0b", 0o700)).toThrow(expect.objectContaining({ errno: EINVAL, code: "EINVAL" }));
    } finally {
      closeFd(fd);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("socket calls throw the same ErrnoError", () => {
  expect(() => openSocket(12345, SOCK_DGRAM, 0)).toThrow(expect.objectContaining({ code: "EAFNOSUPPORT", what: "socket" }));
  const fd = openSocket(AF_UNIX, SOCK_DGRAM, 0);
  closeFd(fd);
  let err: unknown;
  try {
    sendUnixDatagram(`${tmpdir()}/m8l-no-listener-${process.pid}`, new Uint8Array([1]));
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ErrnoError);
  expect(err).toMatchObject({ errno: ENOENT, code: "ENOENT", what: "sendmsg" });
});
