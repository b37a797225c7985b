// The two sd-daemon conventions a service started by systemd meets, without libsystemd:
//  - socket activation (sd_listen_fds(3)): LISTEN_PID names this process, LISTEN_FDS counts the sockets
//    passed from fd 3 on. Variables meant for another process (a parent that forgot to unset them) are ignored.
//  - journal streams (sd-daemon(3), JOURNAL_STREAM in systemd.exec(5)): when stderr is the journal's stream,
//    a line may start with "<N>" to carry its syslog priority.
import { fstatSync } from "node:fs";

export const SD_LISTEN_FDS_START = 3;
/** more than any unit of ours passes; a larger count is a misconfiguration, not something to iterate */
const MAX_LISTEN_FDS = 16;

export class ListenFdsError extends Error {}

/**
 * The inherited sockets, or [] when none are meant for this process. The variables are removed either way
 * (as sd_listen_fds(1)), so children never see them. Throws when they are meant for us but malformed.
 */
export function listenFds(env: Record<string, string | undefined> = process.env, pid = process.pid): number[] {
  const pidText = env.LISTEN_PID;
  const countText = env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (pidText === undefined || countText === undefined) return [];
  if (!/^\d{1,10}$/.test(pidText) || Number(pidText) !== pid) return [];
  if (!/^\d{1,3}$/.test(countText)) throw new ListenFdsError(`LISTEN_FDS='${countText.slice(0, 20)}' is not a count`);
  const n = Number(countText);
  if (n > MAX_LISTEN_FDS) throw new ListenFdsError(`LISTEN_FDS=${n}: more than ${MAX_LISTEN_FDS} sockets`);
  const fds: number[] = [];
  for (let fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; fd++) {
    let st;
    try {
      st = fstatSync(fd);
    } catch {
      throw new ListenFdsError(`LISTEN_FDS=${n} but fd ${fd} is not open`);
    }
    if (!st.isSocket()) throw new ListenFdsError(`LISTEN_FDS=${n} but fd ${fd} is not a socket`);
    fds.push(fd);
  }
  return fds;
}

/** Is fd 2 the stream JOURNAL_STREAM ("DEV:INODE") names? Then "<N>" prefixes reach the journal as priorities. */
export function stderrIsJournal(env: Record<string, string | undefined> = process.env): boolean {
  const m = /^(\d{1,20}):(\d{1,20})$/.exec(env.JOURNAL_STREAM ?? "");
  if (!m) return false;
  try {
    const st = fstatSync(2, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}

/** syslog priorities (sd-daemon(3)) */
export const PRIORITY = { err: 3, warning: 4, notice: 5, info: 6, debug: 7 } as const;
export type Priority = keyof typeof PRIORITY;
