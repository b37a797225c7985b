// `man8s host setup` and `host check`: what the files say (rendering), and the real binary writing into a
// temporary root: idempotent, --dry-run writes nothing, files it did not write (or that were edited) stay.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { scratchDir } from "../scratch.ts";
import { checkPrefix64, hostAddress, networkFile } from "../../hostagent/host/network.ts";
import { isOurs, withMarker } from "../../hostagent/host/setup.ts";
import { agentServiceUnit, agentSocketUnit, nspawnDropIn } from "../../hostagent/host/units.ts";
import { yggSubnetOf } from "../../hostagent/host/ygg.ts";
import { BIN, ensureBuilt } from "../hostagent/helpers.ts";

const dirs: string[] = [];
const tmp = () => {
  const d = scratchDir("m8s-setup");
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const YGG = "300:2e98:a4b0:1789::/64";

function host(...args: string[]) {
  const r = Bun.spawnSync([BIN, "host", ...args], { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

/** every file under dir, relative path → content */
function tree(dir: string): Map<string, string> {
  const m = new Map<string, string>();
  const walk = (p: string) => {
    for (const e of readdirSync(p, { withFileTypes: true })) {
      const f = `${p}/${e.name}`;
      if (e.isDirectory()) walk(f);
      else m.set(f.slice(dir.length), readFileSync(f, "utf8"));
    }
  };
  if (existsSync(dir)) walk(dir);
  return m;
}

describe("rendering", () => {
  test("the bridge's .network: addresses (IPv4, ULA ::1, ygg ::1), DHCP server with DNS, RAs with the ULA, masquerading", () => {
    const n = networkFile({ bridge: "srvgrp0", ula: "fd12:3456:789a:1::/64", ipv4: "172.17.0.1/16", yggSubnet: YGG, dns: ["9.9.9.9"] });
    expect(n).toContain("[Match]\nName=srvgrp0\n");
    expect(n.match(/^Address=.*$/gm)).toEqual(["Address=172.17.0.1/16", "Address=fd12:3456:789a:1::1/64", "Address=300:2e98:a4b0:1789::1/64"]);
    for (const l of ["DHCPServer=yes", "IPv6SendRA=yes", "IPMasquerade=both", "ConfigureWithoutCarrier=yes", "EmitDNS=yes", "DNS=9.9.9.9"]) expect(n).toMatch(new RegExp(`^${l}$`, "m"));
    expect(n).toMatch(/\[IPv6Prefix\]\nPrefix=fd12:3456:789a:1::\/64\n/);
    const noYgg = networkFile({ bridge: "b", ula: "fc00::/64", ipv4: "10.0.0.1/24", yggSubnet: null, dns: [] });
    expect(noYgg.match(/^Address=.*$/gm)).toEqual(["Address=10.0.0.1/24", "Address=fc00::1/64"]);
    expect(noYgg).not.toMatch(/^DNS=/m);
  });

  test("prefixes: host bits cleared, only /64, ::1 inside", () => {
    expect(checkPrefix64("300:2e98:a4b0:1789:1::5/64", "--ula")).toBe(YGG.replace("::/64", "::/64"));
    expect(() => checkPrefix64("fc00::/48", "--ula")).toThrow("/64");
    expect(() => checkPrefix64("fc00::", "--ula")).toThrow("not an IPv6 prefix");
    expect(() => checkPrefix64("nonsense/64", "--ula")).toThrow("not an IPv6 prefix");
    expect(hostAddress("fc00::/64")).toBe("fc00::1/64");
    expect(hostAddress(YGG)).toBe("300:2e98:a4b0:1789::1/64");
  });

  test("yggdrasilctl -json getSelf of 0.4 and 0.5 both give the subnet", () => {
    expect(yggSubnetOf(JSON.stringify({ address: "202:1::1", subnet: "302:1:2:3::/64", key: "x" }))).toBe("302:1:2:3::/64");
    expect(yggSubnetOf(JSON.stringify({ self: { "200:abcd::1": { coords: [1], subnet: "300:abcd:1:2::/64" } } }))).toBe("300:abcd:1:2::/64");
    expect(yggSubnetOf("Fatal error: dial unix")).toBeUndefined();
    expect(yggSubnetOf(JSON.stringify({ subnet: "300::/48" }))).toBeUndefined();
  });

  test("units: socket 0600 root at the admin path; the service needs it; containers start after the agent (so stop before it)", () => {
    const o = { binary: "/usr/local/bin/man8s", bundle: "/usr/local/lib/man8s init", yggSubnet: YGG };
    const s = agentSocketUnit(o);
    for (const l of ["ListenStream=/run/man8s/agent.sock", "SocketMode=0600", "SocketUser=root", "SocketGroup=root", "WantedBy=sockets.target"]) expect(s).toMatch(new RegExp(`^${l}$`, "m"));
    const svc = agentServiceUnit(o);
    expect(svc).toMatch(/^Requires=man8s-agent\.socket$/m);
    expect(svc).toMatch(/^ExecStart=\/usr\/local\/bin\/man8s hostagent serve --socket \/run\/man8s\/agent\.sock --bundle "\/usr\/local\/lib\/man8s init" --ygg-prefix 300:2e98:a4b0:1789::\/64$/m);
    const d = nspawnDropIn();
    expect(d).toMatch(/^\[Unit\]\nWants=man8s-agent\.service\nAfter=man8s-agent\.service$/m);
  });

  test("the marker: a file as written is ours; any edit (or none marker) is not", () => {
    const f = withMarker("[Unit]\nA=1\n");
    expect(isOurs(f)).toBe(true);
    expect(isOurs(f.replace("A=1", "A=2"))).toBe(false);
    expect(isOurs("[Unit]\nA=1\n")).toBe(false);
    expect(isOurs(`${f}# my note\n`)).toBe(false);
  });
});

describe("man8s host setup --root (the real binary)", () => {
  const args = (root: string, ...more: string[]) => ["setup", "--root", root, "--ygg-subnet", YGG, "--binary", "/opt/man8s/man8s", ...more];

  test("first run writes every file; the second changes nothing and says so; --dry-run prints all and writes nothing", () => {
    ensureBuilt();
    const root = `${tmp()}/root`;
    const dry = host(...args(root, "--dry-run"));
    expect(dry.code).toBe(0);
    expect(existsSync(root)).toBe(false);
    for (const f of ["/etc/systemd/network/50-man8s-srvgrp0.netdev", "/etc/systemd/network/50-man8s-srvgrp0.network", "/etc/sysctl.d/90-man8s.conf", "/etc/systemd/system/man8s-agent.socket", "/etc/systemd/system/man8s-agent.service", "/etc/systemd/system/systemd-nspawn@.service.d/50-man8s-agent.conf"]) {
      expect(dry.out).toContain(`--- ${root}${f} (would be created)`);
    }
    const first = host(...args(root));
    expect(first.code).toBe(0);
    expect(first.out.match(/^created /gm)?.length).toBe(6);
    const files = tree(root);
    expect(files.size).toBe(6);
    // what --dry-run printed is exactly what was written
    for (const [p, text] of files) expect(dry.out).toContain(`${root}${p} (would be created)\n${text}`);
    expect(files.get("/etc/sysctl.d/90-man8s.conf")).toContain("net.ipv6.conf.all.forwarding = 1");
    expect(files.get("/etc/systemd/system/man8s-agent.service")).toContain("ExecStart=/opt/man8s/man8s hostagent serve --socket /run/man8s/agent.sock --bundle /opt/man8s/man8s-init --ygg-prefix 300:2e98:a4b0:1789::/64");
    expect((statSync(`${root}/etc/systemd/system/man8s-agent.socket`).mode & 0o777).toString(8)).toBe("644");
    const mtimes = [...files.keys()].map((p) => statSync(root + p).mtimeMs);
    const second = host(...args(root));
    expect(second.code).toBe(0);
    expect(second.out).toMatch(/nothing changed\n$/);
    expect(second.out.match(/^unchanged /gm)?.length).toBe(6);
    expect([...files.keys()].map((p) => statSync(root + p).mtimeMs)).toEqual(mtimes);
    // leaves no temp files behind
    expect(tree(root).size).toBe(6);
  });

  test("a changed option updates only the files it affects", () => {
    ensureBuilt();
    const root = `${tmp()}/root`;
    expect(host(...args(root)).code).toBe(0);
    const r = host(...args(root, "--ula", "fd00:1:2:3::/64"));
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^updated +\S+50-man8s-srvgrp0\.network$/m);
    expect(r.out.match(/^updated /gm)?.length).toBe(1);
    expect(readFileSync(`${root}/etc/systemd/network/50-man8s-srvgrp0.network`, "utf8")).toContain("Address=fd00:1:2:3::1/64");
  });

  test("a file it did not write, or one edited since, is never overwritten without --force; then nothing is written at all", () => {
    ensureBuilt();
    const root = `${tmp()}/root`;
    mkdirSync(`${root}/etc/sysctl.d`, { recursive: true });
    writeFileSync(`${root}/etc/sysctl.d/90-man8s.conf`, "# the admin's own\nnet.ipv4.ip_forward = 0\n");
    const r = host(...args(root));
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${root}/etc/sysctl.d/90-man8s.conf exists and was not written by man8s host setup; not overwritten (use --force`);
    expect(tree(root).size).toBe(1); // all or nothing
    expect(readFileSync(`${root}/etc/sysctl.d/90-man8s.conf`, "utf8")).toContain("the admin's own");
    // dry-run says so too, per file
    expect(host(...args(root, "--dry-run")).out).toContain("90-man8s.conf (refused: exists and was not written by man8s host setup)");
    expect(host(...args(root, "--force")).code).toBe(0);
    expect(readFileSync(`${root}/etc/sysctl.d/90-man8s.conf`, "utf8")).toContain("net.ipv4.ip_forward = 1");
    // an edit to a file setup wrote: left alone too
    const unit = `${root}/etc/systemd/system/man8s-agent.service`;
    writeFileSync(unit, readFileSync(unit, "utf8").replace("RestartSec=1", "RestartSec=5"));
    const again = host(...args(root, "--ula", "fd00::/64"));
    expect(again.code).toBe(1);
    expect(again.err).toContain(`${unit} was edited after man8s host setup wrote it`);
    expect(readFileSync(unit, "utf8")).toContain("RestartSec=5");
  });

  test("bad input: distinct usage errors, nothing written", () => {
    ensureBuilt();
    const root = `${tmp()}/root`;
    for (const [flag, value, msg] of [
      ["--bridge", "a/b", "not an interface name"],
      ["--bridge", "x".repeat(16), "not an interface name"],
      ["--ula", "fc00::/48", "must be a /64"],
      ["--ipv4", "172.17.0.1", "ADDRESS/LENGTH"],
      ["--ipv4", "172.17.0.1/31", "8..30"],
      ["--dns", "resolver", "not an IP address"],
      ["--ygg-subnet", "300::", "not an IPv6 prefix"],
    ] as const) {
      const r = host("setup", "--root", root, "--binary", "/opt/m", "--ygg-subnet", YGG, flag, value);
      expect({ flag, value, code: r.code }).toEqual({ flag, value, code: 64 });
      expect(r.err).toContain(msg);
    }
    expect(host("setup", "--root", root, "--nonsense").code).toBe(64);
    expect(existsSync(root)).toBe(false);
  });

  test("check on a host that is not set up: every failing line names its fix, exit 1", () => {
    ensureBuilt();
    const r = host("check", "--bridge", "m8sno0", "--socket", `${tmp()}/none.sock`);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^FAIL  bridge: no interface m8sno0\n      fix: man8s host setup/m);
    expect(r.out).toMatch(/^FAIL  agent reachable: .*\n      fix: systemctl start man8s-agent\.socket/m);
    expect(r.out).toMatch(/^ok    systemd-nspawn: systemd-nspawn \d+$/m);
    for (const l of r.out.split("\n").filter((x) => x.startsWith("FAIL"))) expect(r.out).toContain(`${l}\n      fix: `);
    expect(r.out).toMatch(/^\d+ of \d+ checks failed$/m);
  });
});
