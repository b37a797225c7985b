// What the init calls to tell the host agent about itself. Best effort by design: nothing here throws,
// and one send gives up after `timeoutMs` (default 50 ms), so a missing or hung agent never delays the
// container. The socket is the container's own (bound by the .nspawn file), so records carry no name.
// Only node:fs is loaded up front; the msgpack code is imported on the first send.
import { existsSync } from "node:fs";
import { IN_CONTAINER_REPORT_SOCKET } from "./paths.ts";

import type { ReportRecord, StatusRecord } from "./report.ts";
import type { HealthActionRecord } from "./health-on-failure.ts";
export type { ReportRecord } from "./report.ts";

let seq = 0;

/** An answer from the agent: its `ok` and `result` (an error reply is ok: false). */
export interface AgentAnswer {
  ok: boolean;
  result: unknown;
}

/**
 * One request on an agent socket (the container's report socket): null when there is no agent, the
 * connection fails, the answer is larger than `maxAnswer` or malformed, or nothing came within `timeoutMs`.
 * Never rejects. The msgpack code is imported on the first call.
 */
export async function askAgent(socketPath: string, cmd: string, args: unknown, timeoutMs: number, maxAnswer = 64 * 1024): Promise<AgentAnswer | null> {
  try {
    if (!existsSync(socketPath)) return null;
    const { encodeFrame, FrameReader, isPlainObject } = await import("./frame.ts");
    const id = ++seq;
    const frame = encodeFrame({ id, cmd, args });
    return await new Promise<AgentAnswer | null>((resolve) => {
      let done = false;
      let sock: { end(): void } | null = null;
      const finish = (answer: AgentAnswer | null) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        try {
          sock?.end();
        } catch {
          // already closed
        }
        resolve(answer);
      };
      const timer = setTimeout(() => finish(null), timeoutMs);
      const reader = new FrameReader(maxAnswer);
      Bun.connect({
        unix: socketPath,
        socket: {
          open: (s) => {
            sock = s;
            if (done) s.end();
            else if (s.write(frame) !== frame.length) finish(null);
          },
          data: (_s, chunk) => {
            for (const f of reader.push(chunk)) {
              if (f.kind !== "value") return finish(null);
              if (isPlainObject(f.value) && f.value.id === id) return finish({ ok: f.value.ok === true, result: f.value.result });
            }
          },
          close: () => finish(null),
          error: () => finish(null),
          connectError: () => finish(null),
        },
      }).catch(() => finish(null));
    });
  } catch {
    return null;
  }
}

/** Send one report; resolves true when the agent acknowledged it, false otherwise (never rejects). */
export async function sendReport(socketPath: string, record: ReportRecord, timeoutMs = 50): Promise<boolean> {
  return (await askAgent(socketPath, "report", record, timeoutMs))?.ok === true;
}

/**
 * Sends records in order, one at a time, without ever making the caller wait: send() returns at once;
 * while a report is in flight only the newest pending one is kept (each record is a full snapshot).
 * flush() waits for what is queued, for at most `timeoutMs`: call it before the init exits so the
 * exit report gets out.
 */
export class Reporter {
  private pending: ReportRecord | null = null;
  private inflight: Promise<void> | null = null;
  sent = 0;
  failed = 0;

  constructor(
    readonly socketPath = process.env.MAN8S_REPORT_SOCKET || IN_CONTAINER_REPORT_SOCKET,
    readonly timeoutMs = 50,
  ) {}

  send(record: ReportRecord): void {
    this.pending = record;
    if (!this.inflight) this.inflight = this.pump();
  }

  private async pump(): Promise<void> {
    while (this.pending) {
      const r = this.pending;
      this.pending = null;
      if (await sendReport(this.socketPath, r, this.timeoutMs)) this.sent++;
      else this.failed++;
    }
    this.inflight = null;
  }

  async flush(timeoutMs = 120): Promise<void> {
    if (!this.inflight) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.inflight, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
  }
}

/** The parts of the init's status record (common/report.ts) a report carries. */
export type StatusLike = Pick<StatusRecord, "pid" | "mode" | "phase" | "network" | "health"> &
  Partial<Pick<StatusRecord, "phases" | "app" | "exit" | "ready">>;

/** Map the init's status record to a report. */
export function reportFromStatus(s: StatusLike): ReportRecord {
  const r: ReportRecord = { phase: s.phase, initPid: s.pid, pid1: s.mode === "pid1" };
  if (s.app?.pid) r.appPid = s.app.pid;
  if (s.phases) r.timings = s.phases;
  if (s.ready) r.ready = true;
  const net = s.network as { addresses?: Record<string, unknown> } | null | undefined;
  if (net?.addresses) {
    const a: Record<string, string> = {};
    for (const [k, v] of Object.entries(net.addresses)) if (typeof v === "string") a[k] = v;
    r.addresses = a;
  }
  const h = s.health as { status?: unknown; onFailure?: HealthActionRecord } | null | undefined;
  if (typeof h?.status === "string") r.health = h.status;
  const f = h?.onFailure;
  if (f) {
    // the init acts once per unhealthy turn: with restart each action is a restart, else the one action
    r.healthAction = { policy: f.action, restarts: f.restarts ?? 0, last: f.at && f.action !== "none" ? f.action : null, at: f.at };
    if (f.lastDelayMs !== undefined) r.healthAction.lastDelayMs = f.lastDelayMs;
  }
  if (s.exit) {
    r.exit = { code: s.exit.code };
    if (s.exit.reason) r.exit.reason = s.exit.reason;
    if (s.exit.app?.signal) r.exit.signal = s.exit.app.signal;
  }
  return r;
}
