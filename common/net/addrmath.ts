// Address math: IPv4/IPv6 text <-> bytes, RFC 5952 formatting, and mbctl's name -> yggdrasil address hash
// (suffix = low (128 - prefixlen) bits of SHA-256(UTF-8 name), OR'd into the prefix; docs/notes.md §10).
import { IPv6CidrRange, Validator } from "ip-num";

export function parseIPv4(s: string): Uint8Array | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const b = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const v = Number(m[i + 1]);
    if (v > 255 || (m[i + 1]!.length > 1 && m[i + 1]![0] === "0")) return null;
    b[i] = v;
  }
  return b;
}

export function formatIPv4(b: Uint8Array): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

/** Parses any valid IPv6 text form (including a trailing dotted IPv4) into 16 bytes; null if invalid. */
export function parseIPv6(s: string): Uint8Array | null {
  if (!/^[0-9a-fA-F:.]+$/.test(s) || s.length > 45) return null;
  let text = s;
  if (text.includes(".")) {
    // rewrite "a::1.2.3.4" as "a::102:304" so only one grammar remains
    const at = text.lastIndexOf(":");
    const v4 = at < 0 ? null : parseIPv4(text.slice(at + 1));
    if (!v4) return null;
    text = `${text.slice(0, at + 1)}${((v4[0]! << 8) | v4[1]!).toString(16)}:${((v4[2]! << 8) | v4[3]!).toString(16)}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const toGroups = (h: string): number[] | null => {
    if (h === "") return [];
    const out: number[] = [];
    for (const g of h.split(":")) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = toGroups(halves[0]!);
  const rest = halves.length === 2 ? toGroups(halves[1]!) : [];
  if (!head || !rest) return null;
  let groups: number[];
  if (halves.length === 2) {
    if (head.length + rest.length > 7) return null;
    groups = [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest];
  } else {
    if (head.length !== 8) return null;
    groups = head;
  }
  const b = new Uint8Array(16);
  groups.forEach((g, i) => {
    b[2 * i] = g >> 8;
    b[2 * i + 1] = g & 0xff;
  });
  return b;
}

/** RFC 5952 §4: lowercase, no leading zeros, longest run (>= 2) of zero groups as "::", leftmost on ties. */
export function formatIPv6(b: Uint8Array): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((b[2 * i]! << 8) | b[2 * i + 1]!);
  let bestAt = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  if (bestLen < 2) return hex(g);
  return `${hex(g.slice(0, bestAt))}::${hex(g.slice(bestAt + bestLen))}`;
}

export function formatIP(b: Uint8Array): string {
  return b.length === 4 ? formatIPv4(b) : formatIPv6(b);
}

export function bytesToBigInt(b: Uint8Array): bigint {
  let v = 0n;
  for (const x of b) v = (v << 8n) | BigInt(x);
  return v;
}

export function bigIntToBytes(v: bigint, len: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = len - 1; i >= 0; i--) {
    b[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return b;
}

export interface Prefix6 {
  network: Uint8Array; // host bits cleared
  len: number;
}

/**
 * Parses an IPv6 prefix like mbctl does (Python `IPv6Network(p, strict=False)`): host bits are cleared.
 * A bare address means /128 in Python; `defaultLen` lets callers choose /64 for yggdrasil subnets.
 * Returns null when invalid.
 */
export function parsePrefix6(p: string, defaultLen = 128): Prefix6 | null {
  const text = p.includes("/") ? p : `${p}/${defaultLen}`;
  const [addr, lenText] = text.split("/") as [string, string];
  if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > 128) return null;
  if (!parseIPv6(addr) || !Validator.isValidIPv6CidrNotation(text)[0]) return null;
  let range: IPv6CidrRange;
  try {
    range = IPv6CidrRange.fromCidr(text);
  } catch {
    return null;
  }
  const len = Number(range.getPrefix().getValue());
  const mask = len === 0 ? 0n : ((1n << 128n) - 1n) ^ ((1n << BigInt(128 - len)) - 1n);
  const net = bytesToBigInt(parseIPv6(addr)!) & mask;
  // ip-num and our parser must agree on the network; a disagreement means an input we do not understand
  if (range.getFirst().getValue() !== net) return null;
  return { network: bigIntToBytes(net, 16), len };
}

function sha256(name: string): Uint8Array {
  const h = new Bun.CryptoHasher("sha256");
  h.update(new TextEncoder().encode(name));
  return new Uint8Array(h.digest());
}

/** mbctl's address: prefix network | (SHA-256(name) & host mask). */
export function addressForName(name: string, prefix: Prefix6): Uint8Array {
  const hostBits = BigInt(128 - prefix.len);
  const hostMask = (1n << hostBits) - 1n;
  const h = bytesToBigInt(sha256(name)) & hostMask;
  return bigIntToBytes((bytesToBigInt(prefix.network) & ~hostMask) | h, 16);
}

/** `mbctl address getsuffix NAME`: the suffix within ::/64, printed the way mbctl prints it. */
export function getsuffixLines(name: string): string {
  const a = addressForName(name, { network: new Uint8Array(16), len: 64 });
  return `容器名字: ${name}\nIPv6 后缀地址: ${formatIPv6(a)}\n`;
}

/** True when `addr` lies inside `prefix`. */
export function inPrefix6(addr: Uint8Array, prefix: Prefix6): boolean {
  for (let bit = 0; bit < prefix.len; bit++) {
    const byte = bit >> 3, m = 0x80 >> (bit & 7);
    if ((addr[byte]! & m) !== (prefix.network[byte]! & m)) return false;
  }
  return true;
}
