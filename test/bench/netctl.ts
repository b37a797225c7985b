// Network bring-up benchmark, every figure beside the previous method measured in the same run:
//   1. link-up -> online of `man8s netctl up` in plain namespaces: fast start (optimistic DAD + our own RS)
//      against MAN8S_NETWORK_FAST_START=no (the kernel's defaults: wait for DAD), with the kernel's event
//      times from an independent `ip monitor`, and the original init's method (busybox udhcpc, 1 s polling);
//   2. real systemd-nspawn containers under the init: spawn -> online and spawn -> app exec, for 1, 20 and
//      50 containers started at once on one bridge (M8N_BENCH_CONTAINERS, default "1,20,50").
// dnsmasq runs with --no-ping so the server's ICMP probe does not dominate. Names: m8f*.
import { spawn } from "bun";
import { writeFileSync } from "node:fs";
import { BIN, type Container, ensureBuilt, haveTools, Lab } from "../netctl/lab.ts";

const RUNS = Number(process.env.M8N_BENCH_RUNS ?? 10);
const COUNTS = (process.env.M8N_BENCH_CONTAINERS ?? "1,20,50").split(",").map(Number).filter((n) => n > 0 && n <= 90);
const median = (xs: number[]) => {
  const s = [...xs].filter(Number.isFinite).sort((a, b) => a - b);
  return s.length ? (s[Math.floor((s.length - 1) / 2)]! + s[Math.ceil((s.length - 1) / 2)]!) / 2 : NaN;
};
const max = (xs: number[]) => (xs.length ? Math.max(...xs) : NaN);
const min = (xs: number[]) => (xs.length ? Math.min(...xs) : NaN);
const f = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "-");
const col = (a: string, b: string, c: string) => `  ${a.padEnd(46)}${b.padStart(12)}${c.padStart(18)}`;

/** `ip -ts monitor` timestamps are wall clock: "[2026-11-22T15:40:01.123456] ..." */
function monitorTimes(text: string, re: RegExp): number[] {
  const out: number[] = [];
  for (const line of text.split("\n")) {
    const m = /^\[([0-9T:.-]+)\]/.exec(line);
    if (m && re.test(line)) out.push(Date.parse(`${m[1]!.slice(0, 23)}Z`) + Number(`0.${m[1]!.slice(23) || "0"}`) / 1000);
  }
  return out;
}

interface NsRun {
  online: number;
  ackAt: number;
  slaacAt: number;
  dadAt: number;
  overKernel: number;
  /** our pinned route (the last step before online) after the kernel's "ULA usable" event, per ip monitor */
  monitorGap: number;
  rs: number;
}

async function nsRun(lab: Lab, i: number, fast: boolean): Promise<NsRun | undefined> {
  const ns = await lab.addClientNs();
  const mon = spawn(["ip", "-n", ns, "-ts", "monitor", "address", "route"], { stdout: "pipe", env: { ...process.env, TZ: "UTC" } });
  await Bun.sleep(100);
  const p = spawn(["ip", "netns", "exec", ns, BIN, "netctl", "up", "--once", "--json"], {
    env: {
      PATH: process.env.PATH ?? "", MAN8S_RESOLV_CONF: `${lab.dir}/resolv-${ns}`, MAN8S_NETCTL_STATE: `${lab.dir}/st-${ns}`, MAN8S_CONTAINER_NAME: `bench${i}`,
      MAN8S_YGGDRASIL_PREFIX: lab.yggSubnet, MAN8S_NETWORK_FAST_START: fast ? "yes" : "no",
    },
    stdout: "pipe",
    stderr: "pipe",
  });
  const out = await new Response(p.stdout).text();
  await p.exited;
  mon.kill();
  const monText = await new Response(mon.stdout).text();
  const lines = out.trim().split("\n");
  if (p.exitCode !== 0 || !lines[0]) {
    console.log(`  run ${i} (${fast ? "fast" : "defaults"}): netctl up failed: ${await new Response(p.stderr).text()}`);
    return undefined;
  }
  const first = JSON.parse(lines[0]);
  const last = JSON.parse(lines.at(-1)!);
  const t = first.timings as Record<string, number>;
  // the kernel's own announcement of the ULA as usable: optimistic, or past DAD
  const ulaUsable = monitorTimes(monText, new RegExp(`inet6 ${lab.ula}[0-9a-f:]+/64 scope global (?:.*optimistic|(?!.*tentative))`));
  const pinned = monitorTimes(monText, new RegExp(`^\\[[^\\]]+\\] default via \\S+ dev ${lab.clientIf} .*metric 1000`));
  return {
    online: t.online_at!,
    ackAt: t.dhcp4_ack_at!,
    slaacAt: t.slaac_ready_at!,
    dadAt: last.timings.slaac_dad_at ?? NaN,
    overKernel: t.online_at! - Math.max(t.dhcp4_ack_at!, t.slaac_ready_at!),
    monitorGap: ulaUsable.length && pinned.length ? pinned[0]! - ulaUsable[0]! : NaN,
    rs: last.slaac?.solicitations ?? 0,
  };
}

async function baselineRun(lab: Lab, i: number, script: string): Promise<number | undefined> {
  const ns = await lab.addClientNs();
  const pfx = lab.yggSubnet.replace("::/64", "");
  const ifc = lab.clientIf;
  // the original's steps 50 and 70: udhcpc -q, then DO_UNTIL_SUCCESS (10 tries, sleep 1) for SLAAC and routes
  const sh = `retry() { n=0; until "$@" 2>/dev/null; do n=$((n+1)); [ $n -ge 10 ] && exit 3; sleep 1; done; }
slaac() { busybox ip -6 addr show dev ${ifc} | grep 'inet6 ${lab.ula}' | grep -qv tentative; }
t0=$(cut -d' ' -f1 /proc/uptime)
busybox ip link set ${ifc} up
busybox udhcpc -i ${ifc} -q -n -t 3 -T 3 -s ${script} >/dev/null 2>&1 || exit 1
retry slaac
retry busybox ip addr add ${pfx}::${(0x77 + i).toString(16)}/64 dev ${ifc} noprefixroute
retry busybox ip -6 route add ${pfx}::/64 dev ${ifc} src ${pfx}::${(0x77 + i).toString(16)} table 199
retry busybox ip -6 route add 200::/7 via ${pfx}::1 dev ${ifc} src ${pfx}::${(0x77 + i).toString(16)} table 199
retry busybox ip -6 rule add to 200::/7 lookup 199 priority 100
t1=$(cut -d' ' -f1 /proc/uptime)
echo "$t0 $t1"`;
  const p = spawn(["timeout", "60", "ip", "netns", "exec", ns, "/bin/busybox", "sh", "-c", sh], { stdout: "pipe", stderr: "pipe" });
  const out = (await new Response(p.stdout).text()).trim();
  await p.exited;
  const [a, b] = out.split(" ").map(Number);
  if (p.exitCode === 0 && a !== undefined && b !== undefined) return (b - a) * 1000;
  console.log(`  baseline run ${i} failed (${p.exitCode})`);
  return undefined;
}

async function namespaces(): Promise<void> {
  const lab = await new Lab("bn", { net: 85, prefix: "m8f", dnsmasqExtra: ["--no-ping"] }).start();
  const tz = process.env.TZ;
  process.env.TZ = "UTC";
  try {
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
    const fast: NsRun[] = [], dflt: NsRun[] = [], base: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      // interleaved, so both methods see the same machine load
      const a = await nsRun(lab, i, true);
      if (a) fast.push(a);
      const b = await nsRun(lab, i, false);
      if (b) dflt.push(b);
      if (i < Math.min(RUNS, 5)) {
        const c = await baselineRun(lab, i, script);
        if (c !== undefined) base.push(c);
      }
    }
    const m = (xs: NsRun[], k: keyof NsRun) => median(xs.map((x) => x[k]));
    const both = (label: string, k: keyof NsRun, note = "") => console.log(col(label, f(m(fast, k)), f(m(dflt, k))) + note);
    console.log(`\n### link up -> online, plain namespaces on one bridge (netctl up), medians in ms`);
    console.log(`runs: ${fast.length} fast start, ${dflt.length} kernel defaults, ${base.length} original method; dnsmasq --no-ping`);
    console.log(col("", "fast start", "kernel defaults"));
    both("link up -> online", "online", "   target <= 30 (fast start)");
    console.log(col("  min / max", `${f(min(fast.map((x) => x.online)))}/${f(max(fast.map((x) => x.online)))}`, `${f(min(dflt.map((x) => x.online)))}/${f(max(dflt.map((x) => x.online)))}`));
    both("kernel event: DHCP ACK received at", "ackAt");
    both("kernel event: SLAAC address usable at", "slaacAt", "   (optimistic / past DAD)");
    both("kernel event: SLAAC DAD done at", "dadAt");
    both("online - last kernel event (own events)", "overKernel", "   target <= 20");
    both("online - SLAAC usable (ip monitor)", "monitorGap", "   (kernel's ULA event -> our pinned route)");
    console.log(col("our router solicitations per run (max)", `${f(m(fast, "rs"))} (${max(fast.map((x) => x.rs))})`, `${f(m(dflt, "rs"))} (${max(dflt.map((x) => x.rs))})`));
    console.log(`  original init's method (udhcpc, then 1 s polling): link up -> done ${f(median(base))} (min ${f(min(base))}, max ${f(max(base))})`);
  } finally {
    if (tz === undefined) delete process.env.TZ;
    else process.env.TZ = tz;
    await lab.cleanup();
  }
}

interface CtRun {
  spawnToOnline: number;
  spawnToApp: number;
  linkToOnline: number;
  ackAt: number;
  slaacAt: number;
}

/** Starts n containers at once (rootfs prepared before), waits until each app has started. */
async function batch(lab: Lab, n: number, fast: boolean): Promise<{ runs: CtRun[]; allOnline: number; allApp: number; failed: number }> {
  // the same names (so MACs, so leases) for both methods: 2 × 71 leases would not fit the lab's pool of 101
  const names = Array.from({ length: n }, (_, i) => `m8fb${n}x${i}`);
  const roots = names.map((name) => {
    const env = {
      MAN8S_CONTAINER_NAME: name, MAN8S_YGGDRASIL_PREFIX: lab.yggSubnet, MAN8S_NETWORK_FAST_START: fast ? "yes" : "no",
      MAN8S_APPLICATION_ARGV: JSON.stringify(["/bin/sh", "-c", "echo m8f-app-exec; exec sleep 100000"]),
    };
    return lab.rootfs(name, { "/man8env.env": `${Object.entries(env).map(([k, v]) => `${k}=${v}`).join("\n")}\n` });
  });
  const marks = names.map(() => ({ spawned: 0, online: NaN, app: NaN }));
  const cts: Container[] = [];
  const t0 = performance.now();
  let done = 0;
  const allDone = new Promise<void>((resolve) => {
    names.forEach((name, i) => {
      marks[i]!.spawned = performance.now();
      cts.push(
        lab.startContainer(name, {}, ["/man8s-init/init"], {}, {
          root: roots[i]!,
          onLine: (line, at) => {
            if (line.includes("netctl: online in")) marks[i]!.online = at;
            if (line.trim() === "m8f-app-exec" && !Number.isFinite(marks[i]!.app)) {
              marks[i]!.app = at;
              if (++done === n) resolve();
            }
          },
        }),
      );
    });
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([allDone, new Promise<void>((r) => (timer = setTimeout(r, 60_000)))]);
  clearTimeout(timer);
  const runs: CtRun[] = [];
  let failed = 0;
  await Promise.all(
    cts.map(async (c, i) => {
      const mk = marks[i]!;
      if (!Number.isFinite(mk.app)) {
        failed++;
        return;
      }
      const pid = c.payloadPid();
      const rec = pid ? JSON.parse(Bun.spawnSync(["nsenter", "-t", String(pid), "-m", "cat", "/run/man8s/status.json"]).stdout.toString() || "{}") : {};
      const t = rec.network?.timings ?? {};
      runs.push({ spawnToOnline: mk.online - mk.spawned, spawnToApp: mk.app - mk.spawned, linkToOnline: t.online_at ?? NaN, ackAt: t.dhcp4_ack_at ?? NaN, slaacAt: t.slaac_ready_at ?? NaN });
    }),
  );
  const allOnline = max(marks.map((m) => m.online)) - t0;
  const allApp = max(marks.map((m) => m.app)) - t0;
  await Promise.all(cts.map((c) => c.stop().catch(() => null)));
  return { runs, allOnline, allApp, failed };
}

async function containers(): Promise<void> {
  if (!COUNTS.length) return;
  const lab = await new Lab("bc", { net: 86, prefix: "m8f", dnsmasqExtra: ["--no-ping"] }).start();
  try {
    console.log(`\n### real nspawn containers under the init, N started at once on one bridge (ms; median / max over the N)`);
    console.log("| N | method | spawn → online | spawn → app exec | all online (from the first spawn) | link-up → online (init) | kernel: DHCP ACK / SLAAC usable at |");
    console.log("|---|---|---|---|---|---|---|");
    for (const n of COUNTS) {
      for (const fast of [true, false]) {
        const r = await batch(lab, n, fast);
        const rs = r.runs;
        const mm = (k: keyof CtRun) => `${f(median(rs.map((x) => x[k])))} / ${f(max(rs.map((x) => x[k])))}`;
        console.log(
          `| ${n} | ${fast ? "fast start" : "kernel defaults"} | ${mm("spawnToOnline")} | ${mm("spawnToApp")} | ${f(r.allOnline)}${r.failed ? ` (${r.failed} not started in 60 s)` : ""} | ${mm("linkToOnline")} | ${f(median(rs.map((x) => x.ackAt)))} / ${f(median(rs.map((x) => x.slaacAt)))} |`,
        );
      }
    }
    console.log("targets (fast start): spawn → app exec <= 250 ms (1 container); 50 containers all online <= 3000 ms");
  } finally {
    await lab.cleanup();
  }
}

export async function run(): Promise<void> {
  console.log("\n== netctl: network bring-up (link up -> online) ==");
  if (!haveTools) {
    console.log("skipped: needs root, systemd-nspawn, dnsmasq and busybox");
    return;
  }
  await ensureBuilt();
  await namespaces();
  await containers();
}

if (import.meta.main) await run();
