// Run in a client netns by failures.test.ts: bringUp, stop(), then nothing may keep the process alive.
import { bringUp } from "../../netctl/bringup.ts";

const changes: string[] = [];
const { result, stop } = await bringUp(process.env, { log: () => {}, onChange: (r) => changes.push(r.lease?.event ?? "?") });
await stop();
process.stdout.write(`${JSON.stringify({ ipv4: result.addresses.ipv4, stoppedAt: performance.now() })}\n`);
// no process.exit(): the test measures that the event loop drains by itself
