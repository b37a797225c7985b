// Bring-up failures and idempotency with the real binary in plain network namespaces on a lab bridge
// (no nspawn needed for these): bad env -> 65 naming the variable with nothing changed; timeouts -> 69
// naming what never came; a second run of the ygg setup changes nothing.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { BIN, ensureBuilt, haveTools, Lab } from "./lab.ts";

let lab: Lab;

async function up(ns: string, env: Record<string, string>, args: string[] = ["--once"]) {
  const t = performance.now();
  const p = Bun.spawn(["ip", "netns", "exec", ns, BIN, "netctl", "up", ...args], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", MAN8S_RESOLV_CONF: `${lab.dir}/resolv-${ns}`, MAN8S_NETCTL_STATE: `${lab.dir}/state-${ns}.json`, ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err, ms: performance.now() - t };
}

const ipJson = (ns: string, ...args: string[]) => JSON.parse(Bun.spawnSync(["ip", "-n", ns, "-j", ...args]).stdout.toString() || "[]");

describe.skipIf(!haveTools)("bring-up failures and idempotency", () => {
  beforeAll(async () => {
    await ensureBuilt();
    lab = await new Lab("f", { net: 84, dnsmasqExtra: ["--no-ping"] }).start();
  }, 60_000);
  afterAll(async () => {
    await lab?.cleanup();
  }, 60_000);

  test("invalid env values exit 65, name the variable, and change nothing", async () => {
    const ns = await lab.addClientNs();
    writeFileSync(`${lab.dir}/resolv-${ns}`, "untouched\n");
    const cases: [Record<string, string>, string][] = [
      [{ MAN8S_NETWORK: "both" }, "MAN8S_NETWORK"],
      [{ MAN8S_NETWORK_TIMEOUT: "soon" }, "MAN8S_NETWORK_TIMEOUT"],
      [{ MAN8S_NETWORK_TIMEOUT: "-3" }, "MAN8S_NETWORK_TIMEOUT"],
      [{ MAN8S_YGGDRASIL_ADDRESS: "300::zz" }, "MAN8S_YGGDRASIL_ADDRESS"],
      [{ MAN8S_YGGDRASIL_ADDRESS: "2001:db8::5" }, "MAN8S_YGGDRASIL_ADDRESS"],
      [{ MAN8S_YGGDRASIL_PREFIX: "300:1::/48", MAN8S_CONTAINER_NAME: "x" }, "MAN8S_YGGDRASIL_PREFIX"],
      [{ MAN8S_YGGDRASIL_PREFIX: "nope", MAN8S_CONTAINER_NAME: "x" }, "MAN8S_YGGDRASIL_PREFIX"],
      [{ MAN8S_YGGDRASIL_PREFIX: "300:1:2:3::/64" }, "MAN8S_CONTAINER_NAME"],
      [{ MAN8S_YGGDRASIL_ADDRESS: "300:1:2:3::5", MAN8S_YGGDRASIL_GATEWAY: "gw" }, "MAN8S_YGGDRASIL_GATEWAY"],
      [{ MAN8S_HOST_IFACE: "a/b" }, "MAN8S_HOST_IFACE"],
      [{ MAN8S_NETWORK_FAST_START: "maybe" }, "MAN8S_NETWORK_FAST_START"],
      // before: the network came up and the bad target then failed as a check (69)
      [{ MAN8S_CHECK_TARGETS: `10.0.0.1 db:99999` }, "MAN8S_CHECK_TARGETS"],
      [{ MAN8S_CHECK_TARGETS: Array.from({ length: 65 }, (_, i) => `10.0.0.${i}`).join(",") }, "MAN8S_CHECK_TARGETS"],
    ];
    for (const [env, name] of cases) {
      const r = await up(ns, env);
      expect(r.code, `${JSON.stringify(env)}: ${r.err}`).toBe(65);
      expect(r.err).toContain(name);
    }
    // nothing was touched: link still down, no addresses beyond none, resolv.conf as it was
    const link = ipJson(ns, "addr", "show", "dev", "m8nc0")[0];
    expect(link.flags).not.toContain("UP");
    expect(link.addr_info.length).toBe(0);
    expect(readFileSync(`${lab.dir}/resolv-${ns}`, "utf8")).toBe("untouched\n");
  }, 60_000);

  test("MAN8S_NETWORK=none does nothing and succeeds", async () => {
    const ns = await lab.addClientNs();
    const r = await up(ns, { MAN8S_NETWORK: "none" });
    expect(r.code).toBe(0);
    expect(ipJson(ns, "addr", "show", "dev", "m8nc0")[0].flags).not.toContain("UP");
  }, 30_000);

  test("timeouts exit 69 and say what never came", async () => {
    // no carrier: a veth whose peer is down
    const noCarrier = await lab.addClientNs();
    await lab.sh(["ip", "link", "set", lab.hostVeth(noCarrier), "down"], lab.hostNs);
    const nsIface = await lab.addClientNs(); // interface that does not exist
    const results = await Promise.all([
      up(noCarrier, { MAN8S_NETWORK_TIMEOUT: "1.5" }),
      up(nsIface, { MAN8S_HOST_IFACE: "m8nnope", MAN8S_NETWORK_TIMEOUT: "1" }),
    ]);
    expect(results[0].code).toBe(69);
    expect(results[0].err).toContain("no carrier on m8nc0");
    expect(results[0].ms).toBeLessThan(6000);
    expect(results[1].code).toBe(69);
    expect(results[1].err).toContain("interface m8nnope (MAN8S_HOST_IFACE) never appeared");
  }, 30_000);

  // (a duplicate SLAAC address is handled, not fatal: see fastnet.test.ts)
  test("without a server: no DHCP offer (v4), no RA (v6)", async () => {
    const v4 = await lab.addClientNs();
    const v6 = await lab.addClientNs();
    await lab.stopDnsmasq();
    try {
      const [a, b] = await Promise.all([up(v4, { MAN8S_NETWORK: "v4", MAN8S_NETWORK_TIMEOUT: "3" }), up(v6, { MAN8S_NETWORK: "v6", MAN8S_NETWORK_TIMEOUT: "3" })]);
      expect(a.code).toBe(69);
      expect(a.err).toMatch(/no DHCP offer on m8nc0 \(\d+ DISCOVERs sent\)/);
      expect(b.code).toBe(69);
      expect(b.err).toContain("no RA: no SLAAC address on m8nc0");
    } finally {
      await lab.startDnsmasq();
    }
  }, 60_000);

  test("online with v4 only, then the ygg setup twice: the second run changes nothing", async () => {
    const ns = await lab.addClientNs();
    const v4 = await up(ns, { MAN8S_NETWORK: "v4", MAN8S_NETWORK_TIMEOUT: "20" }, ["--once", "--json"]);
    expect(v4.code, v4.err).toBe(0);
    const res = JSON.parse(v4.out.trim().split("\n").pop()!);
    expect(res.addresses.ipv4).toMatch(/^10\.84\.0\.\d+\/24$/);
    expect(res.addresses.ula).toBeUndefined();
    expect(readFileSync(`${lab.dir}/resolv-${ns}`, "utf8")).toContain(`nameserver ${lab.v4}.1`);
    const env = { MAN8S_NETWORK: "v6", MAN8S_CONTAINER_NAME: "idem", MAN8S_YGGDRASIL_PREFIX: lab.yggSubnet, MAN8S_NETWORK_TIMEOUT: "20" };
    const snap = () => JSON.stringify([ipJson(ns, "-6", "route", "show", "table", "199"), ipJson(ns, "-6", "rule"), ipJson(ns, "-6", "addr", "show", "dev", "m8nc0", "scope", "global").map((l: any) => l.addr_info.map((a: any) => [a.local, a.prefixlen, a.nodad, a.noprefixroute]))]);
    const first = await up(ns, env);
    expect(first.code, first.err).toBe(0);
    expect(first.err).toContain("nodad noprefixroute");
    expect(first.err).not.toContain("optimistic DAD not enabled");
    const s1 = snap();
    const second = await up(ns, env);
    expect(second.code, second.err).toBe(0);
    expect(second.err).not.toMatch(/netctl: (address|route|rule|re-applied)/);
    expect(snap()).toBe(s1);
    expect(s1).toContain("200::/7");
    expect(existsSync(`${lab.dir}/state-${ns}.json`)).toBe(true);

    // `check`: bare hosts answer ICMP echo (v4 and v6), dnsmasq listens on TCP 53, .254 does not exist
    const check = (...t: string[]) => Bun.spawnSync(["ip", "netns", "exec", ns, BIN, "netctl", "check", ...t], { stdout: "pipe", stderr: "pipe" });
    const ok = check(`${lab.v4}.1`, `${lab.ula}1`, `tcp://${lab.v4}.1:53`, `[${lab.ula}1]:53`);
    expect(ok.exitCode, ok.stdout.toString() + ok.stderr.toString()).toBe(0);
    expect(ok.stdout.toString().match(/: OK/g)?.length).toBe(4);
    const bad = check(`${lab.v4}.1:53`, `${lab.v4}.254`, `${lab.v4}.1:9`);
    expect(bad.exitCode).toBe(69);
    expect(bad.stdout.toString()).toContain(`check ${lab.v4}.254: FAIL`);
    expect(bad.stdout.toString()).toContain(`check ${lab.v4}.1:9: FAIL`); // nothing listens there
    expect(bad.stdout.toString()).toContain(`check ${lab.v4}.1:53: OK`);

    // MAN8S_CHECK_TARGETS during bring-up: reachable passes, unreachable fails the bring-up with 69
    const good = await up(ns, { MAN8S_NETWORK: "v4", MAN8S_CHECK_TARGETS: `${lab.v4}.1 ${lab.v4}.1:53`, MAN8S_NETWORK_TIMEOUT: "10" });
    expect(good.code, good.err).toBe(0);
    const failing = await up(ns, { MAN8S_NETWORK: "v4", MAN8S_CHECK_TARGETS: `${lab.v4}.1,${lab.v4}.254`, MAN8S_NETWORK_TIMEOUT: "5" });
    expect(failing.code, failing.err).toBe(69);
    expect(failing.err).toContain(`network checks failed (MAN8S_CHECK_TARGETS): ${lab.v4}.254`);
  }, 60_000);

  test("netctl.json that cannot be written is logged, and the network still comes up", async () => {
    const ns = await lab.addClientNs();
    writeFileSync(`${lab.dir}/not-a-dir-${ns}`, "");
    const r = await up(ns, { MAN8S_NETWORK: "v4", MAN8S_NETWORK_TIMEOUT: "20", MAN8S_NETCTL_STATE: `${lab.dir}/not-a-dir-${ns}/netctl.json` });
    expect(r.code, r.err).toBe(0);
    // before: nothing said (the error was swallowed); now one line per kind of failure
    expect(r.err.match(/netctl: cannot write \S+netctl\.json: /g)?.length).toBe(1);
  }, 60_000);

  test("after stop() the library keeps nothing alive: the process ends by itself", async () => {
    const ns = await lab.addClientNs();
    const t = performance.now();
    const p = Bun.spawn(["ip", "netns", "exec", ns, process.execPath, new URL("./bringup-exit.ts", import.meta.url).pathname], {
      env: { PATH: process.env.PATH ?? "", MAN8S_NETWORK: "v4", MAN8S_RESOLV_CONF: `${lab.dir}/resolv-${ns}`, MAN8S_NETCTL_STATE: `${lab.dir}/state-${ns}.json` },
      stdout: "pipe",
      stderr: "pipe",
    });
    const kill = setTimeout(() => p.kill("SIGKILL"), 20_000);
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    clearTimeout(kill);
    expect(code, err).toBe(0);
    const r = JSON.parse(out);
    expect(r.ipv4).toMatch(/^10\.84\.0\./);
    // the process exits right after stop(), not after a lease timer (T1 would be 60 s)
    expect(performance.now() - t).toBeLessThan(15_000);
  }, 30_000);
});
