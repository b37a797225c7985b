// How the clients show the cluster catalog (machines list --cluster, agent watch --cluster): types only
// from the catalog, so the clients load none of its code.
import type { ClusterEvent, ClusterState, HostEntry, MachineEntry } from "./catalog.ts";

export type { ClusterEvent, MachineEntry };

export interface ClusterSnapshot {
  state: ClusterState;
  stale: boolean;
  error: string | null;
  host: string;
  hosts: HostEntry[];
  machines: MachineEntry[];
}

/** NAME HOST STATE ADDRESS DIGEST, with health when known. */
export function clusterLine(m: MachineEntry): string {
  const digest = m.imageDigest ? m.imageDigest.replace(/^sha256:/, "").slice(0, 12) : "-";
  return `${m.name}\t${m.host}\t${m.state}${m.health ? ` health=${m.health}` : ""}\t${m.yggAddress ?? "-"}\t${digest}`;
}

/** The header line of a listing: whose view, and whether it is current. */
export function clusterHeader(s: ClusterSnapshot): string {
  return `# cluster view of ${s.host}: ${s.state}${s.stale ? " (STALE: etcd not reachable, entries may be out of date)" : ""}${s.error ? ` - ${s.error}` : ""}; hosts: ${s.hosts.map((h) => h.host).join(", ") || "-"}`;
}
