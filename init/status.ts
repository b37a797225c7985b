// The status record (/run/man8s/status.json): what the init did and why the container stopped.
// nspawn reports 0 after a stub-driven stop whatever the app returned, so this file is the truth.
// Written whole to a temp file and renamed, so a reader never sees half a record.
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { log } from "../common/log.ts";
import { VERSION } from "../common/version.ts";

// the schema is shared with the agent (common/report.ts); only its types are used here
import type { StatusRecord } from "../common/report.ts";
export type { ExitRecord, Phase, StatusRecord } from "../common/report.ts";

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
