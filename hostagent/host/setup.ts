// `man8s host setup`: the files that make a host a Man8S host, written idempotently.
//
// Each file it writes starts with a marker line carrying a hash of the rest. A file is rewritten only when
// its marker is intact and the hash still matches (the file is as setup left it); a file someone else
// wrote, or edited after setup, is left alone unless --force. Writes are temp file + fsync + rename.
import { createHash } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { replaceFile } from "../../common/atomic-file.ts";
import { AgentError, ERR } from "../errors.ts";
import { type BridgeOptions, NETWORK_DIR, SYSCTL_FILE, netdevFile, networkFile, sysctlFile } from "./network.ts";
import { AGENT_SERVICE_UNIT, AGENT_SOCKET_UNIT, type AgentUnitOptions, NSPAWN_DROPIN, UNIT_DIR, agentServiceUnit, agentSocketUnit, nspawnDropIn } from "./units.ts";

const MARKER = "# Written by man8s host setup; edits make setup leave this file alone (unless --force). sha256=";
/** larger than any file setup writes: a bigger file at one of its paths is not ours, and not read whole */
const MAX_FILE = 64 * 1024;

export type FileRole = "netdev" | "network" | "sysctl" | "agent-socket" | "agent-service" | "nspawn-dropin";

export interface PlannedFile {
  /** absolute path on the host (without the root) */
  path: string;
  role: FileRole;
  content: string;
}

export type Outcome = "created" | "updated" | "unchanged" | "refused";

export interface FileResult extends PlannedFile {
  outcome: Outcome;
  /** why a file was refused */
  reason?: string;
}

export type SetupOptions = BridgeOptions & AgentUnitOptions;

export function plan(o: SetupOptions): PlannedFile[] {
  return [
    { path: `${NETWORK_DIR}/50-man8s-${o.bridge}.netdev`, role: "netdev", content: netdevFile(o) },
    { path: `${NETWORK_DIR}/50-man8s-${o.bridge}.network`, role: "network", content: networkFile(o) },
    { path: SYSCTL_FILE, role: "sysctl", content: sysctlFile() },
    { path: `${UNIT_DIR}/${AGENT_SOCKET_UNIT}`, role: "agent-socket", content: agentSocketUnit(o) },
    { path: `${UNIT_DIR}/${AGENT_SERVICE_UNIT}`, role: "agent-service", content: agentServiceUnit(o) },
    { path: NSPAWN_DROPIN, role: "nspawn-dropin", content: nspawnDropIn() },
  ];
}

const hash = (body: string) => createHash("sha256").update(body).digest("hex").slice(0, 32);

/** The file as written: marker line (hash of the body), then the body. */
export function withMarker(body: string): string {
  return `${MARKER}${hash(body)}\n${body}`;
}

/** Is this text a file setup wrote and nobody changed since? */
export function isOurs(text: string): boolean {
  const nl = text.indexOf("\n");
  if (nl < 0 || !text.startsWith(MARKER)) return false;
  return text.slice(MARKER.length, nl) === hash(text.slice(nl + 1));
}

function classify(root: string, f: PlannedFile, force: boolean): FileResult {
  const target = join(root, f.path);
  const want = withMarker(f.content);
  let st;
  try {
    st = lstatSync(target);
  } catch {
    return { ...f, outcome: "created" };
  }
  if (!st.isFile()) return force ? { ...f, outcome: "updated" } : { ...f, outcome: "refused", reason: "exists and is not a regular file" };
  if (st.size > MAX_FILE) return force ? { ...f, outcome: "updated" } : { ...f, outcome: "refused", reason: "exists and was not written by man8s host setup" };
  const have = readFileSync(target, "utf8");
  if (have === want) return { ...f, outcome: "unchanged" };
  if (isOurs(have) || force) return { ...f, outcome: "updated" };
  return { ...f, outcome: "refused", reason: have.startsWith(MARKER) ? "was edited after man8s host setup wrote it" : "exists and was not written by man8s host setup" };
}

/** What setup would do to each file under root; nothing is written. */
export function diff(root: string, files: PlannedFile[], force: boolean): FileResult[] {
  return files.map((f) => classify(root, f, force));
}

/**
 * Writes the created/updated files. All or nothing for refusals: with any file refused, nothing is
 * written (a half-configured host is worse than an unchanged one).
 */
export function write(root: string, results: FileResult[]): void {
  const refused = results.filter((r) => r.outcome === "refused");
  if (refused.length > 0) {
    throw new AgentError(ERR.EXISTS, refused.map((r) => `${join(root, r.path)} ${r.reason}; not overwritten (use --force to replace it)`).join("\n"));
  }
  for (const r of results) {
    if (r.outcome !== "created" && r.outcome !== "updated") continue;
    const target = join(root, r.path);
    mkdirSync(dirname(target), { recursive: true, mode: 0o755 });
    const err = replaceFile(target, withMarker(r.content), { mode: 0o644 });
    if (err) throw new AgentError(ERR.IO, `cannot write ${target}: ${err.message}`);
  }
}

export const exists = (root: string, path: string) => existsSync(join(root, path));
