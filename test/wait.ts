// Waiting for what a test expects instead of sleeping and hoping it happened: poll a condition (waitFor),
// or collect a process's output as it arrives and wait for a line (Output).
import type { Subprocess } from "bun";

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs: number, stepMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(stepMs);
  }
}

/** A process's stream read as it arrives. */
export class Output {
  text = "";
  readonly ended: Promise<void>;
  constructor(stream: ReadableStream<Uint8Array>) {
    this.ended = (async () => {
      const d = new TextDecoder();
      for await (const chunk of stream) this.text += d.decode(chunk, { stream: true });
    })();
  }
  /** complete lines so far */
  lines(): string[] {
    return this.text.split("\n").slice(0, -1);
  }
  /** waits until there are at least n complete lines; returns them */
  waitLines(n: number, timeoutMs = 5000): Promise<string[]> {
    return waitFor(`${n} lines of output (have: ${JSON.stringify(this.text)})`, () => (this.lines().length >= n ? this.lines() : false), timeoutMs, 10);
  }
}

/** Stops a process the test started: SIGTERM, SIGKILL after `graceMs`; its exit code (or 128+signal). */
export async function stopProcess(p: Pick<Subprocess, "exitCode" | "signalCode" | "kill" | "exited">, graceMs = 5000): Promise<number> {
  if (p.exitCode === null && !p.signalCode) p.kill("SIGTERM");
  const k = setTimeout(() => p.kill("SIGKILL"), graceMs);
  const code = await p.exited;
  clearTimeout(k);
  return code;
}
