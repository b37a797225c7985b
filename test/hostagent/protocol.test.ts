// Pure parts, checked against real references where one exists (the rootfs on disk; shlex.quote moved to
// test/common/shellwords.test.ts).
import { afterAll, describe, expect, test } from "bun:test";
import { encode } from "@msgpack/msgpack";
import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { FrameReader, MAX_FRAME, encodeFrame, parseRequest } from "../../hostagent/protocol.ts";
import { resolveIn, whichIn } from "../../hostagent/rootfs.ts";
import { checkAbsPath, checkName } from "../../hostagent/layout.ts";
import { cleanup, tmp } from "./helpers.ts";

afterAll(cleanup);

function frame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

describe("FrameReader", () => {
  test("reassembles frames split at every byte and several frames in one chunk", () => {
    const a = encodeFrame({ id: 1, cmd: "ping" });
    const b = encodeFrame({ id: 2, cmd: "version", args: { x: "é".repeat(300) } });
    const all = new Uint8Array([...a, ...b, ...a]);
    const r = new FrameReader();
    const got: unknown[] = [];
    for (let i = 0; i < all.length; i++) for (const f of r.push(all.subarray(i, i + 1))) got.push(f);
    expect(got).toEqual([
      { kind: "value", value: { id: 1, cmd: "ping" } },
      { kind: "value", value: { id: 2, cmd: "version", args: { x: "é".repeat(300) } } },
      { kind: "value", value: { id: 1, cmd: "ping" } },
    ]);
    expect(r.pending).toBe(0);
    const r2 = new FrameReader();
    expect(r2.push(all).length).toBe(3);
  });

  test("a header above 1 MiB stops the reader; exactly 1 MiB is accepted", () => {
    const r = new FrameReader();
    const hdr = new Uint8Array(4);
    new DataView(hdr.buffer).setUint32(0, MAX_FRAME + 1);
    expect(r.push(hdr)).toEqual([{ kind: "too-large", length: MAX_FRAME + 1 }]);
    expect(r.push(encodeFrame({ id: 1 }))).toEqual([]);
    const big = encode({ id: 1, cmd: "ping", args: { pad: "x".repeat(MAX_FRAME - 40) } });
    const pad = MAX_FRAME - big.length;
    const exact = encode({ id: 1, cmd: "ping", args: { pad: "x".repeat(MAX_FRAME - 40 + pad) } });
    expect(exact.length).toBe(MAX_FRAME);
    const ok = new FrameReader().push(frame(exact));
    expect(ok.length).toBe(1);
    expect(ok[0]!.kind).toBe("value");
    expect(() => encodeFrame({ pad: "x".repeat(MAX_FRAME) })).toThrow();
  });

  test("bad msgpack, an empty frame and trailing bytes are reported, and the stream continues", () => {
    const r = new FrameReader();
    const bad = frame(new Uint8Array([0xc1])); // 0xc1 is never used in msgpack
    const empty = frame(new Uint8Array(0));
    const trailing = frame(new Uint8Array([...encode({ id: 1 }), 0x01]));
    const truncatedMap = frame(new Uint8Array([0x82, 0xa2, 0x69, 0x64])); // map of 2 with 1 key only
    const got = r.push(new Uint8Array([...bad, ...empty, ...trailing, ...truncatedMap, ...encodeFrame({ id: 9, cmd: "ping" })]));
    expect(got.map((f) => f.kind)).toEqual(["bad-msgpack", "bad-msgpack", "bad-msgpack", "bad-msgpack", "value"]);
  });

  test("request envelope validation", () => {
    expect(parseRequest([1, 2])).toMatchObject({ code: "E_BAD_REQUEST", id: null });
    expect(parseRequest({ id: 3, cmd: 5 })).toMatchObject({ code: "E_BAD_REQUEST", id: 3 });
    expect(parseRequest({ id: { x: 1 }, cmd: "ping" })).toMatchObject({ code: "E_BAD_REQUEST", id: null });
    expect(parseRequest({ id: "a", cmd: "ping", args: [1] })).toMatchObject({ code: "E_BAD_REQUEST", id: "a" });
    expect(parseRequest({ id: 7, cmd: "ping" })).toEqual({ req: { id: 7, cmd: "ping", args: {} } });
  });
});

describe("rootfs path resolution", () => {
  test("absolute symlinks mean the rootfs; '..' stops at its root; loops end", () => {
    const r = tmp("rootfs");
    mkdirSync(`${r}/usr/bin`, { recursive: true });
    mkdirSync(`${r}/opt`, { recursive: true });
    writeFileSync(`${r}/usr/bin/real`, "#!/bin/sh\n", { mode: 0o755 });
    symlinkSync("/usr/bin/real", `${r}/abs`);
    symlinkSync("../../../../../../usr/bin/real", `${r}/opt/rel`);
    symlinkSync("/etc/passwd", `${r}/hostonly`); // exists on the host, not in the image
    symlinkSync("loop2", `${r}/loop1`);
    symlinkSync("loop1", `${r}/loop2`);
    symlinkSync("/usr", `${r}/usrlink`);
    expect(resolveIn(r, "/abs").path).toBe("/usr/bin/real");
    expect(resolveIn(r, "/opt/rel").path).toBe("/usr/bin/real");
    expect(resolveIn(r, "/../../../usr/bin/real").path).toBe("/usr/bin/real");
    expect(resolveIn(r, "/usrlink/bin/../bin/real").path).toBe("/usr/bin/real");
    expect(resolveIn(r, "/hostonly").stat).toBeNull();
    expect(resolveIn(r, "/loop1").stat).toBeNull();
    expect(resolveIn(r, "/abs").links).toEqual(["/abs -> /usr/bin/real"]);
    expect(whichIn(r, "real", "/nope:/usrlink/bin").found?.path).toBe("/usr/bin/real");
    expect(whichIn(r, "passwd", "/etc").found).toBeNull();
  });

  test("names and paths", () => {
    expect(checkName("Man8Registry")).toBe("Man8Registry");
    for (const bad of ["", "../x", "a/b", "-x", "a..b", "x.", "a b", "a".repeat(65)]) expect(() => checkName(bad)).toThrow();
    expect(checkAbsPath("/a//b/", "p")).toBe("/a/b");
    for (const bad of ["rel", "/a/../b", "/a/./b", "", "/a\0b"]) expect(() => checkAbsPath(bad, "p")).toThrow();
  });
});
