// MAN8S_WAIT_FOR against real listeners that come up late, the timeout (exit 75 naming the target), aborts.
import { describe, expect, test } from "bun:test";
import { waitFor, parseWaitTimeoutMs } from "../../probes/waitfor.ts";
import { ExitError } from "../../common/log.ts";
import { freePort } from "./helpers.ts";

const quiet = { log: () => {} };

describe("MAN8S_WAIT_FOR", () => {
  test("unset or empty: returns at once", async () => {
    expect((await waitFor({}, quiet)).targets).toEqual([]);
    expect((await waitFor({ MAN8S_WAIT_FOR: "  " }, quiet)).targets).toEqual([]);
  });

  test("returns only after every target is up (a TCP port and an HTTP server that start late)", async () => {
    const tcpPort = freePort();
    const httpPort = freePort();
    let tcpUp = 0, httpUp = 0;
    let l: Bun.TCPSocketListener<undefined> | undefined;
    let s: ReturnType<typeof Bun.serve> | undefined;
    const t1 = setTimeout(() => {
      l = Bun.listen({ hostname: "127.0.0.1", port: tcpPort, socket: { data() {} } });
      tcpUp = performance.now();
    }, 300);
    const t2 = setTimeout(() => {
      s = Bun.serve({ hostname: "127.0.0.1", port: httpPort, fetch: () => new Response("ok") });
      httpUp = performance.now();
    }, 600);
    const logs: string[] = [];
    try {
      const t0 = performance.now();
      const rep = await waitFor(
        { MAN8S_WAIT_FOR: `tcp://127.0.0.1:${tcpPort} http://127.0.0.1:${httpPort}/ "exec:true"`, MAN8S_WAIT_TIMEOUT: "10" },
        { log: (m) => logs.push(m), retryMs: 50 },
      );
      const end = performance.now();
      expect(httpUp).toBeGreaterThan(0);
      expect(end).toBeGreaterThanOrEqual(httpUp);
      expect(end - httpUp).toBeLessThan(1000);
      expect(rep.targets.map((t) => t.url)).toEqual([`tcp://127.0.0.1:${tcpPort}`, `http://127.0.0.1:${httpPort}/`, "exec:true"]);
      expect(rep.targets[0]!.attempts).toBeGreaterThan(1);
      expect(rep.targets[0]!.ms + t0).toBeGreaterThanOrEqual(tcpUp);
      expect(rep.targets[2]!.attempts).toBe(1);
      expect(logs.some((m) => m.includes(`tcp://127.0.0.1:${tcpPort} up after`))).toBe(true);
    } finally {
      clearTimeout(t1);
      clearTimeout(t2);
      l?.stop(true);
      s?.stop(true);
    }
  });

  test("timeout: ExitError 75 naming only the targets that never answered, with their last error", async () => {
    const dead = freePort();
    const alive = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const t0 = performance.now();
      let err: unknown;
      try {
        await waitFor({ MAN8S_WAIT_FOR: `tcp://127.0.0.1:${alive.port} tcp://127.0.0.1:${dead} exec:false`, MAN8S_WAIT_TIMEOUT: "0.6" }, quiet);
      } catch (e) {
        err = e;
      }
      const ms = performance.now() - t0;
      expect(err).toBeInstanceOf(ExitError);
      expect((err as ExitError).code).toBe(75);
      const msg = (err as Error).message;
      expect(msg).toContain(`tcp://127.0.0.1:${dead} (ECONNREFUSED`);
      expect(msg).toContain("exec:false (exit 1)");
      expect(msg).not.toContain(`tcp://127.0.0.1:${alive.port}`);
      expect(msg).toContain("MAN8S_WAIT_TIMEOUT (0.6 s)");
      expect(ms).toBeGreaterThanOrEqual(590);
      expect(ms).toBeLessThan(2000);
    } finally {
      alive.stop(true);
    }
  });

  test("a target that hangs is cut at the deadline too", async () => {
    const t0 = performance.now();
    const p = waitFor({ MAN8S_WAIT_FOR: '"exec:sleep 30"', MAN8S_WAIT_TIMEOUT: "400ms" }, quiet);
    await expect(p).rejects.toMatchObject({ code: 75 });
    expect(performance.now() - t0).toBeLessThan(1500);
  });

  test("bad URLs and timeouts are configuration errors (65) naming the variable", async () => {
    await expect(waitFor({ MAN8S_WAIT_FOR: "tcp://db" }, quiet)).rejects.toMatchObject({ code: 65, message: expect.stringContaining("MAN8S_WAIT_FOR: bad probe URL 'tcp://db'") });
    await expect(waitFor({ MAN8S_WAIT_FOR: "exec:true", MAN8S_WAIT_TIMEOUT: "soon" }, quiet)).rejects.toMatchObject({ code: 65, message: expect.stringContaining("MAN8S_WAIT_TIMEOUT='soon'") });
    expect(parseWaitTimeoutMs("30")).toBe(30_000);
    expect(parseWaitTimeoutMs("1.5")).toBe(1500);
    expect(parseWaitTimeoutMs("250ms")).toBe(250);
    expect(parseWaitTimeoutMs("2m")).toBe(120_000);
    expect(parseWaitTimeoutMs(undefined)).toBe(60_000);
    expect(parseWaitTimeoutMs("0")).toBe(0);
  });

  test("an abort (stop request) ends the wait at once with the abort reason", async () => {
    const ac = new AbortController();
    const reason = new Error("stop requested");
    setTimeout(() => ac.abort(reason), 150);
    const t0 = performance.now();
    await expect(waitFor({ MAN8S_WAIT_FOR: `tcp://127.0.0.1:${freePort()} "exec:sleep 30"`, MAN8S_WAIT_TIMEOUT: "0" }, { ...quiet, signal: ac.signal })).rejects.toBe(reason);
    expect(performance.now() - t0).toBeLessThan(1000);
  });
});
