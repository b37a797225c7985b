// The host's yggdrasil /64, from the running daemon (`yggdrasilctl -json getSelf`; 0.4 and 0.5 answer
// with different shapes, both carry a "subnet" string somewhere).
import { checkPrefix64 } from "./network.ts";

export type YggSelf = { ok: true; subnet: string } | { ok: false; error: string };

const MAX_OUTPUT = 64 * 1024;

function findSubnet(v: unknown, depth = 0): string | undefined {
  if (depth > 4 || v === null || typeof v !== "object") return undefined;
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (k.toLowerCase() === "subnet" && typeof x === "string") return x;
    const inner = findSubnet(x, depth + 1);
    if (inner) return inner;
  }
  return undefined;
}

export function yggSubnetOf(output: string): string | undefined {
  try {
    const s = findSubnet(JSON.parse(output));
    return s === undefined ? undefined : checkPrefix64(s, "yggdrasil subnet");
  } catch {
    return undefined;
  }
}

export function yggdrasilSelf(yggdrasilctl = "yggdrasilctl"): YggSelf {
  let r;
  try {
    r = Bun.spawnSync([yggdrasilctl, "-json", "getSelf"], { stdout: "pipe", stderr: "pipe", timeout: 10_000 });
  } catch (e) {
    return { ok: false, error: `cannot run ${yggdrasilctl}: ${(e as Error).message}` };
  }
  const out = r.stdout.toString().slice(0, MAX_OUTPUT);
  const subnet = r.exitCode === 0 ? yggSubnetOf(out) : undefined;
  if (subnet) return { ok: true, subnet };
  // 0.4 exits 0 after a "Fatal error" (no daemon): its last line says why
  const last = `${out}\n${r.stderr.toString().slice(-MAX_OUTPUT)}`.trim().split("\n").pop() ?? "";
  return { ok: false, error: `${yggdrasilctl} getSelf (exit ${r.exitCode ?? r.signalCode}) gave no subnet: ${last.replace(/^\S+ \S+ /, "").slice(0, 300)}` };
}
