// The command table. Each command says on which socket it may run: admin commands on the admin socket,
// `report` only on a container's own report socket (the socket names the container, not the request).
import { VERSION } from "../../common/version.ts";
import { containerAddress, prefixText, suffixText } from "../address.ts";
import { optStr } from "../args.ts";
import { AgentError, ERR } from "../errors.ts";
import { checkName } from "../layout.ts";
import { MAX_FRAME, encodeFrame, encodedSize, type RequestId } from "../protocol.ts";
import type { AgentServices, CallConn } from "../services.ts";
import { type ContainerStatus, parseReport, type StateEvent } from "../state.ts";
import { classifyCmd, injectCmd, installCmd, renderCmd } from "./image.ts";
import { claimed, clusterListCmd, clusterWatchCmd, lookupCmd } from "../cluster/index.ts";
import { enterCmd, listCmd, ociDownloadCmd, pruneCmd, pullCmd, removeCmd, renewCmd, restartCmd, rollbackCmd, startCmd, stopCmd } from "./machines.ts";

export interface CallContext {
  /** what a command may use of the agent (services.ts), not the server itself */
  server: AgentServices;
  conn: CallConn;
  id: RequestId;
  /** set on a report socket: the only container this connection may speak for */
  container?: string;
}

export interface Command {
  run(args: Record<string, unknown>, ctx: CallContext): unknown | Promise<unknown>;
  onAdminSocket: boolean;
  onReportSocket: boolean;
}

export const PROTOCOL_VERSION = 1;

/**
 * A list of containers that always fits one reply frame: each record is bounded (common/report.ts), but
 * their number is not, so beyond a frame the list is cut down to the fields an overview needs, and past
 * that to its first entries; `truncated` says so (then ask `status NAME` for one record in full).
 */
export function fitList(list: ContainerStatus[]): { containers: ContainerStatus[]; truncated?: "summary" | number } {
  const room = MAX_FRAME - 4096;
  if (encodedSize(list) <= room) return { containers: list };
  const brief = list.map((s): ContainerStatus => {
    const b: ContainerStatus = { name: s.name, installed: s.installed, phase: s.phase, updatedAt: s.updatedAt, history: [] };
    if (s.initAlive !== undefined) b.initAlive = s.initAlive;
    if (s.appPid !== undefined) b.appPid = s.appPid;
    if (s.health !== undefined) b.health = s.health;
    if (s.exit) b.exit = { code: s.exit.code, ...(s.exit.reason ? { reason: s.exit.reason.slice(0, 80) } : {}) };
    return b;
  });
  if (encodedSize(brief) <= room) return { containers: brief, truncated: "summary" };
  let n = brief.length;
  while (n > 0 && encodedSize(brief.slice(0, n)) > room) n = Math.floor(n * 0.9);
  return { containers: brief.slice(0, n), truncated: brief.length - n };
}

const admin = (run: Command["run"]): Command => ({ run, onAdminSocket: true, onReportSocket: false });

export const COMMANDS: Record<string, Command> = {
  ping: admin(() => ({ pong: true, time: Date.now() })),
  version: admin(() => ({ version: VERSION, protocol: PROTOCOL_VERSION, pid: process.pid })),
  classify: admin(classifyCmd),
  render: admin(renderCmd),
  plan: admin(renderCmd),
  install: admin(claimed(installCmd)),
  inject: admin(injectCmd),
  pull: admin(claimed(pullCmd)),
  "oci-download": admin(ociDownloadCmd),
  machines: admin(listCmd),
  remove: admin(removeCmd),
  start: admin(startCmd),
  stop: admin(stopCmd),
  restart: admin(restartCmd),
  enter: admin(enterCmd),
  renew: admin(renewCmd),
  rollback: admin(rollbackCmd),
  "cache-prune": admin(pruneCmd),
  cluster: admin(clusterListCmd),
  "cluster-watch": admin(clusterWatchCmd),
  // read-only, bounded and rate-limited on its own (server.ts): a container resolves names across hosts
  lookup: { run: lookupCmd, onAdminSocket: true, onReportSocket: true },
  address: admin((a, ctx) => {
    const name = checkName(a.name);
    const prefix = optStr(a, "prefix", 64) ?? ctx.server.opts.yggPrefix;
    const suffix = suffixText(name);
    if (!prefix) return { name, suffix, address: null, prefix: null };
    return { name, suffix, address: containerAddress(prefix, name), prefix: prefixText(prefix) };
  }),
  status: admin((a, ctx) => {
    const name = a.name === undefined || a.name === null ? undefined : checkName(a.name);
    if (name === undefined) return fitList(ctx.server.state.all());
    const s = ctx.server.state.get(name);
    if (!s) throw new AgentError(ERR.NOT_FOUND, `no container '${name}' is known to this agent`);
    return { container: s };
  }),
  watch: admin((a, ctx) => {
    const name = a.name === undefined || a.name === null ? undefined : checkName(a.name);
    const { conn, id } = ctx;
    const stop = ctx.server.state.watch((e: StateEvent) => {
      if (name === undefined || e.name === name) conn.send(encodeFrame({ id, event: e }));
    });
    conn.cleanups.push(stop);
    const now = name === undefined ? ctx.server.state.all() : [ctx.server.state.get(name)].filter((s) => s !== undefined);
    return { watching: name ?? "*", ...fitList(now) };
  }),
  report: {
    onAdminSocket: false,
    onReportSocket: true,
    run: (a, ctx) => {
      const me = ctx.container!;
      if (a.name !== undefined && a.name !== me) {
        throw new AgentError(ERR.FORBIDDEN, `this socket belongs to ${me}: it cannot report for '${String(a.name).slice(0, 80)}'`);
      }
      const r = parseReport(a);
      const s = ctx.server.state.report(me, r, ctx.conn.peer);
      return { name: me, phase: s.phase };
    },
  },
};
