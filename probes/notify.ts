// sd_notify(3) without libsystemd: one AF_UNIX SOCK_DGRAM datagram to $NOTIFY_SOCKET, sent with sendmsg and an
// explicit SCM_CREDENTIALS control message.
//
//   sdNotify(fields, opts?): NotifyOutcome     fields: "READY=1\nSTATUS=..." or ["READY=1", "STATUS=..."]
//   notifySocket(env): string | null           $NOTIFY_SOCKET when usable (a path or @abstract)
//   claimPidFor(ownPid): number                the pid to claim: 1 when we are PID 2, else our own
//
// Why the claim: systemd-nspawn accepts notifications only from the container's PID 1 as it sees it
// (nspawn.c nspawn_dispatch_notify_fd: ucred->pid != inner_child_pid → "Ignoring"); under --as-pid2 that is
// the stub init, so our PID-2 init must claim pid 1. The kernel allows claiming another pid only with
// CAP_SYS_ADMIN over our pid namespace (nspawn keeps it by default). If the claim is refused (EPERM) the
// message is resent with our real pid and the outcome says so (nspawn will then drop it: docs/notes.md §7).
// Never throws: a missing socket is not fatal for an init.
import { EPERM, ErrnoError } from "../common/libc.ts";
import { sendUnixDatagram } from "../common/libc-notify.ts";

export interface NotifyOutcome {
  sent: boolean;
  /** the pid put into SCM_CREDENTIALS for the datagram that was sent */
  claimedPid: number | null;
  socket: string | null;
  error?: string;
}

export function notifySocket(env: Record<string, string | undefined> = process.env): string | null {
  const s = env.NOTIFY_SOCKET;
  if (!s || !(s.startsWith("/") || s.startsWith("@"))) return null; // vsock: and relative paths unsupported
  return s;
}

export function claimPidFor(ownPid: number): number {
  return ownPid === 2 ? 1 : ownPid;
}

export function sdNotify(
  fields: string | string[],
  opts: { env?: Record<string, string | undefined>; claimPid?: number } = {},
): NotifyOutcome {
  const socket = notifySocket(opts.env ?? process.env);
  if (!socket) return { sent: false, claimedPid: null, socket: null, error: "NOTIFY_SOCKET is not set (or not a unix socket path)" };
  const text = (Array.isArray(fields) ? fields.join("\n") : fields).replace(/\n*$/, "\n");
  const data = new TextEncoder().encode(text);
  const pid = opts.claimPid ?? claimPidFor(process.pid);
  const creds = { pid, uid: process.getuid!(), gid: process.getgid!() };
  try {
    sendUnixDatagram(socket, data, creds);
    return { sent: true, claimedPid: pid, socket };
  } catch (e) {
    if (e instanceof ErrnoError && e.errno === EPERM && pid !== process.pid) {
      try {
        sendUnixDatagram(socket, data, { ...creds, pid: process.pid });
        return { sent: true, claimedPid: process.pid, socket, error: `claiming pid ${pid} refused (no CAP_SYS_ADMIN?); sent as pid ${process.pid}` };
      } catch (e2) {
        return { sent: false, claimedPid: null, socket, error: (e2 as Error).message };
      }
    }
    return { sent: false, claimedPid: null, socket, error: `${socket}: ${(e as Error).message}` };
  }
}
