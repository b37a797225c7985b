// The agent's side of the cluster (docs/cluster.md): the catalog started with --etcd, and the commands
// that use it. Loaded only by an agent started with --etcd, or by the commands below when asked.
import { VERSION } from "../../common/version.ts";
import { optStr } from "../args.ts";
import { AgentError, ERR } from "../errors.ts";
import { checkName } from "../layout.ts";
import { encodeFrame } from "../protocol.ts";
import type { AgentServer } from "../server.ts";
import type { AgentServices } from "../services.ts";
import type { LookupAnswer as SharedLookupAnswer } from "../../common/cluster-lookup.ts";
import type { CallContext, Command } from "../commands/index.ts";
import { listCmd } from "../commands/machines.ts";
import { Cluster, type ClusterEvent, type ClusterOptions, type LocalEntry, type MachineEntry } from "./catalog.ts";
import { CLUSTER_ERR } from "./etcd.ts";

export { Cluster, type ClusterOptions };
export const NO_CLUSTER = "E_NO_CLUSTER";

/** This host's machines as the catalog publishes them. */
export function localEntries(server: AgentServices): LocalEntry[] {
  // listing needs only the services, not a connection
  return listCmd({}, { server } as unknown as CallContext).machines.map((m) => {
    const ready = m.running && m.ready;
    return {
      name: m.name,
      yggAddress: m.address,
      imageDigest: m.digest,
      state: !m.installed ? "installing" : ready ? "ready" : m.running ? "running" : "stopped",
      phase: m.phase,
      ready,
      health: m.health ?? null,
    };
  });
}

export function startCluster(server: AgentServer, opts: Omit<ClusterOptions, "version" | "yggPrefix">): Cluster {
  const c = new Cluster({ ...opts, version: VERSION, yggPrefix: server.opts.yggPrefix ?? null }, () => localEntries(server));
  // a report, READY=1 or an exit: publish soon (a periodic sync catches anything else)
  server.state.watch(() => c.kick());
  server.runner.onChange = () => c.kick();
  c.start();
  return c;
}

/** pull and install: the name is claimed in the catalog first (refused when another live host holds it). */
export function claimed(run: Command["run"]): Command["run"] {
  return (a, ctx) => {
    const c = ctx.server.cluster;
    if (!c) return run(a, ctx);
    const name = checkName(a.name);
    return c.claim(name).then(async (release: () => void) => {
      try {
        return await run(a, ctx);
      } finally {
        release();
      }
    });
  };
}

function cluster(ctx: CallContext): Cluster {
  const c = ctx.server.cluster;
  if (!c) throw new AgentError(NO_CLUSTER, "this agent runs without --etcd: no cluster catalog");
  return c;
}

/** `machines list --cluster`: every host's machines. */
export function clusterListCmd(_a: Record<string, unknown>, ctx: CallContext) {
  return cluster(ctx).snapshot();
}

/** `agent watch --cluster`: the catalog now, then every change (and state change) as events. */
export function clusterWatchCmd(_a: Record<string, unknown>, ctx: CallContext) {
  const c = cluster(ctx);
  const { conn, id } = ctx;
  const stop = c.watch((e: ClusterEvent) => conn.send(encodeFrame({ id, event: e })));
  conn.cleanups.push(stop);
  return c.snapshot();
}

/** The answer to `lookup`, as the init reads it (common/cluster-lookup.ts), with the catalog's states. */
export type LookupAnswer = Omit<SharedLookupAnswer, "state"> & { state: MachineEntry["state"] | null };

/**
 * `lookup` (also on a container's report socket, read-only): NAME or NAME@HOST → its host, yggdrasil
 * address and readiness. Without --etcd only this host's machines are known.
 */
export function lookupCmd(a: Record<string, unknown>, ctx: CallContext): LookupAnswer {
  const raw = optStr(a, "name", 130);
  if (raw === undefined) throw new AgentError(ERR.BAD_ARGS, "name must be a string (NAME or NAME@HOST)");
  const at = raw.indexOf("@");
  const name = checkName(at < 0 ? raw : raw.slice(0, at));
  const host = at < 0 ? undefined : checkName(raw.slice(at + 1), "host");
  const c = ctx.server.cluster;
  const none: LookupAnswer = { name: raw, found: false, cluster: c !== null, local: false, stale: false, host: null, address: null, ready: false, state: null, health: null };
  if (!c) {
    const m = host === undefined ? localEntries(ctx.server).find((x) => x.name === name) : undefined;
    if (!m) return none;
    return { ...none, found: true, local: true, address: m.yggAddress, ready: m.ready, state: m.state, health: m.health };
  }
  const r = c.lookup(name, host);
  if (!r.entry) return { ...none, stale: r.stale };
  const e = r.entry;
  return { ...none, found: true, local: r.local, stale: r.stale, host: e.host, address: e.yggAddress, ready: e.ready, state: e.state, health: e.health };
}

export { CLUSTER_ERR };
