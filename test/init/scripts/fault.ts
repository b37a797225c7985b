// Child for fault.test.ts: the init's signal intake in a plain Bun process. A SIGSEGV sent by kill
// must be delivered as a signal; then a real fault (a read at address 0) must still kill the process.
import { read } from "bun:ffi";
import { installSignalIntake, onSignal } from "../../../init/signals.ts";

installSignalIntake();
onSignal((s) => {
  process.stdout.write(`got ${s}\n`);
  if (s === 11 && process.argv[2] === "fault") read.u8(8 as never); // a real fault: address 8 is never mapped
});
process.stdout.write("ready\n");
setInterval(() => undefined, 1000);
