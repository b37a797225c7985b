// Shared by the hostagent tests: temp dirs (test/scratch.ts), the real daemon started from dist/man8s on its
// own socket, and a connected client. Every process is tracked by pid and ended by pid.
import { rmSync, existsSync, statSync } from "node:fs";
import { BUNDLE, ensureBuilt, ROOT } from "../build.ts";
import { scratchDir } from "../scratch.ts";
import type { Subprocess } from "bun";
import { AgentClient } from "../../hostagent/client.ts";

export { BUNDLE, ensureBuilt };
export const REPO = ROOT;
/** M8A_BIN runs the suites against another build (to show a new test failing on the old code) */
export const BIN = process.env.M8A_BIN ?? `${ROOT}/dist/man8s`;

const temps: string[] = [];
const procs = new Set<Subprocess>();

export function tmp(tag = "t"): string {
  const d = scratchDir(`m8a-${tag}`);
  temps.push(d);
  return d;
}

export interface Agent {
  proc: Subprocess;
  socket: string;
  root: string;
  stderr: () => Promise<string>;
  stop(signal?: NodeJS.Signals | number): Promise<number>;
}

/** wrap: a command that execs the agent in its own pid (e.g. prlimit), so stop() still signals the agent */
export async function startAgent(opts: { root?: string; socket?: string; extra?: string[]; wrap?: string[]; env?: Record<string, string> } = {}): Promise<Agent> {
  ensureBuilt();
  const dir = tmp("agent");
  const root = opts.root ?? `${dir}/root`;
  const socket = opts.socket ?? `${dir}/agent.sock`;
  const proc = Bun.spawn([...(opts.wrap ?? []), BIN, "hostagent", "serve", "--socket", socket, "--root", root, "--bundle", BUNDLE, ...(opts.extra ?? [])], {
    stdout: "ignore",
    stderr: "pipe",
    env: { ...process.env, ...(opts.env ?? {}) },
  });
  procs.add(proc);
  const t0 = Date.now();
  for (;;) {
    if (existsSync(socket)) {
      try {
        const c = await AgentClient.connect(socket);
        c.close();
        break;
      } catch {
        // not accepting yet
      }
    }
    if (proc.exitCode !== null || Date.now() - t0 > 10_000) throw new Error(`agent did not start (exit ${proc.exitCode})`);
    await Bun.sleep(10);
  }
  let errText: Promise<string> | null = null;
  return {
    proc,
    socket,
    root,
    stderr: () => (errText ??= new Response(proc.stderr as ReadableStream).text()),
    async stop(signal: NodeJS.Signals | number = "SIGTERM") {
      if (proc.exitCode === null) proc.kill(signal);
      const code = await proc.exited;
      procs.delete(proc);
      return code;
    },
  };
}

export async function client(socket: string): Promise<AgentClient> {
  return AgentClient.connect(socket);
}

/** RSS of a pid in KiB, from /proc. */
export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(require("node:fs").readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : 0;
}

/** The shared afterAll of the suites that run one agent with one client over the fixture images. */
export async function stopAgentAndClient(c: AgentClient | undefined, agent: Agent | undefined): Promise<void> {
  c?.close();
  await agent?.stop();
  cleanup();
}

export function cleanup(): void {
  for (const p of procs) {
    if (p.exitCode === null) p.kill("SIGKILL");
  }
  procs.clear();
  for (const d of temps.splice(0)) rmSync(d, { recursive: true, force: true });
}

export function mtime(p: string): number {
  return statSync(p).mtimeMs;
}

/** Expect a promise to reject with an AgentError of this code. */
export async function errorCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return String((e as { code?: string }).code);
  }
  return "no error";
}
