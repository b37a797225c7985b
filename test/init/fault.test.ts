// Fault signals (issue 10 item 4): sent by kill, they are caught like any signal; raised by a real
// fault, the process still dies of it (through the runtime's crash handler) instead of looping.
import { expect, test } from "bun:test";

async function start(arg: string) {
  const p = Bun.spawn([process.execPath, `${import.meta.dir}/scripts/fault.ts`, arg], { stdout: "pipe", stderr: "pipe" });
  const reader = p.stdout.getReader();
  let out = "";
  const until = async (s: string) => {
    const deadline = Date.now() + 10_000;
    while (!out.includes(s) && Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      out += new TextDecoder().decode(value);
    }
    return out;
  };
  await until("ready\n");
  return { p, until };
}

test("ILL, TRAP, ABRT, BUS, FPE, SEGV, SYS and STKFLT sent by kill are caught; the process lives", async () => {
  const { p, until } = await start("kill");
  for (const s of [4, 5, 6, 7, 8, 11, 31, 16]) {
    process.kill(p.pid, s);
    expect(await until(`got ${s}\n`)).toContain(`got ${s}\n`);
  }
  expect(p.exitCode).toBeNull();
  p.kill(9);
  await p.exited;
}, 30_000);

test("a real SIGSEGV still ends the process with SIGSEGV, at once", async () => {
  const { p } = await start("fault");
  const t = Date.now();
  process.kill(p.pid, 11); // the JS side reacts by reading address 8
  await Promise.race([p.exited, Bun.sleep(10_000)]);
  expect([p.exitCode, p.signalCode]).toEqual([null, "SIGSEGV"]);
  expect(Date.now() - t).toBeLessThan(5000);
}, 30_000);
