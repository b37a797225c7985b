import { describe, expect, test } from "bun:test";
import { parseProbeUrl, parseProbeList, ProbeUrlError } from "../../probes/url.ts";
import { parseCheckTarget, splitCheckTargets } from "../../probes/check.ts";

describe("probe URLs", () => {
  test("the four forms parse into their parts", () => {
    expect(parseProbeUrl("tcp://db:5432")).toEqual({ kind: "tcp", url: "tcp://db:5432", host: "db", port: 5432 });
    expect(parseProbeUrl("tcp://[fd00::1]:80")).toMatchObject({ kind: "tcp", host: "fd00::1", port: 80 });
    expect(parseProbeUrl("http://web:8080/healthz?x=1")).toMatchObject({ kind: "http", host: "web", port: 8080, path: "/healthz?x=1", tls: false });
    expect(parseProbeUrl("http://web")).toMatchObject({ port: 80, path: "/" });
    expect(parseProbeUrl("https://web/")).toMatchObject({ port: 443, tls: true });
    expect(parseProbeUrl("exec:pg_isready -h db")).toEqual({ kind: "exec", url: "exec:pg_isready -h db", command: "pg_isready -h db" });
    expect(parseProbeUrl("icmp://10.0.0.1")).toEqual({ kind: "icmp", url: "icmp://10.0.0.1", host: "10.0.0.1" });
    expect(parseProbeUrl("icmp://[302:1::1]")).toMatchObject({ kind: "icmp", host: "302:1::1" });
    expect(parseProbeUrl("tcp://容器1:80")).toMatchObject({ host: "容器1" });
  });

  test("cluster forms: NAME@HOST names a container on that host; ready://NAME[@HOST] (docs/cluster.md)", () => {
    expect(parseProbeUrl("tcp://db@host1:5432")).toEqual({ kind: "tcp", url: "tcp://db@host1:5432", host: "db@host1", port: 5432 });
    expect(parseProbeUrl("http://web@h2:8080/")).toMatchObject({ kind: "http", host: "web@h2", port: 8080 });
    expect(parseProbeUrl("ready://db")).toEqual({ kind: "ready", url: "ready://db", host: "db" });
    expect(parseProbeUrl("ready://db@host1")).toEqual({ kind: "ready", url: "ready://db@host1", host: "db@host1" });
  });

  test("bad URLs throw ProbeUrlError naming the URL and the reason", () => {
    const cases: [string, RegExp][] = [
      ["tcp://db", /needs a port/],
      ["tcp://db:0", /out of range/],
      ["tcp://db:99999", /out of range/],
      ["tcp://db:http", /bad port/],
      ["tcp://::1:80", /brackets/],
      ["tcp://[::1:80", /unclosed/],
      ["ftp://x", /unknown scheme 'ftp'/],
      ["db:5432", /no scheme|unknown scheme/],
      ["exec:", /needs a command/],
      ["icmp://h:3", /no port/],
      ["http://h/a b", /spaces/],
      ["tcp://user:pw@h:1", /user information/],
      ["tcp://a@b@h:1", /user information/],
      ["http://@h/", /user information/],
      ["ready://db:80", /no port/],
      ["ready://db/x", /no path/],
      ["", /empty/],
    ];
    for (const [url, why] of cases) {
      let err: unknown;
      try {
        parseProbeUrl(url);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ProbeUrlError);
      expect((err as Error).message).toContain(`'${url.trim()}'`);
      expect((err as Error).message).toMatch(why);
    }
  });

  test("MAN8S_WAIT_FOR lists split on blanks; quotes keep an exec: probe whole", () => {
    const list = parseProbeList(` tcp://a:1  "exec:test -f /tmp/x && echo y"\thttp://b/ 'exec:echo "q"' `);
    expect(list.map((p) => p.kind)).toEqual(["tcp", "exec", "http", "exec"]);
    expect(list[1]).toMatchObject({ command: "test -f /tmp/x && echo y" });
    expect(list[3]).toMatchObject({ command: 'echo "q"' });
    expect(parseProbeList("")).toEqual([]);
    expect(() => parseProbeList('"exec:x')).toThrow(ProbeUrlError);
  });
});

describe("check targets (MAN8S_CHECK_TARGETS, netctl check)", () => {
  test("short forms stand for tcp:// and icmp://; probe URLs are taken as they are", () => {
    const url = (t: string) => parseCheckTarget(t).url;
    expect(["10.0.0.1", "10.0.0.1:53", "[fd00::1]:53", "fd00::1", "[fd00::1]", "db", "db:5432"].map(url)).toEqual([
      "icmp://10.0.0.1", "tcp://10.0.0.1:53", "tcp://[fd00::1]:53", "icmp://[fd00::1]", "icmp://[fd00::1]", "icmp://db", "tcp://db:5432",
    ]);
    expect(parseCheckTarget("http://db:8080/health")).toMatchObject({ kind: "http", host: "db", port: 8080, path: "/health" });
    expect(parseCheckTarget("exec:test -e /x")).toMatchObject({ kind: "exec", command: "test -e /x" });
  });
  test("bad targets name the target and the reason", () => {
    expect(() => parseCheckTarget("db:99999")).toThrow("bad target 'db:99999': port 99999 out of range 1-65535");
    expect(() => parseCheckTarget("a b")).toThrow(ProbeUrlError);
    expect(() => parseCheckTarget("tcp://db")).toThrow("tcp:// needs a port");
  });
  test("MAN8S_CHECK_TARGETS: blanks or commas separate", () => {
    expect(splitCheckTargets(" a,b  c,,d\t")).toEqual(["a", "b", "c", "d"]);
    expect(splitCheckTargets(undefined)).toEqual([]);
  });
});
