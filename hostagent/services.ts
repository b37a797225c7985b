// What the agent's commands (commands/) and renew.ts need of the running agent: a narrow view, so they
// depend on these few capabilities rather than on the server class. server.ts implements it; a command
// never sees the sockets, the connection table or the rate limits.
import type { MachineRunner } from "./nspawn-run.ts";
import type { StateStore } from "./state.ts";
import type { Cluster } from "./cluster/catalog.ts";

export interface AgentServices {
  readonly opts: {
    /** the host root for mbctl paths */
    readonly root: string;
    /** default bundle directory for inject/render */
    readonly bundle: string;
    /** yggdrasil /64 prefix for address computations, if known */
    readonly yggPrefix?: string | undefined;
  };
  /** containers' status records: read, watch, and the report of a container's own init */
  readonly state: Pick<StateStore, "get" | "all" | "watch" | "report">;
  /** machines started by this agent (or by systemd for it) */
  readonly runner: Pick<MachineRunner, "useSystemd" | "readyAt" | "pid" | "isRunning" | "start" | "stop">;
  /** listens on the container's report socket (idempotent); returns its path */
  openReportSocket(name: string): string;
  closeReportSocket(name: string): void;
  /** the machine runs, whoever started it */
  isRunning(name: string): boolean;
  /** the etcd catalog when the agent runs with --etcd (docs/cluster.md), else null */
  readonly cluster: Cluster | null;
}

/** The connection a request came on, as a command sees it. */
export interface CallConn {
  send(frame: Uint8Array): void;
  /** run when the connection closes (watchers, cancelled pulls) */
  readonly cleanups: (() => void)[];
  /** report sockets: the container's init process, as the kernel named it */
  readonly peer: { pid: number; start: string | null } | null;
}
