// Network bring-up benchmark: link-up -> online of `man8s netctl up` against the kernel's own events in the
// same run (DHCP ACK datagram received, SLAAC address non-tentative as reported by an independent
// `ip monitor`), and against the original init's method (busybox udhcpc, then polling once per second).
// Runs in a lab of network namespaces (dnsmasq with --no-ping so the server's ICMP probe does not dominate).
import { spawn } from "bun";
import { writeFileSync } from "node:fs";
import { BIN, ensureBuilt, haveTools, Lab } from "../netctl/lab.ts";

const RUNS = Number(process.env.M8N_BENCH_RUNS ?? 5);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[Math.floor((s.length - 1) / 2)]! + s[Math.ceil((s.length - 1) / 2)]!) / 2 : NaN;
};
const f = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "-");

/** `ip -ts monitor address` timestamps are wall clock: "[2026-11-22T15:40:01.123456] ..." */
function monitorTimes(text: string, re: RegExp): number[] {
  const out: number[] = [];
  for (const line of text.split("\n")) {
    const m = /^\[([0-9T:.-]+)\]/.exec(line);
    if (m && re.test(line)) out.push(Date.parse(`${m[1]!.slice(0, 23)}Z`) + Number(`0.${m[1]!.slice(23) || "0"}`) / 1000);
  }
  return out;
}

export async function run(): Promise<void> {
  console.log("\n== netctl: network bring-up (link up -> online) ==");
  if (!haveTools) {
    console.log("skipped: needs root, systemd-nspawn, dnsmasq and busybox");
    return;
  }
  await ensureBuilt();
  const lab = await new Lab("bn", { net: 85, dnsmasqExtra: ["--no-ping"] }).start();
  const tz = process.env.TZ;
  process.env.TZ = "UTC";
  try {
    const ours: { online: number; ackAt: number; slaacAt: number; ack: number; slaacOwn: number; slaacKernel: number; overKernel: number }[] = [];
    const base: number[] = [];
    const script = `${lab.dir}/udhcpc.sh`;
    writeFileSync(
      script,
      `#!/bin/busybox sh
case "$1" in
  bound|renew) busybox ip addr add "$ip/$mask" dev "$interface"; [ -n "$router" ] && busybox ip route add default via "\${router%% *}" dev "$interface" ;;
esac
exit 0
`,
      { mode: 0o755 },
    );
    for (let i = 0; i < RUNS; i++) {
      // ours
      {
        const ns = await lab.addClientNs();
        const mon = spawn(["ip", "-n", ns, "-ts", "monitor", "address", "route"], { stdout: "pipe", env: { ...process.env, TZ: "UTC" } });
        await Bun.sleep(100);
        const p = spawn(["ip", "netns", "exec", ns, BIN, "netctl", "up", "--once", "--json"], {
          env: { PATH: process.env.PATH ?? "", MAN8S_RESOLV_CONF: `${lab.dir}/resolv-${ns}`, MAN8S_NETCTL_STATE: `${lab.dir}/st-${ns}`, MAN8S_CONTAINER_NAME: `bench${i}`, MAN8S_YGGDRASIL_PREFIX: lab.yggSubnet },
          stdout: "pipe",
          stderr: "pipe",
        });
        const out = await new Response(p.stdout).text();
        await p.exited;
        mon.kill();
        const monText = await new Response(mon.stdout).text();
        const line = out.trim().split("\n").pop();
        if (p.exitCode !== 0 || !line) {
          console.log(`run ${i}: netctl up failed: ${await new Response(p.stderr).text()}`);
          continue;
        }
        const t = JSON.parse(line).timings as Record<string, number>;
        // independent view: when the kernel announced the ULA without "tentative"
        const ulaOk = monitorTimes(monText, new RegExp(`inet6 ${lab.ula}[0-9a-f:]+/64 scope global (?!.*tentative)`));
        // our last step before "online" is the pinned IPv6 default route (metric 1000): same clock as the ULA event
        const pinned = monitorTimes(monText, /^\[[^\]]+\] default via \S+ dev m8nc0 .*metric 1000/);
        const slaacKernel = ulaOk.length && pinned.length ? pinned[0]! - ulaOk[0]! : NaN;
        ours.push({
          online: t.online_at!,
          ackAt: t.dhcp4_ack_at!,
          slaacAt: t.slaac_ready_at!,
          ack: t.online_at! - t.dhcp4_ack_at!,
          slaacOwn: t.online_at! - t.slaac_ready_at!,
          slaacKernel,
          overKernel: t.online_at! - Math.max(t.dhcp4_ack_at!, t.slaac_ready_at!),
        });
      }
      // baseline: the original init's method
      {
        const ns = await lab.addClientNs();
        const pfx = lab.yggSubnet.replace("::/64", "");
        // the original's steps 50 and 70: udhcpc -q, then DO_UNTIL_SUCCESS (10 tries, sleep 1) for SLAAC and routes
        const sh = `retry() { n=0; until "$@" 2>/dev/null; do n=$((n+1)); [ $n -ge 10 ] && exit 3; sleep 1; done; }
slaac() { busybox ip -6 addr show dev m8nc0 | grep 'inet6 ${lab.ula}' | grep -qv tentative; }
t0=$(cut -d' ' -f1 /proc/uptime)
busybox ip link set m8nc0 up
busybox udhcpc -i m8nc0 -q -n -t 3 -T 3 -s ${script} >/dev/null 2>&1 || exit 1
retry slaac
retry busybox ip addr add ${pfx}::${(0x77 + i).toString(16)}/64 dev m8nc0 noprefixroute
retry busybox ip -6 route add ${pfx}::/64 dev m8nc0 src ${pfx}::${(0x77 + i).toString(16)} table 199
retry busybox ip -6 route add 200::/7 via ${pfx}::1 dev m8nc0 src ${pfx}::${(0x77 + i).toString(16)} table 199
retry busybox ip -6 rule add to 200::/7 lookup 199 priority 100
t1=$(cut -d' ' -f1 /proc/uptime)
echo "$t0 $t1"`;
        const p = spawn(["timeout", "60", "ip", "netns", "exec", ns, "/bin/busybox", "sh", "-c", sh], { stdout: "pipe", stderr: "pipe" });
        const out = (await new Response(p.stdout).text()).trim();
        await p.exited;
        const [a, b] = out.split(" ").map(Number);
        if (p.exitCode === 0 && a !== undefined && b !== undefined) base.push((b - a) * 1000);
        else console.log(`baseline run ${i} failed (${p.exitCode})`);
      }
    }
    const m = (k: keyof (typeof ours)[number]) => median(ours.map((x) => x[k]));
    console.log(`runs: ${ours.length} (man8s), ${base.length} (udhcpc + 1 s polling); medians in ms, dnsmasq --no-ping`);
    console.log(`  man8s link up -> online                         ${f(m("online"))}   (min ${f(Math.min(...ours.map((x) => x.online)))}, max ${f(Math.max(...ours.map((x) => x.online)))})`);
    console.log(`  kernel events: DHCP ACK at ${f(m("ackAt"))}, SLAAC non-tentative at ${f(m("slaacAt"))} (after link up)`);
    console.log(`  man8s online - last kernel event (own events)   ${f(m("overKernel"))}   target <= 20`);
    console.log(`  man8s online - DHCP ACK received                ${f(m("ack"))}`);
    console.log(`  man8s online - SLAAC non-tentative (own event)  ${f(m("slaacOwn"))}`);
    console.log(`  man8s online - SLAAC non-tentative (ip monitor) ${f(m("slaacKernel"))}   (kernel's ULA event -> our pinned route)`);
    console.log(`  baseline link up -> done (udhcpc, sleep 1)      ${f(median(base))}   (min ${f(Math.min(...base))}, max ${f(Math.max(...base))})`);
  } finally {
    if (tz === undefined) delete process.env.TZ;
    else process.env.TZ = tz;
    await lab.cleanup();
  }
}

if (import.meta.main) await run();
