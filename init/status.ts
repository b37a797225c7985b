// The status record (/run/man8s/status.json): what the init did and why the container stopped.
// nspawn reports 0 after a stub-driven stop whatever the app returned, so this file is the truth.
// Written whole to a temp file and renamed, so a reader never sees half a record; on a full filesystem the
// newest record replaces the old one all the same (the final record, with the exit, must be the one left).
import { accessSync, chmodSync, constants, mkdirSync, statSync } from "node:fs";
import { replaceFile } from "../common/atomic-file.ts";
import { dirname } from "node:path";
import { log } from "../common/log.ts";
import { VERSION } from "../common/version.ts";

export type Phase =
  | "signals" | "env" | "protected-dirs" | "network" | "dependencies" | "app" | "running" | "stopping"
  | "draining" | "exited" | "exec";

export interface StatusRecord {
  version: string;
  pid: number;
  mode: "pid1" | "pid2" | "subreaper";
  phase: Phase;
  startedAt: string;
  /** duration of each start-up phase in ms; "runtime" is the runtime's time origin → the init's first statement */
  phases: Record<string, number>;
  /** startedAfterMs: the runtime's time origin → the app's spawn (exec is ~3 ms earlier) */
  /** argv: the first words (~8 KiB); argc: the number of words, present when argv is cut */
  app: { argv: string[]; argc?: number; pid: number; startedAt: string; group: boolean; startedAfterMs: number } | null;
  network: unknown;
  /** Docker's State.Health: status, failingStreak, log */
  health: unknown;
  /** when and how READY=1 was sent */
  ready: unknown;
  /**
   * The stop request (`signal` as received) and what the init did: `sent` the app's stop signal at `sentAt`
   * (null: no app running); `escalated` when the app was still running at the timeout and got SIGKILL,
   * with what the app did with the stop signal at that moment (`appSignalState`).
   */
  stop: {
    signal: string;
    requestedAt: string;
    sent: string | null;
    sentAt: string | null;
    timeoutSec: number;
    escalated: boolean;
    escalatedAt: string | null;
    appSignalState: "handled" | "ignored" | "blocked" | "default" | "unknown" | null;
  } | null;
  exit: {
    code: number;
    reason: string;
    app: { code: number | null; signal: string | null } | null;
    /** the init escalated to SIGKILL at the stop timeout and that SIGKILL ended the app */
    killedAfterTimeout: boolean;
    drained: number;
    /** of the drained processes, those still alive at the deadline and sent SIGKILL */
    drainKilled?: number;
    orphansReaped: number;
    /** the largest reaping pass: zombies and ms */
    largestReap?: { n: number; ms: number };
    at: string;
  } | null;
}

export class StatusFile {
  /** the error of the last write (code), so a lasting failure is logged once, and its end too */
  private failing: string | null = null;
  private dirChecked = false;
  constructor(
    readonly path: string,
    readonly record: StatusRecord,
    private readonly onWrite?: (r: StatusRecord) => void,
  ) {}

  write(): void {
    if (!this.dirChecked) {
      this.dirChecked = true;
      const why = prepareDir(dirname(this.path));
      if (why) log(`status record ${this.path}: ${why}`);
    }
    // the newest record wins even on a full filesystem: the final one must not lose to an earlier one
    const err = replaceFile(this.path, `${JSON.stringify(this.record, null, 2)}\n`, { mode: 0o644, newestWins: true });
    if (err && this.failing !== (err.code ?? err.message)) {
      this.failing = err.code ?? err.message;
      log(`cannot write status record ${this.path}: ${err.message}`);
    } else if (!err && this.failing) {
      this.failing = null;
      log(`status record ${this.path} written again (phase ${this.record.phase})`);
    }
    this.onWrite?.(this.record);
  }
}

/**
 * The record's directory (/run/man8s) is the init's own: created here with mode 0755 whatever the umask,
 * so the app (any user) can read the record. Returns why it cannot be written, or null.
 */
function prepareDir(dir: string): string | null {
  try {
    if (mkdirSync(dir, { recursive: true, mode: 0o755 }) !== undefined) chmodSync(dir, 0o755);
    accessSync(dir, constants.W_OK);
    return null;
  } catch (e) {
    let owner = "";
    try {
      const st = statSync(dir);
      owner = ` (owned by uid ${st.uid}:${st.gid}, mode ${(st.mode & 0o7777).toString(8)}; the init is uid ${process.getuid?.()})`;
      // nspawn creates the parents of a bind target as the host's root, which is nobody under PrivateUsers=pick
      if (st.uid === 65534) owner += "; systemd-nspawn created it for a bind below it, and under PrivateUsers=pick that owner is nobody: bind nothing under it (the agent's directory is /run/man8s-agent)";
    } catch {
      // nothing to add
    }
    return `directory ${dir} is not usable: ${(e as Error).message}${owner}`;
  }
}

export function newRecord(mode: StatusRecord["mode"]): StatusRecord {
  return {
    version: VERSION, pid: process.pid, mode, phase: "signals", startedAt: new Date().toISOString(), phases: {},
    app: null, network: null, health: null, ready: null, stop: null, exit: null,
  };
}
