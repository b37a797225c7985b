// A hostile container's report traffic, run as its own process so the measuring side is not slowed by it:
//   bun flooder.ts SOCKET SECONDS MODE
// MODE big: pipelined 0.45 MiB reports; small: pipelined 1 KiB reports; conns: connections held open.
// It reconnects whenever the agent closes it, with 8 connections at a time, until SECONDS have passed.
import type { Socket } from "bun";
import { encodeFrame } from "../../hostagent/protocol.ts";

const [path, secs, mode] = [process.argv[2]!, Number(process.argv[3]), process.argv[4] ?? "big"];
const end = Date.now() + secs * 1000;
const msg = mode === "big" ? "x".repeat(450 * 1024) : "y".repeat(1024);
const frame = encodeFrame({ id: 1, cmd: "report", args: { phase: "running", message: msg, health: "healthy" } });
let frames = 0;
let connects = 0;

function one(): void {
  if (Date.now() > end) return;
  connects++;
  let off = 0;
  const pump = (s: Socket<undefined>) => {
    if (mode === "conns") return;
    while (Date.now() < end) {
      const n = s.write(off === 0 ? frame : frame.subarray(off));
      if (n <= 0) return;
      off += n;
      if (off < frame.length) return; // wait for drain
      off = 0;
      frames++;
    }
    s.end();
  };
  Bun.connect({
    unix: path,
    socket: {
      open: pump,
      drain: pump,
      data() {},
      close: () => void setTimeout(one, 1),
      error: () => {},
      connectError: () => void setTimeout(one, 5),
    },
  }).catch(() => setTimeout(one, 5));
}

for (let i = 0; i < 8; i++) one();
await Bun.sleep(secs * 1000 + 100);
console.log(JSON.stringify({ frames, connects }));
process.exit(0);
