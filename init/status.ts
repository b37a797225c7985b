// The status record (/run/man8s/status.json): what the init did and why the container stopped.
// nspawn reports 0 after a stub-driven stop whatever the app returned, so this file is the truth.
// Written whole to a temp file and renamed, so a reader never sees half a record.
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
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
  app: { argv: string[]; pid: number; startedAt: string; group: boolean; startedAfterMs: number } | null;
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
    orphansReaped: number;
    /** the largest reaping pass: zombies and ms */
    largestReap?: { n: number; ms: number };
    at: string;
  } | null;
}

export class StatusFile {
  private warned = false;
  private dirMade = false;
  constructor(
    readonly path: string,
    readonly record: StatusRecord,
    private readonly onWrite?: (r: StatusRecord) => void,
  ) {}

  write(): void {
    try {
      if (!this.dirMade) {
        mkdirSync(dirname(this.path), { recursive: true });
        this.dirMade = true;
      }
      const tmp = `${this.path}.${process.pid}.tmp`;
      writeFileSync(tmp, `${JSON.stringify(this.record, null, 2)}\n`);
      renameSync(tmp, this.path);
    } catch (e) {
      if (!this.warned) log(`cannot write status record ${this.path}: ${(e as Error).message}`);
      this.warned = true;
    }
    this.onWrite?.(this.record);
  }
}

export function newRecord(mode: StatusRecord["mode"]): StatusRecord {
  return {
    version: VERSION, pid: process.pid, mode, phase: "signals", startedAt: new Date().toISOString(), phases: {},
    app: null, network: null, health: null, ready: null, stop: null, exit: null,
  };
}
