// Pure address math: mbctl vectors (docs/notes.md §10), RFC 5952 text, prefix parsing, and the
// `address` CLI printing exactly what mbctl prints.
import { describe, expect, test } from "bun:test";
import { addressForName, formatIPv6, getsuffixLines, inPrefix6, parseIPv4, parseIPv6, parsePrefix6 } from "../../../common/net/addrmath.ts";

const ROOT = new URL("../../..", import.meta.url).pathname;

// name, getsuffix, with 300:2e98:a4b0:1789::/64, with 300:0:0:1::/64
const VECTORS: [string, string, string, string][] = [
  ["Man8Registry", "::506:6d46:6c9:5800", "300:2e98:a4b0:1789:506:6d46:6c9:5800", "300::1:506:6d46:6c9:5800"],
  ["TestBWContainer3", "::1d44:bc13:a177:c4d", "300:2e98:a4b0:1789:1d44:bc13:a177:c4d", "300::1:1d44:bc13:a177:c4d"],
  ["SomeFutureMachineName", "::78d9:ceb4:751d:d98f", "300:2e98:a4b0:1789:78d9:ceb4:751d:d98f", "300::1:78d9:ceb4:751d:d98f"],
  ["a", "::b980:7785:afee:48bb", "300:2e98:a4b0:1789:b980:7785:afee:48bb", "300::1:b980:7785:afee:48bb"],
  ["", "::a495:991b:7852:b855", "300:2e98:a4b0:1789:a495:991b:7852:b855", "300::1:a495:991b:7852:b855"],
  ["容器1", "::43f:df2c:1e17:d67f", "300:2e98:a4b0:1789:43f:df2c:1e17:d67f", "300::1:43f:df2c:1e17:d67f"],
];
const FIXTURE: [string, string][] = [
  ["test_container", "300:6b9f:cca2:a583:a185:8936:da18:75a5"],
  ["my-dns-server", "300:6b9f:cca2:a583:32a6:11f4:5775:e954"],
  ["test-nginx-1", "300:6b9f:cca2:a583:553f:78f3:d4bf:fd73"],
];

const addr = (name: string, p: string) => formatIPv6(addressForName(name, parsePrefix6(p, 64)!));

describe("mbctl address vectors", () => {
  for (const [name, suffix, a, b] of VECTORS) {
    test(`'${name}'`, () => {
      expect(getsuffixLines(name)).toBe(`容器名字: ${name}\nIPv6 后缀地址: ${suffix}\n`);
      expect(addr(name, "300:2e98:a4b0:1789::/64")).toBe(a);
      expect(addr(name, "300:0:0:1::/64")).toBe(b);
    });
  }
  for (const [name, a] of FIXTURE) test(`upstream fixture '${name}'`, () => expect(addr(name, "300:6b9f:cca2:a583::/64")).toBe(a));
  test("host bits of the prefix are ignored (Python strict=False)", () => {
    expect(addr("Man8Registry", "300:2e98:a4b0:1789:ffff::1/64")).toBe("300:2e98:a4b0:1789:506:6d46:6c9:5800");
  });
  test("other prefix lengths keep more or fewer hash bits", () => {
    // /96: only the last 4 bytes of the digest (06c95800)
    expect(addr("Man8Registry", "300:2e98:a4b0:1789::/96")).toBe("300:2e98:a4b0:1789::6c9:5800");
  });
});

describe("RFC 5952 text", () => {
  const cases: [string, string][] = [
    ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // a single zero group is not compressed
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"], // the longest run wins
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // leftmost on ties
    ["0:0:0:0:0:0:0:0", "::"],
    ["::1", "::1"],
    ["FD77::ABCD", "fd77::abcd"],
    ["::ffff:10.0.0.1", "::ffff:a00:1"],
    ["1:2:3:4:5:6:7:0", "1:2:3:4:5:6:7:0"],
  ];
  for (const [i, o] of cases) test(`${i} -> ${o}`, () => expect(formatIPv6(parseIPv6(i)!)).toBe(o));
  test("invalid addresses are rejected", () => {
    for (const bad of ["", ":::", "1::2::3", "12345::", "g::1", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "::1.2.3.256", "1.2.3.4"]) expect(parseIPv6(bad)).toBeNull();
    for (const bad of ["1.2.3", "256.1.1.1", "01.2.3.4", "a.b.c.d"]) expect(parseIPv4(bad)).toBeNull();
  });
  test("prefix parsing", () => {
    expect(parsePrefix6("300:1::/64")!.len).toBe(64);
    expect(parsePrefix6("300:1::", 64)!.len).toBe(64);
    expect(parsePrefix6("300:1::/129")).toBeNull();
    expect(parsePrefix6("nonsense/64")).toBeNull();
    expect(inPrefix6(parseIPv6("301:2::5")!, parsePrefix6("200::/7")!)).toBe(true);
    expect(inPrefix6(parseIPv6("fd00::5")!, parsePrefix6("200::/7")!)).toBe(false);
  });
});

describe("netctl address CLI", () => {
  const run = (...args: string[]) => Bun.spawnSync([process.execPath, `${ROOT}main.ts`, "netctl", "address", ...args], { stdout: "pipe", stderr: "pipe", env: { ...process.env, MAN8S_YGGDRASIL_PREFIX: "" } });
  test("getsuffix prints mbctl's two lines exactly", () => {
    const r = run("getsuffix", "TestBWContainer3");
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString()).toBe("容器名字: TestBWContainer3\nIPv6 后缀地址: ::1d44:bc13:a177:c4d\n");
  });
  test("NAME --prefix prints the full address", () => {
    for (const [name, , a, b] of VECTORS) {
      expect(run(name, "--prefix", "300:2e98:a4b0:1789::/64").stdout.toString()).toBe(`${a}\n`);
      expect(run(name, "--prefix=300:0:0:1::/64").stdout.toString()).toBe(`${b}\n`);
    }
  });
  test("bad prefix and missing arguments are usage errors (64)", () => {
    const r = run("x", "--prefix", "zz::/64");
    expect(r.exitCode).toBe(64);
    expect(r.stderr.toString()).toContain("'zz::/64' is not an IPv6 prefix");
    expect(run("getsuffix").exitCode).toBe(64);
    expect(run("x").exitCode).toBe(64);
  });
  test("--help", () => {
    const r = run("--help");
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString()).toContain("usage: man8s netctl address getsuffix NAME");
  });
});
