// `man8s host check`: is this host ready for Man8S containers? One line per check, ok or fail, and for a
// failure the command or setting that fixes it. Reads only; every probe is bounded in time and output.
import { existsSync, readFileSync } from "node:fs";
import { AgentClient } from "../client.ts";
import { AGENT_SERVICE_UNIT, AGENT_SOCKET_UNIT } from "./units.ts";
import { FORWARDING_SYSCTLS, hostAddress } from "./network.ts";
import { yggdrasilSelf } from "./ygg.ts";

export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
  fix?: string;
}

export interface CheckOptions {
  bridge: string;
  socket: string;
  /** where the containers' images live (idmapped mounts must work there) */
  machinesDir: string;
  yggdrasilctl?: string;
}

/** systemd features the rendered .nspawn files and units use (PrivateUsersOwnership=map, NotifyReady=) */
export const MIN_SYSTEMD = 249;

function run(argv: string[]): { code: number; out: string; err: string } {
  try {
    const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe", timeout: 10_000 });
    return { code: r.exitCode ?? -1, out: r.stdout.toString().slice(0, 65536), err: r.stderr.toString().slice(-4096) };
  } catch (e) {
    return { code: -1, out: "", err: (e as Error).message };
  }
}

const versionOf = (text: string) => Number(/^systemd (\d+)/m.exec(text)?.[1] ?? NaN);

function mounts(): { dev: string; dir: string; type: string }[] {
  try {
    return readFileSync("/proc/self/mounts", "utf8").trim().split("\n").map((l) => {
      const [dev = "", dir = "", type = ""] = l.split(" ");
      return { dev, dir: dir.replace(/\\040/g, " "), type };
    });
  } catch {
    return [];
  }
}

/** filesystems whose mounts can be idmapped (kernel 5.12+: ext4, xfs, fat; 5.15 btrfs; 6.3 tmpfs) */
const IDMAP_FS: Record<string, [number, number]> = { ext4: [5, 12], xfs: [5, 12], vfat: [5, 12], btrfs: [5, 15], overlay: [5, 19], tmpfs: [6, 3], f2fs: [5, 18] };

function kernel(): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(readFileSync("/proc/sys/kernel/osrelease", "utf8"));
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

const atLeast = (a: [number, number], b: [number, number]) => a[0] > b[0] || (a[0] === b[0] && a[1] >= b[1]);

interface IpAddr {
  ifname?: string;
  flags?: string[];
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

export async function runChecks(o: CheckOptions): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  const add = (name: string, ok: boolean, detail: string, fix?: string) => out.push(ok ? { name, ok, detail } : { name, ok, detail, fix });

  const pid1 = existsSync("/run/systemd/system");
  add("systemd is PID 1", pid1, pid1 ? "/run/systemd/system exists" : "this host was not booted with systemd", "boot the host with systemd: containers run as systemd-nspawn@NAME.service");
  const sv = run(["systemctl", "--version"]);
  const v = versionOf(sv.out);
  add("systemd version", v >= MIN_SYSTEMD, Number.isNaN(v) ? `systemctl --version failed: ${sv.err.trim().slice(0, 200)}` : `systemd ${v} (need ${MIN_SYSTEMD}+)`, `upgrade systemd to ${MIN_SYSTEMD} or later`);
  const nv = run(["systemd-nspawn", "--version"]);
  const n = versionOf(nv.out);
  add("systemd-nspawn", n >= MIN_SYSTEMD, Number.isNaN(n) ? "systemd-nspawn not found" : `systemd-nspawn ${n}`, "apt-get install systemd-container");

  const cg = mounts().find((m) => m.dir === "/sys/fs/cgroup");
  add("cgroup v2", cg?.type === "cgroup2", cg ? `/sys/fs/cgroup is ${cg.type}` : "/sys/fs/cgroup is not mounted", "boot with systemd.unified_cgroup_hierarchy=1 (the unified hierarchy)");

  // the longest mount point containing the machines' directory holds their images
  const dir = o.machinesDir.endsWith("/") ? o.machinesDir : `${o.machinesDir}/`;
  const fs = mounts().filter((m) => dir.startsWith(m.dir === "/" ? "/" : `${m.dir}/`)).sort((a, b) => b.dir.length - a.dir.length)[0];
  const k = kernel();
  const need = fs ? IDMAP_FS[fs.type] : undefined;
  const idmap = !!need && atLeast(k, need);
  add(
    "idmapped mounts",
    idmap,
    fs ? `${o.machinesDir} is on ${fs.type} (${fs.dir}), kernel ${k.join(".")}${need ? `, idmapped since ${need.join(".")}` : ", no idmapped mounts"}` : `no mount found for ${o.machinesDir}`,
    "put /var/lib/machines on ext4, xfs or btrfs (or install containers with --no-private-users)",
  );

  const ip = run(["ip", "-j", "addr", "show", "dev", o.bridge]);
  let link: IpAddr | undefined;
  try {
    link = ip.code === 0 ? (JSON.parse(ip.out) as IpAddr[])[0] : undefined;
  } catch {
    link = undefined;
  }
  const setupFix = "man8s host setup, then: networkctl reload (systemd-networkd must be enabled and running)";
  add("bridge", !!link?.flags?.includes("UP"), link ? `${o.bridge} is ${link.flags?.includes("UP") ? "up" : "down"}` : `no interface ${o.bridge}`, setupFix);
  const addrs = link?.addr_info ?? [];
  const v4 = addrs.filter((a) => a.family === "inet").map((a) => `${a.local}/${a.prefixlen}`);
  add("bridge IPv4", v4.length > 0, v4.length > 0 ? v4.join(" ") : "no IPv4 address", setupFix);
  const v6 = addrs.filter((a) => a.family === "inet6" && !a.local.startsWith("fe80:")).map((a) => `${a.local}/${a.prefixlen}`);
  add("bridge IPv6", v6.length > 0, v6.length > 0 ? v6.join(" ") : "no global or ULA IPv6 address", setupFix);

  for (const [path, want] of FORWARDING_SYSCTLS) {
    let have = "";
    try {
      have = readFileSync(path, "utf8").trim();
    } catch {
      have = "unreadable";
    }
    const key = path.slice("/proc/sys/".length).replace(/\//g, ".");
    add(`forwarding ${key}`, have === want, `${key} = ${have}`, `man8s host setup (writes /etc/sysctl.d/90-man8s.conf), then: sysctl -w ${key}=${want}`);
  }

  const ygg = yggdrasilSelf(o.yggdrasilctl);
  add("yggdrasil", ygg.ok, ygg.ok ? `running, subnet ${ygg.subnet}` : ygg.error, "apt-get install yggdrasil && systemctl enable --now yggdrasil");
  if (ygg.ok) {
    const want = hostAddress(ygg.subnet);
    const has = v6.includes(want);
    add("yggdrasil subnet on the bridge", has, has ? `${o.bridge} has ${want}` : `${o.bridge} lacks ${want}`, "man8s host setup --ygg-subnet auto --force, then: networkctl reload");
  }

  for (const unit of [AGENT_SOCKET_UNIT, AGENT_SERVICE_UNIT]) {
    const en = run(["systemctl", "is-enabled", unit]).out.trim();
    add(`${unit} enabled`, en === "enabled", en || "not installed", `man8s host setup, then: systemctl enable --now ${AGENT_SOCKET_UNIT}`);
  }
  const after = run(["systemctl", "show", "-p", "After", "--value", "systemd-nspawn@man8s-check.service"]).out;
  const ordered = after.split(/\s+/).includes(AGENT_SERVICE_UNIT);
  add("containers stop before the agent", ordered, ordered ? `systemd-nspawn@.service is After=${AGENT_SERVICE_UNIT}` : "no ordering between systemd-nspawn@.service and the agent", "man8s host setup (installs systemd-nspawn@.service.d/50-man8s-agent.conf), then: systemctl daemon-reload");

  let agent = "";
  try {
    const c = await Promise.race([AgentClient.connect(o.socket), Bun.sleep(5000).then(() => null)]);
    if (!c) throw new Error("no answer in 5 s");
    try {
      const r = (await Promise.race([c.request<{ version: string; pid: number }>("version"), Bun.sleep(5000).then(() => null)])) as { version: string; pid: number } | null;
      if (!r) throw new Error("no answer in 5 s");
      agent = `man8s ${r.version}, pid ${r.pid}`;
    } finally {
      c.close();
    }
  } catch (e) {
    add("agent reachable", false, `${o.socket}: ${(e as Error).message}`, `systemctl start ${AGENT_SOCKET_UNIT}; journalctl -u ${AGENT_SERVICE_UNIT}`);
  }
  if (agent) add("agent reachable", true, `${o.socket}: ${agent}`);
  return out;
}

export function formatChecks(rs: CheckResult[]): string {
  return rs.map((r) => (r.ok ? `ok    ${r.name}: ${r.detail}\n` : `FAIL  ${r.name}: ${r.detail}\n      fix: ${r.fix ?? "-"}\n`)).join("");
}
