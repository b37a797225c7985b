// The rtnetlink library against the real kernel, in a network namespace this test owns.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { isRoot } from "./lab.ts";

const NS = `m8nnl${process.pid % 10000}`;
const sh = (...cmd: string[]) => {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr}`);
};

beforeAll(() => {
  if (!isRoot) return;
  Bun.spawnSync(["ip", "netns", "del", NS]);
  sh("ip", "netns", "add", NS);
  sh("ip", "-n", NS, "link", "add", "m8nc0", "type", "veth", "peer", "name", "m8nc1");
  sh("ip", "-n", NS, "link", "set", "m8nc1", "up");
});
afterAll(() => {
  if (isRoot) Bun.spawnSync(["ip", "netns", "del", NS]);
});

test.skipIf(!isRoot)("links, addresses, routes, rules, errors and event resync on a real kernel", () => {
  const r = Bun.spawnSync(["ip", "netns", "exec", NS, process.execPath, new URL("./nl-exercise.ts", import.meta.url).pathname], { stdout: "pipe", stderr: "pipe" });
  expect(r.stderr.toString()).toBe("");
  const rep = JSON.parse(r.stdout.toString());
  // lifetimes are what we set, and REPLACE refreshes them
  expect(rep.lifetimes[0]).toBeGreaterThan(95);
  expect(rep.lifetimes[0]).toBeLessThanOrEqual(100);
  expect(rep.lifetimes[1]).toBeGreaterThan(295);
  // a duplicate add fails with EEXIST and says what was asked
  expect(rep.duplicate.errno).toBe(17);
  expect(rep.duplicate.message).toContain("add address 10.66.0.5/24");
  // tentative prefsrc: EINVAL, the request described, and the kernel's own text
  expect(rep.tentative).toBe(true);
  expect(rep.tentativeSrc.errno).toBe(22);
  expect(rep.tentativeSrc.message).toContain("add route 2001:db8:77::/48");
  expect(rep.tentativeSrc.message).toContain("src 2001:db8:5::10 table 199");
  expect(rep.tentativeSrc.message.toLowerCase()).toContain("invalid source address");
  expect(rep.nodadRoute).toBeNull();
  expect(rep.table199).toEqual(["2001:db8:77::/48 src 2001:db8:5::11"]);
  // tables >= 256 travel in RTA_TABLE
  expect(rep.bigTable).toBeNull();
  expect(rep.bigTableListed).toBe(1);
  expect(rep.rule1).toBeNull();
  expect(rep.rule2.errno).toBe(17);
  expect(rep.rules).toEqual(["100 200::/7"]);
  expect(rep.delMissing.errno).toBe(99); // EADDRNOTAVAIL
  expect(rep.carrier).toBe(true);
  expect(rep.resyncs).toBeGreaterThanOrEqual(1);
  expect(rep.eventsAfterResync).toBeGreaterThanOrEqual(1);
}, 30_000);
