// Starting and stopping machines. With systemd as PID 1 (and the agent's root being /), a machine is the
// unit systemd-nspawn@NAME and `systemctl` starts and stops it. Without systemd, the agent runs the same
// command line the unit runs and supervises it itself:
//   systemd-nspawn --quiet --keep-unit --boot --link-journal=try-guest --network-veth -U --settings=override
//                  --machine=NAME --register=no
// nspawn finds the image (/var/lib/machines/NAME) and the settings (/etc/systemd/nspawn/NAME.nspawn) by name.
// Under a root other than / (tests), nspawn is started in a private mount namespace where
// /run/machines/NAME is the root's rootfs and /run/systemd/nspawn/NAME.nspawn the root's link (nspawn
// searches both places too); nothing of the host's directories changes.
// Stop is what systemd does to the unit: SIGTERM to nspawn, which sends the container its KillSignal;
// SIGKILL after the stop timeout and a grace.
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { closeFd } from "../common/libc.ts";
import { bindUnixDatagram, recvDatagram } from "../common/libc-notify.ts";
import type { Subprocess } from "bun";
import { log } from "../common/log.ts";
import { sleepLong } from "../common/timer.ts";
import { DEFAULT_STOP_TIMEOUT_S } from "../common/settings.ts";
import { AgentError, ERR } from "./errors.ts";
import { nspawnLink, rootfsDir } from "./layout.ts";

export const NSPAWN_UNIT_FLAGS = ["--quiet", "--keep-unit", "--boot", "--link-journal=try-guest", "--network-veth", "-U", "--settings=override"];

/** the machine's console output kept for `start`'s error message (nspawn's own errors land here) */
const KEEP_OUTPUT = 16 * 1024;

const PRIVATE_MOUNTS = `set -e
mount -t tmpfs -o mode=0755,size=1m man8s /run/systemd/nspawn
mount -t tmpfs -o mode=0700,size=1m man8s /run/machines
ln -s "$M8S_SETTINGS" "/run/systemd/nspawn/$M8S_NAME.nspawn"
mkdir "/run/machines/$M8S_NAME"
mount --bind "$M8S_ROOTFS" "/run/machines/$M8S_NAME"
shift
exec "$@"`;

export function systemdIsPid1(): boolean {
  return existsSync("/run/systemd/system");
}

interface Running {
  proc: Subprocess;
  output: string;
  startedAt: number;
  done: Promise<number>;
  /** when nspawn passed on the container's READY=1 (what systemd waits for with a Type=notify unit) */
  readyAt: number | null;
}

/** datagrams read per poll of a machine's notify socket (nspawn sends a handful per start) */
const NOTIFY_PER_POLL = 64;
const NOTIFY_POLL_MS = 100;

export class MachineRunner {
  private readonly running = new Map<string, Running>();
  /** told when a machine becomes ready or its nspawn exits (the cluster catalog publishes it) */
  onChange: ((name: string) => void) | null = null;

  constructor(
    readonly root: string,
    /** where the per-machine notify sockets go (beside the admin socket) */
    readonly runDir: string,
    readonly useSystemd = root === "/" && systemdIsPid1(),
  ) {}

  /** when the machine last became ready (READY=1 through nspawn), in this run; null: not (yet) */
  readyAt(name: string): number | null {
    return this.pid(name) !== null ? (this.running.get(name)?.readyAt ?? null) : null;
  }

  /**
   * nspawn's NOTIFY_SOCKET, as systemd gives a Type=notify unit: nspawn sends READY=1 once the container
   * does. Only nspawn's own datagrams count (SCM_CREDENTIALS pid).
   */
  private listen(name: string, r: Running): { path: string; stop: () => void } {
    const path = join(this.runDir, `notify-${name}.sock`);
    rmSync(path, { force: true });
    const fd = bindUnixDatagram(path);
    const dec = new TextDecoder();
    const poll = setInterval(() => {
      for (let i = 0; i < NOTIFY_PER_POLL; i++) {
        let d;
        try {
          d = recvDatagram(fd, 4096);
        } catch {
          return;
        }
        if (!d) return;
        if (d.creds?.pid !== r.proc.pid) continue;
        if (/^READY=1$/m.test(dec.decode(d.data)) && r.readyAt === null) {
          r.readyAt = Date.now();
          this.onChange?.(name);
        }
      }
    }, NOTIFY_POLL_MS);
    return {
      path,
      stop: () => {
        clearInterval(poll);
        closeFd(fd);
        rmSync(path, { force: true });
      },
    };
  }

  /** the nspawn process the agent supervises for NAME, while it runs */
  pid(name: string): number | null {
    const r = this.running.get(name);
    return r && r.proc.exitCode === null && r.proc.signalCode === null ? r.proc.pid : null;
  }

  isRunning(name: string): boolean {
    if (this.useSystemd) return systemctl(["is-active", "--quiet", unit(name)]).code === 0;
    return this.pid(name) !== null;
  }

  /** Starts NAME; resolves once nspawn has been running for `settleMs` (a failing nspawn exits at once). */
  async start(name: string, settleMs = 1000): Promise<{ how: "systemd" | "agent"; pid: number | null }> {
    if (this.useSystemd) {
      const r = await systemctlAsync(["start", unit(name)]);
      if (r.code !== 0) throw new AgentError(ERR.START_FAILED, `systemctl start ${unit(name)}: ${r.err.trim().slice(0, 600)}`);
      return { how: "systemd", pid: null };
    }
    if (this.pid(name) !== null) throw new AgentError(ERR.RUNNING, `machine '${name}' is already running`);
    const argv = ["systemd-nspawn", ...NSPAWN_UNIT_FLAGS, `--machine=${name}`, "--register=no"];
    const env: Record<string, string> = { ...(process.env as Record<string, string>), SYSTEMD_LOG_LEVEL: "warning" };
    let full = argv;
    if (this.root !== "/") {
      full = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", PRIVATE_MOUNTS, "sh", "--", ...argv];
      Object.assign(env, { M8S_NAME: name, M8S_ROOTFS: rootfsDir(this.root, name), M8S_SETTINGS: nspawnLink(this.root, name) });
    }
    const r: Running = { proc: undefined as unknown as Subprocess, output: "", startedAt: Date.now(), done: Promise.resolve(0), readyAt: null };
    const notify = this.listen(name, r);
    env.NOTIFY_SOCKET = notify.path;
    let proc: Subprocess;
    try {
      proc = Bun.spawn(full, { stdin: "ignore", stdout: "pipe", stderr: "pipe", env });
    } catch (e) {
      notify.stop();
      throw e;
    }
    r.proc = proc;
    const dec = new TextDecoder();
    const pump = async (s: ReadableStream<Uint8Array>) => {
      for await (const c of s) r.output = (r.output + dec.decode(c, { stream: true })).slice(-KEEP_OUTPUT);
    };
    const streams = Promise.all([pump(proc.stdout as ReadableStream<Uint8Array>), pump(proc.stderr as ReadableStream<Uint8Array>)]);
    r.done = proc.exited.then(async (code) => {
      await streams;
      notify.stop();
      log(`machine ${name}: nspawn exited with ${code}`);
      this.onChange?.(name);
      return code;
    });
    this.running.set(name, r);
    const settle = new AbortController();
    const early = await Promise.race([r.done, sleepLong(settleMs, settle.signal).then(() => null, () => null)]);
    settle.abort();
    if (early !== null) {
      this.running.delete(name);
      const tail = r.output.trim().split("\n").slice(-3).join(" | ").replace(/[\x00-\x1f\x7f]/g, " ");
      throw new AgentError(ERR.START_FAILED, `machine '${name}': systemd-nspawn exited with ${early}: ${tail.slice(0, 600)}`);
    }
    return { how: "agent", pid: proc.pid };
  }

  /** Stops NAME as systemd stops the unit; resolves with nspawn's exit code (null under systemd). */
  async stop(name: string, timeoutS: number): Promise<{ how: "systemd" | "agent"; code: number | null; killed: boolean }> {
    if (this.useSystemd) {
      const r = await systemctlAsync(["stop", unit(name)]);
      if (r.code !== 0) throw new AgentError(ERR.IO, `systemctl stop ${unit(name)}: ${r.err.trim().slice(0, 600)}`);
      return { how: "systemd", code: null, killed: false };
    }
    const r = this.running.get(name);
    if (!r || this.pid(name) === null) throw new AgentError(ERR.NOT_RUNNING, `machine '${name}' is not running (under this agent)`);
    r.proc.kill("SIGTERM");
    let killed = false;
    const grace = new AbortController();
    const code = await Promise.race([r.done, sleepLong((timeoutS + 5) * 1000, grace.signal).then(() => null, () => null)]);
    grace.abort();
    let final = code;
    if (code === null) {
      killed = true;
      r.proc.kill("SIGKILL");
      final = await r.done;
    }
    this.running.delete(name);
    return { how: "agent", code: final, killed };
  }

  /** At agent shutdown: the supervised machines are stopped as at a host shutdown. */
  async stopAll(timeoutS = DEFAULT_STOP_TIMEOUT_S): Promise<void> {
    await Promise.all([...this.running.keys()].map((n) => this.stop(n, timeoutS).catch(() => undefined)));
  }
}

const unit = (name: string) => `systemd-nspawn@${name}.service`;

function systemctl(args: string[]): { code: number; err: string } {
  const r = Bun.spawnSync(["systemctl", ...args], { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode ?? -1, err: r.stderr.toString() };
}

/**
 * For start and stop, which wait for the unit (a start until READY=1, a stop until the container's stop
 * signal has done its work): asynchronously, so the agent keeps serving meanwhile, above all the
 * container's own reports (its start-up phases, its final exit) and other admin clients.
 */
async function systemctlAsync(args: string[]): Promise<{ code: number; err: string }> {
  const p = Bun.spawn(["systemctl", ...args], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  return { code, err: err.slice(-4096) };
}
