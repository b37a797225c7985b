// netctl in real systemd-nspawn containers (--as-pid2 --network-bridge, busybox-static rootfs, bundle at
// /man8s-init) against real dnsmasq and real yggdrasil, asserted from both sides. Three labs run in parallel
// so the slow parts (renewal at T1, expiry after a 2-minute lease, NAK at renewal) overlap:
//   A: yggdrasil nodes A (host) + B (remote), containers a1, a2: online state, reachability, DNS, status, T1 renewal
//   B: container b1: dnsmasq stopped past the lease -> address removed, app alive -> dnsmasq back -> address back
//   C: container c1: dnsmasq restarted with another range -> NAK at renewal -> new address replaces the old
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { addressForName, formatIPv6, parsePrefix6 } from "../../common/net/addrmath.ts";
import { type Container, dhcpLines, ensureBuilt, haveTools, haveYgg, Lab, waitFor } from "./lab.ts";

/** Starts a container under the real init, which brings the network up and stays resident with the app. */
function startNet(lab: Lab, name: string, env: Record<string, string> = {}): Container {
  const e = { MAN8S_CONTAINER_NAME: name, MAN8S_YGGDRASIL_PREFIX: lab.yggSubnet, ...env };
  const file = `${Object.entries({ ...e, MAN8S_APPLICATION_ARGV: JSON.stringify(["/bin/sleep", "100000"]) })
    .map(([k, v]) => `${k}=${v}`)
    .join("\n")}\n`;
  return lab.startContainer(name, {}, ["/man8s-init/init"], { "/man8env.env": file });
}

const online = (c: Container, ms = 40_000) =>
  waitFor(`${c.name} online`, () => (c.exited ? Promise.reject(new Error(`${c.name} exited:\n${c.log()}`)) : c.log().includes("netctl: online in")), ms, 100);

async function ipv4(c: Container): Promise<{ local: string; prefixlen: number; valid_life_time: number } | undefined> {
  const l = await c.ipJson(["-4", "addr", "show", "dev", "host0"]);
  return l[0]?.addr_info?.[0];
}

async function macOf(c: Container): Promise<string> {
  return (await c.ipJson(["link", "show", "host0"]))[0].address;
}

const nsenterAll = (c: Container, cmd: string[]) => {
  const r = Bun.spawnSync(["nsenter", "-t", String(c.payloadPid()), "-a", "--", ...cmd], { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(!haveTools)("netctl in nspawn containers under the real init (/man8s-init/init)", () => {
  let A: Lab, B: Lab, C: Lab;
  let a1: Container, a2: Container, b1: Container, c1: Container;
  let expiry: Promise<{ goneAfterStopMs: number; aliveWhileGone: boolean; defaultRouteWhileGone: boolean; backAfterRestartMs: number; before: string; after: string }>;
  let nak: Promise<{ before: string; after: string; oldStillThere: boolean; defaultSrc: string }>;

  beforeAll(async () => {
    await ensureBuilt();
    A = new Lab("a", { net: 81, ygg: haveYgg });
    B = new Lab("b", { net: 82 });
    C = new Lab("c", { net: 83, dnsmasqExtra: ["--dhcp-option=option:T1,12", "--dhcp-option=option:T2,100"] });
    await Promise.all([A.start(), B.start(), C.start()]);
    a1 = startNet(A, "m8na1");
    a2 = startNet(A, "m8na2");
    b1 = startNet(B, "m8nb1", { MAN8S_NETWORK: "v4" });
    c1 = startNet(C, "m8nc1", { MAN8S_NETWORK: "v4" });
    await Promise.all([online(a1), online(a2), online(b1), online(c1)]);

    // B: stop the server for longer than the lease (2 min); the address must go, the app must stay
    expiry = (async () => {
      const before = (await ipv4(b1))!.local;
      await B.stopDnsmasq();
      const tStop = Date.now();
      await waitFor("b1 lease to expire", async () => !(await ipv4(b1)), 200_000, 500);
      const goneAfterStopMs = Date.now() - tStop;
      const aliveWhileGone = !b1.exited && b1.payloadPid() !== undefined;
      const routes = await b1.ipJson(["-4", "route", "show", "default"]);
      await sleep(1000);
      await B.startDnsmasq();
      const tStart = Date.now();
      const back = await waitFor("b1 address back", () => ipv4(b1), 60_000, 250);
      return { goneAfterStopMs, aliveWhileGone, defaultRouteWhileGone: routes.length > 0, backAfterRestartMs: Date.now() - tStart, before, after: back.local };
    })();
    expiry.catch(() => {});

    // C: a server that no longer knows our address NAKs the renewal (T1 = 12 s here)
    nak = (async () => {
      const before = (await ipv4(c1))!.local;
      await C.stopDnsmasq();
      Bun.spawnSync(["rm", "-f", `${C.dir}/dnsmasq.leases`]);
      await C.startDnsmasq(["--dhcp-authoritative", "--dhcp-option=option:T1,12", "--dhcp-option=option:T2,100"], `${C.v4}.50,${C.v4}.60`);
      const after = await waitFor("c1 new address", async () => {
        const a = await ipv4(c1);
        return a && a.local !== before ? a : undefined;
      }, 90_000, 250);
      const all = (await c1.ipJson(["-4", "addr", "show", "dev", "host0"]))[0].addr_info.map((x: { local: string }) => x.local);
      const def = await c1.ipJson(["-4", "route", "show", "default"]);
      return { before, after: after.local, oldStillThere: all.includes(before), defaultSrc: def[0]?.prefsrc ?? "" };
    })();
    nak.catch(() => {});
  }, 120_000);

  afterAll(async () => {
    await Promise.all([A?.cleanup(), B?.cleanup(), C?.cleanup()]);
  }, 120_000);

  test("container side: lease + default route, resolv.conf, SLAAC non-tentative, ygg address, table 199, rule", async () => {
    const v4 = (await ipv4(a1))!;
    expect(v4.local).toMatch(/^10\.81\.0\.\d+$/);
    expect(v4.prefixlen).toBe(24);
    expect(v4.valid_life_time).toBeGreaterThan(60);
    expect(v4.valid_life_time).toBeLessThanOrEqual(120); // lifetime = the lease
    const def4 = await a1.ipJson(["-4", "route", "show", "default"]);
    expect(def4[0].gateway).toBe(`${A.v4}.1`);
    const resolv = readFileSync(`${a1.rootfs}/etc/resolv.conf`, "utf8");
    expect(resolv).toContain(`nameserver ${A.v4}.1`);
    expect(resolv).toContain("search lab.test");

    const v6 = (await a1.ipJson(["-6", "addr", "show", "dev", "host0", "scope", "global"]))[0].addr_info as any[];
    const ula = v6.find((a) => a.local.startsWith(A.ula));
    expect(ula).toBeDefined();
    expect(ula.tentative).toBeUndefined();
    const ygg = formatIPv6(addressForName("m8na1", parsePrefix6(A.yggSubnet, 64)!));
    const y = v6.find((a) => a.local === ygg);
    expect(y).toBeDefined();
    expect(y.prefixlen).toBe(64);
    expect(y.nodad).toBe(true);
    expect(y.noprefixroute).toBe(true);

    const t199 = await a1.ipJson(["-6", "route", "show", "table", "199"]);
    const sub = A.yggSubnet.replace("/64", "");
    expect(t199.find((r: any) => r.dst === `${sub}/64`)?.prefsrc).toBe(ygg);
    const r7 = t199.find((r: any) => r.dst === "200::/7");
    expect(r7?.gateway).toBe(`${sub}1`);
    expect(r7?.prefsrc).toBe(ygg);
    const rules = await a1.ipJson(["-6", "rule"]);
    expect(rules.some((r: any) => r.priority === 100 && r.dst === "200::" && r.dstlen === 7 && r.table === "199")).toBe(true);
    // ordinary IPv6 leaves with the ULA as source
    const def6 = await a1.ipJson(["-6", "route", "show", "default"]);
    expect(def6.some((r: any) => r.prefsrc === ula.local)).toBe(true);
  });

  test("host side: dnsmasq leased the address the container has", async () => {
    const mac = await macOf(a1);
    const v4 = (await ipv4(a1))!.local;
    const leases = readFileSync(`${A.dir}/dnsmasq.leases`, "utf8");
    expect(leases).toMatch(new RegExp(`${mac} ${v4.replace(/\./g, "\\.")} m8na1`));
    expect(dhcpLines(A.dnsmasqLog, mac).some((l) => l.includes(`DHCPACK(${A.bridge}) ${v4} ${mac} m8na1`))).toBe(true);
  });

  test("reachability: bridge over IPv4 and ULA, 2xx target with the ygg source, DNS", async () => {
    expect(await a1.ping(`${A.v4}.1`)).toBe(true);
    expect(await a1.ping(`${A.ula}1`)).toBe(true);
    const ygg = formatIPv6(addressForName("m8na1", parsePrefix6(A.yggSubnet, 64)!));
    const get = await a1.ipJson(["-6", "route", "get", A.fake2xx]);
    expect(get[0].prefsrc).toBe(ygg);
    expect(get[0].table).toBe("199");
    expect(await a1.ping(A.fake2xx)).toBe(true);
    const ns = nsenterAll(a1, ["/bin/nslookup", "gw.lab.test"]);
    expect(ns.out).toContain(`${A.v4}.1`);
  });

  test("two containers reach each other over their ygg addresses", async () => {
    const y1 = formatIPv6(addressForName("m8na1", parsePrefix6(A.yggSubnet, 64)!));
    const y2 = formatIPv6(addressForName("m8na2", parsePrefix6(A.yggSubnet, 64)!));
    expect(await a1.ping(y2)).toBe(true);
    expect(await a2.ping(y1)).toBe(true);
    const get = await a1.ipJson(["-6", "route", "get", y2]);
    expect(get[0].prefsrc).toBe(y1);
    // `netctl check NAME`: a container name that DNS does not know maps to its ygg address in our prefix
    // (dot-less names are container names; names with a dot go to DNS, here dnsmasq)
    const r = nsenterAll(a1, ["/bin/env", `MAN8S_YGGDRASIL_PREFIX=${A.yggSubnet}`, "/man8s-init/man8s", "netctl", "check", "m8na2", "gw.lab.test", "m8nnosuch"]);
    expect(r.code).toBe(69);
    expect(r.out).toContain(`check m8na2 (${y2}): OK`);
    expect(r.out).toMatch(new RegExp(`check gw\\.lab\\.test \\((${A.v4.replace(/\./g, "\\.")}\\.1|${A.ula}1)\\): OK`));
    expect(r.out).toContain(`check m8nnosuch (${formatIPv6(addressForName("m8nnosuch", parsePrefix6(A.yggSubnet, 64)!))}): FAIL`);
  }, 30_000);

  test.skipIf(!haveYgg)("a real remote yggdrasil node's 2xx address is reachable with the ygg source", async () => {
    expect(A.yggB).toMatch(/^2[0-9a-f]{2}:/);
    // the first packets may race the overlay's path setup: allow a few tries
    const ok = await waitFor("ping to the remote ygg node", () => a1.ping(A.yggB), 20_000, 500);
    expect(ok).toBe(true);
  }, 30_000);

  test("`netctl status --json` inside the container reports the same state", () => {
    const r = nsenterAll(a1, ["/man8s-init/man8s", "netctl", "status", "--json"]);
    expect(r.code, r.err).toBe(0);
    const s = JSON.parse(r.out);
    expect(s.iface.name).toBe("host0");
    expect(s.iface.carrier).toBe(true);
    const ygg = formatIPv6(addressForName("m8na1", parsePrefix6(A.yggSubnet, 64)!));
    expect(s.addresses.some((a: any) => a.address === ygg && a.flags.includes("nodad"))).toBe(true);
    expect(s.table199.length).toBe(2);
    expect(s.rules).toEqual([{ priority: 100, to: "200::/7", table: 199 }]);
    expect(s.lease.lease.server).toBe(`${A.v4}.1`);
    expect(s.lease.timings.total).toBeGreaterThan(0);
  });

  test("renewal at T1: dnsmasq sees the unicast renew and the lifetime is refreshed", async () => {
    const mac = await macOf(a1);
    // T1 = 60 s after the bind; allow generous slack
    await waitFor("a1 renewal", () => a1.log().includes("dhcp4: renewed"), 100_000, 500);
    const lines = dhcpLines(A.dnsmasqLog, mac);
    expect(lines.filter((l) => l.includes("DHCPACK")).length).toBeGreaterThanOrEqual(2);
    expect(a1.log()).toContain(`renewing (T1) with ${A.v4}.1`);
    const v4 = (await ipv4(a1))!;
    expect(v4.valid_life_time).toBeGreaterThan(100);
  }, 120_000);

  test("expiry: with dnsmasq gone past the lease the address goes, the app stays; it returns after a restart", async () => {
    const r = await expiry;
    // the lease was 120 s and is counted from the last ACK, so it cannot vanish much sooner than ~60 s after the stop
    expect(r.goneAfterStopMs).toBeGreaterThan(50_000);
    expect(r.aliveWhileGone).toBe(true);
    expect(r.defaultRouteWhileGone).toBe(false);
    expect(b1.log()).toContain("expired: removing address and routes");
    // renewals unicast to a server that is gone come back refused (ICMP port unreachable): never an init error
    expect(b1.log()).not.toContain("internal error");
    expect(r.backAfterRestartMs).toBeLessThan(40_000);
    expect(r.after).toMatch(/^10\.82\.0\.\d+$/);
    expect(b1.exited).toBe(false);
  }, 300_000);

  test("NAK: the client starts over and the new address replaces the old one", async () => {
    const r = await nak;
    expect(c1.log()).toContain("dhcp4: NAK");
    expect(C.dnsmasqLog).toContain("DHCPNAK");
    const last = Number(r.after.split(".")[3]);
    expect(last).toBeGreaterThanOrEqual(50);
    expect(last).toBeLessThanOrEqual(60);
    expect(r.oldStillThere).toBe(false);
    expect(r.defaultSrc).toBe(r.after);
  }, 120_000);

  test("the real init ran the network phase and recorded it in its status record", () => {
    expect(a1.log()).toMatch(/\[network\] done in/);
    const r = nsenterAll(a1, ["/bin/cat", "/run/man8s/status.json"]);
    expect(r.code, r.err).toBe(0);
    const rec = JSON.parse(r.out);
    const ygg = formatIPv6(addressForName("m8na1", parsePrefix6(A.yggSubnet, 64)!));
    expect(rec.network.addresses.yggdrasil).toBe(ygg);
    expect(rec.network.addresses.ipv4).toMatch(/^10\.81\.0\./);
    expect(rec.network.timings.online_at).toBeGreaterThan(0);
    // the app got the interface name
    const env = nsenterAll(a1, ["/bin/sh", "-c", "cat /proc/$(pidof sleep)/environ | tr '\\0' '\\n' | grep MAN8S_HOST_IFACE"]);
    expect(env.out.trim()).toBe("MAN8S_HOST_IFACE=host0");
  });

  test("a stop signal ends the payload cleanly", async () => {
    expect(await a2.stop()).toBe(0);
  }, 30_000);
});
