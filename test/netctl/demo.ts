// Network demo for the README: the full lab (bridge, dnsmasq, two yggdrasil nodes), one nspawn container
// whose payload is the bundle (the real init when it runs the network phase), then its addresses, routes,
// table 199, rule, timings and a few pings. `bun test/netctl/demo.ts` (root); everything is removed after.
import { addressForName, formatIPv6, parsePrefix6 } from "../../common/net/addrmath.ts";
import { ensureBuilt, haveTools, haveYgg, Lab, waitFor } from "./lab.ts";

export async function runNetDemo(): Promise<void> {
  if (!haveTools) {
    console.log("netctl demo skipped: needs root, systemd-nspawn, dnsmasq and busybox");
    return;
  }
  await ensureBuilt();
  const lab = new Lab("dm", { net: 88, ygg: haveYgg });
  try {
    await lab.start();
    console.log(`lab: bridge ${lab.bridge} ${lab.v4}.1/24 ${lab.ula}1/64, ygg subnet ${lab.yggSubnet}${lab.yggB ? `, remote ygg node ${lab.yggB}` : ""}`);
    const name = "m8ndemo";
    const env = `MAN8S_CONTAINER_NAME=${name}\nMAN8S_YGGDRASIL_PREFIX=${lab.yggSubnet}\nMAN8S_APPLICATION_ARGV=["/bin/sleep","100000"]\n`;
    const c = lab.startContainer(name, {}, ["/man8s-init/init"], { "/man8env.env": env });
    await waitFor("the container to be online", () => (c.exited ? Promise.reject(new Error(c.log())) : c.log().includes("netctl: online in")), 40_000);
    console.log("\n--- container log");
    console.log(c.log().trim());
    const pid = c.payloadPid()!;
    const inside = (cmd: string[]) => Bun.spawnSync(["nsenter", "-t", String(pid), "-a", "--", ...cmd]).stdout.toString().trim();
    console.log("\n--- man8s netctl status (inside the container)");
    console.log(inside(["/man8s-init/man8s", "netctl", "status"]));
    console.log("\n--- /etc/resolv.conf");
    console.log(inside(["/bin/cat", "/etc/resolv.conf"]));
    const ygg = formatIPv6(addressForName(name, parsePrefix6(lab.yggSubnet, 64)!));
    console.log("\n--- reachability");
    for (const [what, addr] of [["bridge IPv4", `${lab.v4}.1`], ["bridge ULA", `${lab.ula}1`], ["2xx target", lab.fake2xx], ...(lab.yggB ? [["remote ygg node", lab.yggB]] : [])] as [string, string][]) {
      const ok = await waitFor(what, () => c.ping(addr), 10_000, 500).catch(() => false);
      console.log(`  ${what.padEnd(16)} ${addr.padEnd(40)} ${ok ? "reachable" : "UNREACHABLE"}`);
    }
    console.log(`  (the container's ygg address ${ygg} is the source for 200::/7)`);
    await c.stop();
  } finally {
    await lab.cleanup();
  }
}

if (import.meta.main) await runNetDemo();
