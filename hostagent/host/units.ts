// The agent's systemd units and the drop-in that orders every container against it.
//
// Shutdown order is the reverse of start order: systemd-nspawn@NAME.service is ordered After= the agent, so
// at poweroff (or `systemctl stop man8s-agent`) every container's stop job finishes before the agent's
// begins, and the agent is still there to take each container's final report (exit code, reason). Wants=
// starts the agent with the first container. The socket unit owns the admin socket (path, mode 0600, root),
// so clients may connect while the agent (re)starts; their connections queue until it accepts.
import { DEFAULT_SOCKET } from "../layout.ts";

export const AGENT_SOCKET_UNIT = "man8s-agent.socket";
export const AGENT_SERVICE_UNIT = "man8s-agent.service";
export const UNIT_DIR = "/etc/systemd/system";
export const NSPAWN_DROPIN = `${UNIT_DIR}/systemd-nspawn@.service.d/50-man8s-agent.conf`;

export interface AgentUnitOptions {
  /** the man8s binary the service runs */
  binary: string;
  /** the init bundle the agent binds or copies into containers */
  bundle: string;
  /** the host's yggdrasil /64, given to the agent for addresses */
  yggSubnet?: string | null;
  socket?: string;
}

/** systemd's quoting for one ExecStart= argument (paths with spaces; '%' and '$' are specifiers) */
function arg(v: string): string {
  const esc = v.replace(/%/g, "%%").replace(/\$/g, "$$$$");
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(v) ? esc : `"${esc.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

export function agentSocketUnit(o: AgentUnitOptions): string {
  return `[Unit]
Description=man8s host agent: admin socket

[Socket]
ListenStream=${o.socket ?? DEFAULT_SOCKET}
SocketUser=root
SocketGroup=root
SocketMode=0600
DirectoryMode=0755
Accept=no

[Install]
WantedBy=sockets.target
`;
}

export function agentServiceUnit(o: AgentUnitOptions): string {
  const argv = [o.binary, "hostagent", "serve", "--socket", o.socket ?? DEFAULT_SOCKET, "--bundle", o.bundle];
  if (o.yggSubnet) argv.push("--ygg-prefix", o.yggSubnet);
  return `[Unit]
Description=man8s host agent
Requires=${AGENT_SOCKET_UNIT}
After=${AGENT_SOCKET_UNIT}
# containers (systemd-nspawn@*.service) are ordered after this unit by a drop-in: they stop first
Before=machines.target

[Service]
Type=simple
ExecStart=${argv.map(arg).join(" ")}
Restart=on-failure
RestartSec=1
# the agent's own stop is quick; it flushes the durable records of every container on SIGTERM
TimeoutStopSec=30
KillMode=mixed

[Install]
WantedBy=multi-user.target
Also=${AGENT_SOCKET_UNIT}
`;
}

export function nspawnDropIn(): string {
  return `# Every container starts after the man8s agent and therefore stops before it (shutdown runs the
# start order backwards): the agent records each container's final exit.
[Unit]
Wants=${AGENT_SERVICE_UNIT}
After=${AGENT_SERVICE_UNIT}
`;
}
