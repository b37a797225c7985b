// Probes inside a network namespace (prefix m8p): ICMP echo through raw and unprivileged datagram sockets,
// and a "container" reached by name over its yggdrasil address (mbctl's hash in our /64).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { containerAddress } from "../../probes/resolve.ts";
import { ROOT, isRoot, sh } from "./helpers.ts";
import { BIN, ensureBuilt } from "../build.ts";

const canNetns = isRoot && Bun.which("ip") !== null;
const NS = `m8p${process.pid}`;
const PREFIX = "300:6b9f:cca2:a583::/64";
const WEB = "m8p-web";
let webAddr = "";
let server: Bun.Subprocess<"ignore", "pipe", "inherit"> | undefined;
const PORT = 18080 + (process.pid % 1000);

interface CliResult { code: number; json: { ok: boolean; exitCode: number; output: string; timedOut: boolean; address?: string } }

async function probeInNs(url: string, extra: string[] = [], env: Record<string, string> = { MAN8S_YGGDRASIL_PREFIX: PREFIX }): Promise<CliResult> {
  const p = Bun.spawn(["ip", "netns", "exec", NS, process.execPath, `${ROOT}/test/probes/fixtures/probe-main.ts`, url, "--json", ...extra], {
    stdout: "pipe",
    stderr: "pipe",
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env },
  });
  const out = await new Response(p.stdout).text();
  const code = await p.exited;
  return { code, json: JSON.parse(out) };
}

describe.skipIf(!canNetns)("probes in a network namespace", () => {
  beforeAll(ensureBuilt, 120_000);
  beforeAll(async () => {
    webAddr = (await containerAddress(WEB, { MAN8S_YGGDRASIL_PREFIX: PREFIX }))!;
    const setup = [
      `ip netns add ${NS}`,
      `ip -n ${NS} link set lo up`,
      `ip -n ${NS} link add m8pa type veth peer name m8pb`,
      `ip -n ${NS} link set m8pa up`,
      `ip -n ${NS} link set m8pb up`,
      `ip -n ${NS} addr add 10.77.0.1/24 dev m8pa`,
      `ip -n ${NS} addr add ${webAddr}/64 dev m8pa nodad`,
    ].join(" && ");
    const r = await sh(setup);
    if (r.code !== 0) throw new Error(`netns setup failed: ${r.out}`);
    server = Bun.spawn(["ip", "netns", "exec", NS, process.execPath, `${ROOT}/test/probes/fixtures/serve.ts`, String(PORT)], { stdin: "ignore", stdout: "pipe", stderr: "inherit" });
    const reader = server.stdout.getReader();
    const first = await Promise.race([reader.read(), Bun.sleep(10_000).then(() => null)]);
    reader.releaseLock();
    if (!first || first.done) throw new Error("test server did not start");
  });
  afterAll(async () => {
    if (server) {
      server.kill("SIGKILL");
      await server.exited;
    }
    await sh(`ip netns del ${NS} 2>/dev/null || true`);
    rmSync(`/etc/netns/${NS}`, { recursive: true, force: true });
  });

  test("icmp to loopback v4/v6 through a raw socket (a fresh netns refuses unprivileged ICMP sockets)", async () => {
    const v4 = await probeInNs("icmp://127.0.0.1");
    expect(v4.code).toBe(0);
    expect(v4.json).toMatchObject({ ok: true, exitCode: 0 });
    expect(v4.json.output).toContain("raw socket");
    const v6 = await probeInNs("icmp://[::1]");
    expect(v6.json.ok).toBe(true);
  });

  test("icmp through the unprivileged datagram socket once ping_group_range allows our gid", async () => {
    const r = await sh(`ip netns exec ${NS} sh -c 'echo 0 2147483647 > /proc/sys/net/ipv4/ping_group_range'`);
    expect(r.code).toBe(0);
    try {
      const v4 = await probeInNs("icmp://127.0.0.1");
      expect(v4.json.ok).toBe(true);
      expect(v4.json.output).toContain("dgram socket");
      const v6 = await probeInNs("icmp://[::1]");
      expect(v6.json.ok).toBe(true);
      expect(v6.json.output).toContain("dgram socket");
    } finally {
      await sh(`ip netns exec ${NS} sh -c 'echo 1 0 > /proc/sys/net/ipv4/ping_group_range'`);
    }
  });

  test("a container name resolves to its yggdrasil address and answers icmp, tcp and http", async () => {
    const ping = await probeInNs(`icmp://${WEB}`);
    expect(ping.json).toMatchObject({ ok: true, address: webAddr });
    const tcp = await probeInNs(`tcp://${WEB}:${PORT}`);
    expect(tcp.json).toMatchObject({ ok: true, address: webAddr });
    const http = await probeInNs(`http://${WEB}:${PORT}/204`);
    expect(http.json).toMatchObject({ ok: true, address: webAddr, output: "HTTP 204 No Content" });
    const http500 = await probeInNs(`http://${WEB}:${PORT}/503`);
    expect(http500.code).toBe(1);
    expect(http500.json.output).toStartWith("HTTP 503");
    // without our prefix the same name cannot be resolved
    const noPrefix = await probeInNs(`tcp://${WEB}:${PORT}`, [], {});
    expect(noPrefix.json.ok).toBe(false);
    expect(noPrefix.json.output).toContain(`cannot resolve '${WEB}'`);
  });

  test("no echo reply (silent neighbour, absent container) fails at the timeout", async () => {
    const t0 = performance.now();
    const silent = await probeInNs("icmp://10.77.0.2", ["--timeout", "500ms"]);
    expect(silent.code).toBe(1);
    expect(silent.json).toMatchObject({ ok: false, exitCode: -1, timedOut: true });
    const absent = await probeInNs("icmp://m8p-absent", ["--timeout", "500ms"]);
    expect(absent.json.ok).toBe(false);
    const tcp = await probeInNs("tcp://m8p-absent:80", ["--timeout", "500ms"]);
    expect(tcp.json.ok).toBe(false);
    expect(performance.now() - t0).toBeLessThan(6000);
  });

  test("netctl check (the compiled binary) resolves names like every probe: /etc/hosts first, dotted container names", async () => {
    // `ip netns exec` bind-mounts /etc/netns/NS/hosts over /etc/hosts
    mkdirSync(`/etc/netns/${NS}`, { recursive: true });
    writeFileSync(`/etc/netns/${NS}/hosts`, "127.0.0.1 localhost\n10.77.0.1 m8pdb\n");
    const dotted = "m8p.web";
    const dottedAddr = (await containerAddress(dotted, { MAN8S_YGGDRASIL_PREFIX: PREFIX }))!;
    expect((await sh(`ip -n ${NS} addr add ${dottedAddr}/128 dev lo`)).code).toBe(0);
    const p = Bun.spawn(
      ["ip", "netns", "exec", NS, BIN, "netctl", "check", "m8pdb", dotted, `${WEB}:${PORT}`, `http://${WEB}:${PORT}/204`, "icmp://m8pdb"],
      { stdout: "pipe", stderr: "pipe", env: { PATH: process.env.PATH ?? "/usr/bin:/bin", MAN8S_YGGDRASIL_PREFIX: PREFIX } },
    );
    const [out, err, code] = [await new Response(p.stdout).text(), await new Response(p.stderr).text(), await p.exited];
    // before: a dot-less name was always a container address when the prefix was known (m8pdb: FAIL), and a
    // dotted name went to DNS only (m8p.web: cannot resolve)
    expect(out).toContain("check m8pdb (10.77.0.1): OK");
    expect(out).toContain(`check ${dotted} (${dottedAddr}): OK`);
    expect(out).toContain(`check ${WEB}:${PORT} (${webAddr}): OK`);
    expect(out).toContain(`check http://${WEB}:${PORT}/204 (${webAddr}): OK`);
    expect(out).toContain("check icmp://m8pdb (10.77.0.1): OK");
    expect(code, out + err).toBe(0);
  }, 20_000);
});
