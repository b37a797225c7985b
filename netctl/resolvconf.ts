// /etc/resolv.conf from a DHCP lease, written atomically (temp file in the same directory + rename),
// so a reader never sees a half-written file. The names come from the DHCP server, which is untrusted:
// only RFC 1035 host names (letters, digits, inner hyphens; labels of 1-63, names of at most 253
// characters) may reach the file, within glibc's classic limits (6 search names, 256 characters of
// search list, 3 name servers). Anything else would let a server add `nameserver` or `options` lines.
import { writeFileSync } from "node:fs";
import { writeFileAtomic } from "../common/atomic-file.ts";
import { formatIPv4 } from "../common/net/addrmath.ts";

/** glibc's MAXDNSRCH and the length of its search buffer; MAXNS */
export const MAX_SEARCH_NAMES = 6;
export const MAX_SEARCH_CHARS = 256;
export const MAX_NAMESERVERS = 3;

const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** A DNS name fit for resolv.conf: LDH labels, at most 253 characters; one trailing dot is allowed. */
export function isDomainName(s: string): boolean {
  const n = s.endsWith(".") ? s.slice(0, -1) : s;
  return n.length > 0 && n.length <= 253 && n.split(".").every((l) => LABEL.test(l));
}

/** A string from the network shown in a log line: quoted, every byte outside printable ASCII escaped, bounded. */
export function printable(s: string, max = 200): string {
  const cut = s.length > max ? s.slice(0, max) : s;
  const esc = cut.replace(/[^\x20-\x7e]|["\\]/g, (c) => {
    if (c === "\n") return "\\n";
    if (c === "\r") return "\\r";
    if (c === "\t") return "\\t";
    if (c === '"' || c === "\\") return `\\${c}`;
    return `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
  });
  return `"${esc}"${s.length > max ? `... (${s.length} chars)` : ""}`;
}

/**
 * The search list: the domain first, then the search names, valid and distinct only, cut at the limits.
 * Callers validate and log what they drop; this is the last line of defence.
 */
export function searchList(domain: string | undefined, search: string[]): string[] {
  const out: string[] = [];
  let chars = 0;
  for (const n of [...(domain ? [domain] : []), ...search]) {
    if (!isDomainName(n) || out.includes(n)) continue;
    if (out.length >= MAX_SEARCH_NAMES || chars + n.length + (out.length ? 1 : 0) > MAX_SEARCH_CHARS) break;
    chars += n.length + (out.length ? 1 : 0);
    out.push(n);
  }
  return out;
}

export function renderResolvConf(dns: Uint8Array[], domain: string | undefined, search: string[]): string {
  const lines = ["# written by man8s netctl from the DHCPv4 lease"];
  const s = searchList(domain, search);
  if (s.length) lines.push(`search ${s.join(" ")}`);
  for (const d of dns.filter((d) => d.length === 4).slice(0, MAX_NAMESERVERS)) lines.push(`nameserver ${formatIPv4(d)}`);
  return `${lines.join("\n")}\n`;
}

/** Atomic replace. Falls back to one in-place write when the target is a mount point (EBUSY/EXDEV). */
export function writeResolvConf(path: string, text: string): void {
  try {
    writeFileAtomic(path, text, { mode: 0o644 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EBUSY" || code === "EXDEV") {
      // a bind-mounted resolv.conf cannot be replaced by rename; a single short write is the best left
      writeFileSync(path, text);
      return;
    }
    throw e;
  }
}
