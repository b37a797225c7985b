// Property test of the DHCPv4 client (issue 9 "Also"): the real binary in a namespace against a server on a
// real socket that answers with random and mutated replies (bad addresses and lease times, fragmented
// 64 KiB datagrams, RFC 3396 option fragments, compression bombs and loops, option overload, truncation)
// and keeps sending more for the client's current transaction. Bounded in time (FUZZ_MS). Properties: the
// client never crashes or logs an internal error, resolv.conf is always valid and bounded, the link never
// carries an unusable address, memory and log output stay bounded. The seed is printed; M8D_FUZZ_SEED
// replays one.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { assertValidResolvConf, DhcpPair, stopClient } from "./dhcp-lab.ts";
import { ensureBuilt, haveTools } from "./lab.ts";

const FUZZ_MS = Number(process.env.M8D_FUZZ_MS ?? 20_000);
const seed = Number(process.env.M8D_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31) + 1);
let p: DhcpPair | undefined;
afterAll(async () => {
  await p?.cleanup();
});

const rssKb = (pid: number, field: "VmRSS" | "VmHWM") => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);

describe.skipIf(!haveTools)("DHCPv4 client fuzz", () => {
  test(`random and mutated replies from a real peer (seed ${seed})`, async () => {
    await ensureBuilt();
    p = await new DhcpPair("fuzz", 110).start();
    await p.startServer("fuzz", { seed });
    // rounds with a fresh client process: every round starts at DISCOVER with a new transaction
    const ROUND_MS = 3000;
    let c = p.client({ MAN8S_NETWORK_TIMEOUT: "600" });
    let roundAt = Date.now();
    const t0 = Date.now();
    let checks = 0, rssEarly = 0, rssMax = 0, rounds = 1, hwm = 0;
    const seenAddrs = new Set<string>();
    while (Date.now() - t0 < FUZZ_MS) {
      expect(c.proc.exitCode, c.log().slice(-3000)).toBeNull();
      if (existsSync(p.resolvPath)) assertValidResolvConf(readFileSync(p.resolvPath, "utf8"));
      for (const a of p.addrs()) {
        seenAddrs.add(`${a.local}/${a.prefixlen}`);
        const first = Number(a.local.split(".")[0]);
        expect(first !== 0 && first !== 127 && first < 224, `unusable address on the link: ${a.local}`).toBe(true);
      }
      const rss = rssKb(c.proc.pid, "VmRSS");
      if (Date.now() - roundAt > 2000 && !rssEarly) rssEarly = rss;
      rssMax = Math.max(rssMax, rss);
      checks++;
      if (Date.now() - roundAt > ROUND_MS && Date.now() - t0 < FUZZ_MS - ROUND_MS / 2) {
        hwm = Math.max(hwm, rssKb(c.proc.pid, "VmHWM"));
        // 0 once online (it handles SIGTERM then), 143 while still bringing up: anything else is a crash
        expect([0, 143]).toContain(await stopClient(c));
        c = p.client({ MAN8S_NETWORK_TIMEOUT: "600" });
        roundAt = Date.now();
        rounds++;
      }
      await Bun.sleep(100);
    }
    hwm = Math.max(hwm, rssKb(c.proc.pid, "VmHWM"));
    const log = c.log();
    const replies = p.messages().length;
    console.log(`fuzz seed ${seed}: ${rounds} rounds, ${checks} checks, ${replies} client messages, addresses seen ${[...seenAddrs].join(" ") || "-"}, RSS ${rssEarly} -> ${rssMax} kB (peak ${hwm} kB), ${log.split("\n").length} log lines`);
    expect(log).not.toContain("internal error");
    expect(p.serverAlive(), "the fuzzing server itself died").toBe(true);
    expect(replies).toBeGreaterThanOrEqual(rounds); // every round talked to the server
    expect(hwm).toBeLessThan(300 * 1024);
    expect(rssMax - rssEarly).toBeLessThan(64 * 1024); // first round: no growth while the flood goes on
    // a flood of bad replies must not flood the log: reasons are rate-limited
    expect(log.split("\n").length).toBeLessThan(rounds * 60);
    // 0 once online (it handles SIGTERM then), 143 while still bringing up: anything else is a crash
    expect([0, 143]).toContain(await stopClient(c));
    if (process.env.M8D_FUZZ_LOG) console.log(log);
  }, FUZZ_MS + 60_000);
});
