// Names across hosts, from inside a container (docs/cluster.md): the init asks its own agent, over its
// report socket, with the read-only `lookup` request (NAME or NAME@HOST → host, yggdrasil address,
// readiness); it never talks to etcd itself. Loaded on demand by name resolution and by ready:// probes.
//
//   lookupName(name, env): Promise<LookupAnswer | null>   null: no agent here, or it did not answer
//   resolveInCluster(name, env): Promise<address | null>   an address on another host, else null (local rules apply)
//   readyProbe(name, env): { ok, detail }                  ready://NAME[@HOST]: the machine reports ready
import { IN_CONTAINER_REPORT_SOCKET } from "./paths.ts";
import { askAgent } from "./report-client.ts";

export type Env = Record<string, string | undefined>;

/** The agent's answer to `lookup` (hostagent/cluster/index.ts answers it). */
export interface LookupAnswer {
  name: string;
  found: boolean;
  /** the agent runs with --etcd */
  cluster: boolean;
  /** the machine is on this host */
  local: boolean;
  /** the cluster view is not current (etcd unreachable): ready is not trusted */
  stale: boolean;
  host: string | null;
  address: string | null;
  ready: boolean;
  /** installing, stopped, running or ready */
  state: string | null;
  health: string | null;
}

/** an answer is a few hundred bytes; anything larger is not one */
const MAX_ANSWER = 16 * 1024;
export const LOOKUP_TIMEOUT_MS = 500;
/** the agent said it has no cluster: names are this host's only, as without an agent (asked once) */
let noCluster = false;

function socketPath(env: Env): string {
  return env.MAN8S_REPORT_SOCKET || IN_CONTAINER_REPORT_SOCKET;
}

/** One `lookup` on the report socket; null when there is no agent, it refuses, or it is slow. */
export async function lookupName(name: string, env: Env, timeoutMs = LOOKUP_TIMEOUT_MS): Promise<LookupAnswer | null> {
  const a = await askAgent(socketPath(env), "lookup", { name }, timeoutMs, MAX_ANSWER);
  return a?.ok && typeof a.result === "object" && a.result !== null ? (a.result as LookupAnswer) : null;
}

/**
 * The yggdrasil address of NAME (or NAME@HOST) when it lives on another host; null when the local rules
 * apply (no agent, no cluster, a machine of this host, or a name nobody holds). NAME@HOST that cannot be
 * found throws: there is no local meaning to fall back to.
 */
export async function resolveInCluster(name: string, env: Env): Promise<string | null> {
  const explicit = name.includes("@");
  if (noCluster && !explicit) return null;
  const a = await lookupName(name, env);
  if (a && !a.cluster) noCluster = true;
  if (a?.found && a.address && (explicit || !a.local)) return a.address;
  if (explicit) {
    throw new Error(a === null ? `cannot resolve '${name}': the host agent did not answer` : `cannot resolve '${name}': ${a.found ? "no yggdrasil address published" : "no such machine on that host"}${a.stale ? " (the cluster view is stale)" : ""}`);
  }
  return null;
}

/** ready://NAME[@HOST]: passes when the machine reports ready (and the agent's cluster view is current). */
export async function readyProbe(name: string, env: Env, timeoutMs: number): Promise<{ ok: boolean; detail: string; address?: string }> {
  const a = await lookupName(name, env, Math.min(timeoutMs, LOOKUP_TIMEOUT_MS));
  if (!a) return { ok: false, detail: `${name}: the host agent did not answer` };
  if (!a.found) return { ok: false, detail: `${name}: no such machine${a.cluster ? " in the cluster" : " on this host"}${a.stale ? " (stale view)" : ""}` };
  const where = `${a.host ?? "this host"}${a.address ? ` [${a.address}]` : ""}`;
  if (a.stale && !a.local) return { ok: false, detail: `${name} on ${where}: the cluster view is stale (etcd unreachable)` };
  return { ok: a.ready, detail: `${name} on ${where}: ${a.ready ? "ready" : `not ready (${a.state ?? "unknown"})`}`, ...(a.address ? { address: a.address } : {}) };
}
