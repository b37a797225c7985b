// DHCPv4 message encoding and decoding (RFC 2131 §2 layout, RFC 2132 options). Pure code, unit-tested.
// Every reply is untrusted input: sizes, counts and pointer chains are bounded, names and addresses validated.
import { isDomainName, MAX_SEARCH_CHARS, MAX_SEARCH_NAMES, printable, searchList } from "./resolvconf.ts";

export const BOOTREQUEST = 1, BOOTREPLY = 2;
export const DHCPDISCOVER = 1, DHCPOFFER = 2, DHCPREQUEST = 3, DHCPDECLINE = 4, DHCPACK = 5, DHCPNAK = 6, DHCPRELEASE = 7;
export const MSG_NAMES: Record<number, string> = { 1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK", 7: "RELEASE", 8: "INFORM" };
export const OPT = {
  pad: 0,
  subnetMask: 1,
  router: 3,
  dns: 6,
  hostname: 12,
  domain: 15,
  broadcast: 28,
  requestedIp: 50,
  leaseTime: 51,
  overload: 52,
  messageType: 53,
  serverId: 54,
  paramList: 55,
  message: 56,
  maxSize: 57,
  t1: 58,
  t2: 59,
  clientId: 61,
  searchList: 119,
  end: 255,
} as const;
const MAGIC = [99, 130, 83, 99];
export const FLAG_BROADCAST = 0x8000;

export interface DhcpMessage {
  op: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: Uint8Array;
  yiaddr: Uint8Array;
  siaddr: Uint8Array;
  chaddr: Uint8Array; // hardware address, hlen bytes
  /** raw options by code; repeated options are concatenated (RFC 3396) */
  options: Map<number, Uint8Array>;
}

export interface EncodeSpec {
  type: number;
  xid: number;
  mac: Uint8Array;
  secs?: number;
  broadcast?: boolean;
  ciaddr?: Uint8Array;
  requestedIp?: Uint8Array;
  serverId?: Uint8Array;
  hostname?: string;
}

const ZERO4 = new Uint8Array(4);

/** Builds a client message (DISCOVER/REQUEST/RELEASE...). */
export function encodeMessage(s: EncodeSpec): Uint8Array {
  const opts: number[] = [OPT.messageType, 1, s.type];
  // client id = htype 1 + MAC (RFC 2132 §9.14) so a server keeps our lease across restarts of the client
  opts.push(OPT.clientId, 1 + s.mac.length, 1, ...s.mac);
  if (s.requestedIp) opts.push(OPT.requestedIp, 4, ...s.requestedIp);
  if (s.serverId) opts.push(OPT.serverId, 4, ...s.serverId);
  if (s.hostname) {
    const h = new TextEncoder().encode(s.hostname).slice(0, 63);
    opts.push(OPT.hostname, h.length, ...h);
  }
  if (s.type === DHCPDISCOVER || s.type === DHCPREQUEST) {
    opts.push(OPT.maxSize, 2, 0x05, 0xdc); // 1500
    const want = [OPT.subnetMask, OPT.router, OPT.dns, OPT.domain, OPT.broadcast, OPT.leaseTime, OPT.serverId, OPT.t1, OPT.t2, OPT.searchList];
    opts.push(OPT.paramList, want.length, ...want);
  }
  opts.push(OPT.end);
  // minimum BOOTP message is 300 bytes; some servers drop shorter ones
  const len = Math.max(240 + opts.length, 300);
  const b = new Uint8Array(len);
  const dv = new DataView(b.buffer);
  b[0] = BOOTREQUEST;
  b[1] = 1; // htype ethernet
  b[2] = s.mac.length;
  dv.setUint32(4, s.xid >>> 0);
  dv.setUint16(8, Math.min(s.secs ?? 0, 0xffff));
  dv.setUint16(10, s.broadcast ? FLAG_BROADCAST : 0);
  b.set(s.ciaddr ?? ZERO4, 12);
  b.set(s.mac, 28);
  b.set(MAGIC, 236);
  b.set(opts, 240);
  return b;
}

/** Parses a BOOTP/DHCP message; returns null when it is not a well-formed DHCP message. */
export function decodeMessage(b: Uint8Array): DhcpMessage | null {
  if (b.length < 241) return null;
  for (let i = 0; i < 4; i++) if (b[236 + i] !== MAGIC[i]) return null;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const hlen = Math.min(b[2]!, 16);
  // pieces of each option, joined once at the end: a 64 KiB reply of 1-byte fragments stays linear
  const parts = new Map<number, Uint8Array[]>();
  const readOpts = (from: number, to: number): boolean => {
    for (let p = from; p < to; ) {
      const code = b[p]!;
      if (code === OPT.pad) {
        p++;
        continue;
      }
      if (code === OPT.end) return true;
      if (p + 1 >= to) return false;
      const l = b[p + 1]!;
      if (p + 2 + l > to) return false;
      const v = b.subarray(p + 2, p + 2 + l);
      const list = parts.get(code);
      if (list) list.push(v);
      else parts.set(code, [v]);
      p += 2 + l;
    }
    return true;
  };
  if (!readOpts(240, b.length)) return null;
  // option overload (52): options continue in the file (1), sname (2) or both (3) fields
  const ov = parts.get(OPT.overload)?.[0]?.[0] ?? 0;
  if (ov & 1) readOpts(108, 236);
  if (ov & 2) readOpts(44, 108);
  const options = new Map<number, Uint8Array>();
  for (const [code, list] of parts) options.set(code, list.length === 1 ? list[0]!.slice() : concat(list));
  return {
    op: b[0]!,
    xid: dv.getUint32(4),
    secs: dv.getUint16(8),
    flags: dv.getUint16(10),
    ciaddr: b.slice(12, 16),
    yiaddr: b.slice(16, 20),
    siaddr: b.slice(20, 24),
    chaddr: b.slice(28, 28 + hlen),
    options,
  };
}

function concat(list: Uint8Array[]): Uint8Array {
  const r = new Uint8Array(list.reduce((n, x) => n + x.length, 0));
  let o = 0;
  for (const x of list) {
    r.set(x, o);
    o += x.length;
  }
  return r;
}

export const messageType = (m: DhcpMessage): number => m.options.get(OPT.messageType)?.[0] ?? 0;

const u32opt = (m: DhcpMessage, code: number): number | undefined => {
  const v = m.options.get(code);
  return v && v.length >= 4 ? new DataView(v.buffer, v.byteOffset).getUint32(0) : undefined;
};

const addrList = (v: Uint8Array | undefined): Uint8Array[] => {
  const out: Uint8Array[] = [];
  if (v) for (let i = 0; i + 4 <= v.length; i += 4) out.push(v.slice(i, i + 4));
  return out;
};

/** Bounds of option 119 decoding: names looked at, compression pointers followed per name. */
export const MAX_SEARCH_SCAN = 32;
export const MAX_POINTER_HOPS = 16;

export interface DomainList {
  /** names in order as text (bytes as latin1, so nothing is lost for the log); not validated */
  names: string[];
  /** why decoding stopped early, if it did */
  stopped?: string;
}

/**
 * RFC 1035 name list as used by option 119 (RFC 3397), with compression pointers. Untrusted: a pointer
 * must point backwards (so no loops), at most MAX_POINTER_HOPS per name, names of at most 255 wire bytes,
 * and at most MAX_SEARCH_SCAN names are read. The work is bounded by these, whatever the option's size.
 */
export function decodeDomainList(v: Uint8Array, maxNames = MAX_SEARCH_SCAN): DomainList {
  const names: string[] = [];
  let p = 0;
  while (p < v.length) {
    if (names.length >= maxNames) return { names, stopped: `more than ${maxNames} names` };
    const labels: string[] = [];
    // `seg` is where the current run of labels started: a pointer must go before it, so runs only ever
    // move backwards and a loop is impossible (a real encoder points at an earlier occurrence)
    let q = p, seg = p, jumped = false, hops = 0, wire = 0;
    for (;;) {
      if (q >= v.length) return { names, stopped: "a name runs past the end" };
      const l = v[q]!;
      if (l === 0) {
        q++;
        break;
      }
      if ((l & 0xc0) === 0xc0) {
        if (q + 1 >= v.length) return { names, stopped: "a pointer runs past the end" };
        const target = ((l & 0x3f) << 8) | v[q + 1]!;
        if (target >= seg) return { names, stopped: "a compression pointer that does not point backwards" };
        if (++hops > MAX_POINTER_HOPS) return { names, stopped: `more than ${MAX_POINTER_HOPS} compression pointers in one name` };
        if (!jumped) p = q + 2;
        jumped = true;
        q = seg = target;
        continue;
      }
      if (l & 0xc0) return { names, stopped: "an unknown label type" };
      if (q + 1 + l > v.length) return { names, stopped: "a label runs past the end" };
      wire += 1 + l;
      if (wire > 255) return { names, stopped: "a name longer than 255 bytes" };
      labels.push(latin1(v.subarray(q + 1, q + 1 + l)));
      q += 1 + l;
    }
    if (!jumped) p = q;
    names.push(labels.join("."));
  }
  return { names };
}

const latin1 = (b: Uint8Array): string => String.fromCharCode(...b);

export interface LeaseInfo {
  address: Uint8Array;
  prefixlen: number;
  /** the server's identifier (option 54, exactly 4 bytes); absent when the reply had no usable one */
  serverId?: Uint8Array;
  routers: Uint8Array[];
  dns: Uint8Array[];
  domain?: string;
  search: string[];
  broadcast?: Uint8Array;
  /** seconds; INFINITE_LEASE when infinite */
  leaseTime: number;
  infinite: boolean;
  t1: number;
  t2: number;
  /** what was dropped or changed while reading the reply, for the log (already escaped) */
  notes: string[];
}

/** RFC 2131 §3.3: 0xffffffff is an infinite lease; the client never renews it. */
export const INFINITE_LEASE = 0xffffffff;
/** Shorter leases are raised to this (a lease of 0 s would otherwise renew in a loop). */
export const MIN_LEASE = 60;
/** T1 and T2 from the server below this are replaced by the defaults (0.5 and 0.875 of the lease) */
export const MIN_RENEW = 10;

/** An address a host may put on its interface or send to as a unicast peer. */
export function isUsableUnicast(a: Uint8Array | undefined): a is Uint8Array {
  if (!a || a.length !== 4) return false;
  const x = a[0]!;
  // 0/8 "this network", 127/8 loopback, 224/4 multicast, 240/4 reserved (and 255.255.255.255)
  return x !== 0 && x !== 127 && x < 224;
}

const u32 = (a: Uint8Array) => ((a[0]! << 24) | (a[1]! << 16) | (a[2]! << 8) | a[3]!) >>> 0;

/** The prefix length of a contiguous netmask, or -1. */
export function maskToPrefix(m: Uint8Array): number {
  if (m.length !== 4) return -1;
  const v = u32(m);
  const n = Math.clz32(~v >>> 0); // leading ones of the mask
  const rebuilt = n === 0 ? 0 : (0xffffffff << (32 - n)) >>> 0;
  return rebuilt === v ? n : -1;
}

/**
 * Why this lease must not be applied, or undefined when it may. `address` says the fault is the offered
 * address itself (then the client DECLINEs it, so the server stops handing it out).
 */
export function leaseProblem(l: LeaseInfo): { why: string; address: boolean } | undefined {
  const a = formatAddr(l.address);
  const bad = (why: string, address = false) => ({ why, address });
  if (!isUsableUnicast(l.address)) return bad(`offered address ${a} is not usable (0/8, loopback, multicast or broadcast)`, true);
  if (l.prefixlen < 0) return bad("the subnet mask (option 1) is not a contiguous netmask");
  if (l.prefixlen < 8) return bad(`the subnet mask /${l.prefixlen} is wider than any real subnet`);
  if (l.prefixlen <= 30) {
    const host = u32(l.address) & (0xffffffff >>> l.prefixlen);
    if (host === 0xffffffff >>> l.prefixlen) return bad(`offered address ${a} is the broadcast address of its /${l.prefixlen}`, true);
    if (host === 0) return bad(`offered address ${a} is the network address of its /${l.prefixlen}`, true);
  }
  if (!l.serverId) return bad("no usable server identifier (option 54 must be a 4-byte unicast address)");
  return undefined;
}

const formatAddr = (b: Uint8Array) => (b.length === 4 ? [...b].join(".") : `(${b.length} bytes)`);

/**
 * Extracts what a client needs from an ACK, treating every field as untrusted. T1/T2 default to 0.5 and
 * 0.875 of the lease and are sanitised so that 0 < T1 < T2 < lease; an infinite lease has neither.
 * Domain and search names are validated for resolv.conf; what is dropped is noted for the log.
 */
export function leaseFromAck(m: DhcpMessage): LeaseInfo {
  const notes: string[] = [];
  const raw = u32opt(m, OPT.leaseTime) ?? 3600;
  const infinite = raw === INFINITE_LEASE;
  let lease = raw;
  if (!infinite && lease < MIN_LEASE) {
    notes.push(`lease time ${raw} s raised to the minimum of ${MIN_LEASE} s`);
    lease = MIN_LEASE;
  }
  let t1 = lease, t2 = lease;
  if (!infinite) {
    // a server's T1 of 1 s would make us renew every second: T1 and T2 below MIN_RENEW take the defaults
    t2 = u32opt(m, OPT.t2) ?? Math.floor(lease * 0.875);
    if (!(t2 >= MIN_RENEW && t2 < lease)) t2 = Math.floor(lease * 0.875);
    t1 = u32opt(m, OPT.t1) ?? Math.floor(lease * 0.5);
    if (!(t1 >= MIN_RENEW && t1 < t2)) t1 = Math.floor(Math.min(lease * 0.5, t2 * 0.9));
  }
  const mask = m.options.get(OPT.subnetMask);
  const prefixlen = mask ? maskToPrefix(mask) : 32;
  const sid = m.options.get(OPT.serverId);
  const routers = addrList(m.options.get(OPT.router)).filter((r) => {
    const ok = isUsableUnicast(r) && !(r.length === 4 && r.every((x, i) => x === m.yiaddr[i]));
    if (!ok) notes.push(`ignored router ${formatAddr(r)} (option 3): not a unicast address of another host`);
    return ok;
  });
  const dns = addrList(m.options.get(OPT.dns)).filter(isUsableUnicast);
  // option 15: one name
  let domain: string | undefined;
  const dom = m.options.get(OPT.domain);
  if (dom) {
    const text = latin1(dom.length > 1024 ? dom.subarray(0, 1024) : dom).replace(/\0+$/, "");
    if (isDomainName(text)) domain = text.replace(/\.$/, "");
    else notes.push(`dropped domain name (option 15) ${printable(text)}: not a valid DNS name`);
  }
  // option 119: bounded decode, then the same validation and the resolv.conf limits
  const search: string[] = [];
  const sl = m.options.get(OPT.searchList);
  if (sl) {
    const { names, stopped } = decodeDomainList(sl);
    if (stopped) notes.push(`option 119: ${stopped}: the rest is ignored`);
    let dropped = 0;
    for (const n of names) {
      const name = n.replace(/\.$/, "");
      if (!isDomainName(n)) {
        if (dropped++ < 3) notes.push(`dropped search name (option 119) ${printable(n)}: not a valid DNS name`);
        continue;
      }
      if (!search.includes(name) && name !== domain) search.push(name);
    }
    if (dropped > 3) notes.push(`dropped ${dropped - 3} more search names (option 119)`);
    const kept = searchList(domain, search);
    if (kept.length < search.length + (domain ? 1 : 0)) notes.push(`option 119: more than ${MAX_SEARCH_NAMES} names or ${MAX_SEARCH_CHARS} characters with the domain: the rest is dropped (resolv.conf limit)`);
    search.splice(0, search.length, ...kept.filter((n) => n !== domain));
  }
  const bc = m.options.get(OPT.broadcast);
  return {
    address: m.yiaddr,
    prefixlen,
    ...(sid && sid.length === 4 && isUsableUnicast(sid) ? { serverId: sid.slice() } : {}),
    routers,
    dns,
    ...(domain ? { domain } : {}),
    search,
    ...(bc?.length === 4 ? { broadcast: bc } : {}),
    leaseTime: lease,
    infinite,
    t1,
    t2,
    notes,
  };
}
