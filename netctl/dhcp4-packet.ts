// DHCPv4 message encoding and decoding (RFC 2131 §2 layout, RFC 2132 options). Pure code, unit-tested.

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
  const options = new Map<number, Uint8Array>();
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
      const v = b.slice(p + 2, p + 2 + l);
      const prev = options.get(code);
      options.set(code, prev ? concat(prev, v) : v);
      p += 2 + l;
    }
    return true;
  };
  if (!readOpts(240, b.length)) return null;
  // option overload (52): options continue in the file (1), sname (2) or both (3) fields
  const ov = options.get(OPT.overload)?.[0] ?? 0;
  if (ov & 1) readOpts(108, 236);
  if (ov & 2) readOpts(44, 108);
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

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const r = new Uint8Array(a.length + b.length);
  r.set(a);
  r.set(b, a.length);
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

/** RFC 1035 name list as used by option 119 (RFC 3397), with compression pointers. */
export function decodeDomainList(v: Uint8Array): string[] {
  const out: string[] = [];
  let p = 0;
  while (p < v.length) {
    const labels: string[] = [];
    let q = p, jumped = false, guard = 0;
    for (;;) {
      if (q >= v.length || guard++ > 128) return out;
      const l = v[q]!;
      if (l === 0) {
        q++;
        break;
      }
      if ((l & 0xc0) === 0xc0) {
        if (q + 1 >= v.length) return out;
        if (!jumped) p = q + 2;
        jumped = true;
        q = ((l & 0x3f) << 8) | v[q + 1]!;
        continue;
      }
      labels.push(new TextDecoder().decode(v.subarray(q + 1, q + 1 + l)));
      q += 1 + l;
    }
    if (!jumped) p = q;
    out.push(labels.join("."));
  }
  return out;
}

export interface LeaseInfo {
  address: Uint8Array;
  prefixlen: number;
  serverId: Uint8Array;
  routers: Uint8Array[];
  dns: Uint8Array[];
  domain?: string;
  search: string[];
  broadcast?: Uint8Array;
  /** seconds */
  leaseTime: number;
  t1: number;
  t2: number;
}

/**
 * Extracts what a client needs from an ACK. T1/T2 default to 0.5 and 0.875 of the lease and are
 * sanitised so that 0 < T1 < T2 < lease (a bad server value must not make us renew late or never).
 */
export function leaseFromAck(m: DhcpMessage, fallbackServer?: Uint8Array): LeaseInfo {
  const lease = u32opt(m, OPT.leaseTime) ?? 3600;
  let t2 = u32opt(m, OPT.t2) ?? Math.floor(lease * 0.875);
  if (!(t2 > 0 && t2 < lease)) t2 = Math.floor(lease * 0.875);
  let t1 = u32opt(m, OPT.t1) ?? Math.floor(lease * 0.5);
  if (!(t1 > 0 && t1 < t2)) t1 = Math.floor(Math.min(lease * 0.5, t2 * 0.9));
  const mask = m.options.get(OPT.subnetMask);
  let prefixlen = 32;
  if (mask && mask.length === 4) {
    prefixlen = 0;
    for (const x of mask) for (let i = 7; i >= 0; i--) if (x & (1 << i)) prefixlen++;
  }
  const dom = m.options.get(OPT.domain);
  const search = m.options.get(OPT.searchList);
  const domain = dom ? new TextDecoder().decode(dom).replace(/\0+$/, "").trim() : undefined;
  return {
    address: m.yiaddr,
    prefixlen,
    serverId: m.options.get(OPT.serverId)?.slice(0, 4) ?? fallbackServer ?? m.siaddr,
    routers: addrList(m.options.get(OPT.router)),
    dns: addrList(m.options.get(OPT.dns)),
    ...(domain ? { domain } : {}),
    search: search ? decodeDomainList(search) : [],
    ...(m.options.get(OPT.broadcast)?.length === 4 ? { broadcast: m.options.get(OPT.broadcast)! } : {}),
    leaseTime: lease,
    t1,
    t2,
  };
}
