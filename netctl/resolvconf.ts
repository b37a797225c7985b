// /etc/resolv.conf from a DHCP lease, written atomically (temp file in the same directory + rename),
// so a reader never sees a half-written file.
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { formatIPv4 } from "./addrmath.ts";

export function renderResolvConf(dns: Uint8Array[], domain: string | undefined, search: string[]): string {
  const lines = ["# written by man8s netctl from the DHCPv4 lease"];
  const s = [...(domain ? [domain] : []), ...search.filter((x) => x !== domain)];
  if (s.length) lines.push(`search ${s.join(" ")}`);
  for (const d of dns.slice(0, 3)) lines.push(`nameserver ${formatIPv4(d)}`);
  return `${lines.join("\n")}\n`;
}

/** Atomic replace. Falls back to one in-place write when the target is a mount point (EBUSY/EXDEV). */
export function writeResolvConf(path: string, text: string): void {
  const tmp = `${path}.man8s-${process.pid}.tmp`;
  try {
    const fd = openSync(tmp, "w", 0o644);
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // the temp file was never created or is already renamed
    }
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EBUSY" || code === "EXDEV") {
      // a bind-mounted resolv.conf cannot be replaced by rename; a single short write is the best left
      writeFileSync(path, text);
      return;
    }
    throw e;
  }
}
