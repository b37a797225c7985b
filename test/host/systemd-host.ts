// A systemd host for tests: a Debian rootfs with systemd, systemd-container and dbus (mmdebstrap), booted
// with `systemd-nspawn -b` as a host container: no -U (it runs nspawn itself), its own network namespace
// (--private-network, which also grants CAP_NET_ADMIN for the bridge and the veths), the built man8s
// bound read-only at /opt/man8s, and /var/lib/machines bound from a plain directory of the run (the
// nested containers' images, on the real filesystem: idmapped mounts work there), as are the agent's
// configuration and storage directories.
//
// The rootfs is built once per machine into the cache test/apps/images.ts uses, keyed by a hash of the
// recipe below (a changed recipe builds anew; older builds are removed), under the same kind of lock.
// Each run boots an overlay of it, so runs never change the cache.
//   bun test/host/systemd-host.ts      builds (or finds) the rootfs and prints where it is
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { CACHE_ROOT } from "../apps/images.ts";
import { labDir } from "../scratch.ts";

const SUITE = "bookworm";
/** the recipe: everything that shapes the rootfs is in here (and hashed) */
const RECIPE = {
  suite: SUITE,
  variant: "minbase",
  packages: ["systemd", "systemd-sysv", "systemd-container", "dbus", "iproute2", "procps", "busybox-static", "yggdrasil"],
  dpkgopt: ["path-exclude=/usr/share/doc/*", "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*", "path-exclude=/usr/share/locale/*"],
  // quiet boots: no login prompt on the console, no timers that wake apt; a fixed hostname
  customize: [
    `echo m8s-host > "$1/etc/hostname"`,
    `for u in console-getty.service getty@.service apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer; do ln -sf /dev/null "$1/etc/systemd/system/$u"; done`,
    `mkdir -p "$1/opt/man8s"`,
  ],
  version: 1,
};

export const HOST_ROOTFS_KEY = createHash("sha256").update(JSON.stringify(RECIPE)).digest("hex").slice(0, 16);

function sh(argv: string[], opts: { ok?: boolean; timeout?: number } = {}, stdin?: string): { code: number; out: string; err: string } {
  const r = Bun.spawnSync(argv, { stdin: stdin === undefined ? "ignore" : Buffer.from(stdin), stdout: "pipe", stderr: "pipe", timeout: opts.timeout ?? 60_000 });
  const res = { code: r.exitCode ?? -1, out: r.stdout.toString(), err: r.stderr.toString() };
  if (opts.ok !== false && res.code !== 0) throw new Error(`${argv.join(" ").slice(0, 300)} → ${res.code}: ${(res.err || res.out).slice(-3000)}`);
  return res;
}

export interface HostRootfs {
  rootfs: string;
  built: boolean;
  seconds: number;
}

/** The cached rootfs, built when missing (concurrent callers wait on the lock, then find it). */
export async function hostRootfs(log: (m: string) => void = () => {}): Promise<HostRootfs> {
  const t0 = performance.now();
  const final = `${CACHE_ROOT}/systemd-host-${HOST_ROOTFS_KEY}`;
  let built = false;
  if (!existsSync(`${final}/complete`)) {
    mkdirSync(CACHE_ROOT, { recursive: true });
    const lock = Bun.spawn(["flock", `${CACHE_ROOT}/systemd-host.lock`, "sh", "-c", "echo locked; read _"], { stdin: "pipe", stdout: "pipe" });
    await lock.stdout.getReader().read();
    try {
      if (!existsSync(`${final}/complete`)) {
        const tmp = `${CACHE_ROOT}/.systemd-host-tmp-${process.pid}`;
        rmSync(tmp, { recursive: true, force: true });
        mkdirSync(tmp, { recursive: true });
        try {
          const argv = [
            "mmdebstrap", "--quiet", "--mode=root", `--variant=${RECIPE.variant}`, `--include=${RECIPE.packages.join(",")}`,
            ...RECIPE.dpkgopt.map((o) => `--dpkgopt=${o}`), "--aptopt=APT::Install-Recommends \"false\"",
            ...RECIPE.customize.map((c) => `--customize-hook=${c}`), RECIPE.suite, `${tmp}/rootfs`,
          ];
          const p = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
          const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited, new Response(p.stdout).text()]);
          if (code !== 0) throw new Error(`mmdebstrap → ${code}: ${err.slice(-3000)}`);
          writeFileSync(`${tmp}/complete`, `${new Date().toISOString()}\n`);
          rmSync(final, { recursive: true, force: true });
          renameSync(tmp, final);
          built = true;
          log(`systemd host rootfs built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        } finally {
          rmSync(tmp, { recursive: true, force: true });
        }
        for (const n of readdirSync(CACHE_ROOT)) {
          if ((n.startsWith("systemd-host-") || n.startsWith(".systemd-host-tmp-")) && `${CACHE_ROOT}/${n}` !== final) rmSync(`${CACHE_ROOT}/${n}`, { recursive: true, force: true });
        }
      }
    } finally {
      lock.stdin.end();
      await lock.exited;
    }
  }
  return { rootfs: `${final}/rootfs`, built, seconds: (performance.now() - t0) / 1000 };
}

type Proc = ReturnType<typeof Bun.spawn>;

/** One booted host container. Everything it starts is ended by pid in shutdown()/cleanup(). */
export class SystemdHost {
  readonly dir: string;
  readonly merged: string;
  private proc?: Proc;
  private out = "";
  private done?: Promise<number>;

  constructor(
    readonly name: string,
    readonly lower: string,
    readonly dist: string,
  ) {
    this.dir = labDir(name);
    this.merged = `${this.dir}/merged`;
  }

  get console(): string {
    return this.out;
  }

  get running(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Boots and waits until systemd reports the system running (or degraded, with the failed units named). */
  async boot(timeoutMs = 120_000): Promise<void> {
    rmSync(this.dir, { recursive: true, force: true });
    for (const d of ["upper", "work", "merged", "machines", "man8machines", "configs", "storage"]) mkdirSync(`${this.dir}/${d}`, { recursive: true });
    sh(["mount", "-t", "overlay", "-o", `lowerdir=${this.lower},upperdir=${this.dir}/upper,workdir=${this.dir}/work`, `m8s-${this.name}`, this.merged]);
    const argv = [
      "systemd-nspawn", "--quiet", "--keep-unit", "--register=no", "--boot", `--machine=${this.name}`, `--directory=${this.merged}`,
      "--private-network", `--bind-ro=${this.dist}:/opt/man8s`, `--bind=${this.dir}/machines:/var/lib/machines`,
      // the agent's files are bound into containers with idmap, which the overlay cannot do: real directories
      `--bind=${this.dir}/configs:/var/lib/man8machine_configs`, `--bind=${this.dir}/man8machines:/var/lib/man8machines`, `--bind=${this.dir}/storage:/var/lib/man8machine_storage`,
      // the yggdrasil daemon's TUN
      ...(existsSync("/dev/net/tun") ? ["--bind=/dev/net/tun"] : []),
    ];
    this.proc = Bun.spawn(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, SYSTEMD_LOG_LEVEL: "warning" } });
    const dec = new TextDecoder();
    const pump = async (s: ReadableStream<Uint8Array>) => {
      for await (const c of s) this.out += dec.decode(c, { stream: true });
    };
    const streams = Promise.all([pump(this.proc.stdout as ReadableStream<Uint8Array>), pump(this.proc.stderr as ReadableStream<Uint8Array>)]);
    this.done = this.proc.exited.then(async (c) => {
      await streams;
      return c;
    });
    const end = Date.now() + timeoutMs;
    for (;;) {
      if (!this.running) throw new Error(`host container exited during boot (${this.proc.exitCode}):\n${this.out.slice(-4000)}`);
      if (this.leader()) {
        const r = this.exec(["systemctl", "is-system-running"], { ok: false });
        const state = r.out.trim();
        if (state === "running") return;
        if (state === "degraded") throw new Error(`host container degraded: ${this.exec(["systemctl", "--failed", "--no-legend"], { ok: false }).out}`);
      }
      if (Date.now() > end) throw new Error(`host container did not boot in ${timeoutMs} ms:\n${this.out.slice(-4000)}`);
      await Bun.sleep(200);
    }
  }

  /** systemd, PID 1 of the host container (nspawn's child) */
  leader(): number | undefined {
    if (!this.proc) return undefined;
    try {
      const kids = readFileSync(`/proc/${this.proc.pid}/task/${this.proc.pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
      return kids.length > 0 ? Number(kids[kids.length - 1]) : undefined;
    } catch {
      return undefined;
    }
  }

  /** A command inside the host container (all its namespaces, its root). */
  exec(argv: string[], opts: { ok?: boolean; timeout?: number } = {}, stdin?: string): { code: number; out: string; err: string } {
    const pid = this.leader();
    if (!pid) throw new Error(`${this.name} is not running`);
    return sh(["nsenter", "-t", String(pid), "-a", "--", "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", ...argv], opts, stdin);
  }

  /** As exec, without waiting: for a command that runs while others are checked. */
  spawn(argv: string[]): Promise<{ code: number; out: string; err: string }> {
    const pid = this.leader();
    if (!pid) throw new Error(`${this.name} is not running`);
    const p = Bun.spawn(["nsenter", "-t", String(pid), "-a", "--", "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_COLORS=0", ...argv], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    return Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]).then(([out, err, code]) => ({ code, out, err }));
  }

  /** Powers off with systemd (as a host shuts down) and waits for nspawn to exit. */
  async poweroff(timeoutMs = 120_000): Promise<number> {
    if (!this.running || !this.done) return this.done ? this.done : -1;
    this.exec(["systemctl", "poweroff", "--no-block"]);
    const k = setTimeout(() => this.proc?.kill("SIGKILL"), timeoutMs);
    const code = await this.done;
    clearTimeout(k);
    return code;
  }

  async cleanup(): Promise<void> {
    if (this.running) {
      this.proc!.kill("SIGKILL");
      await this.done;
    }
    sh(["umount", this.merged], { ok: false });
    if (!process.env.M8S_KEEP) rmSync(this.dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const r = await hostRootfs((m) => console.log(m));
  console.log(`${r.rootfs} (${r.built ? "built" : "cached"}, ${r.seconds.toFixed(1)} s)`);
}
